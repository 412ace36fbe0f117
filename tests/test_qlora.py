"""QLoRA on a CPU: a tiny Llama-shaped backbone loaded with 4-bit NF4 weights (bitsandbytes), a new
full-precision token-classification head, LoRA adapters; training, saving and loading."""

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from prm.models.backbones import minilm_path
from prm.models.prm import PRM, PRMSpec, apply_lora, is_quantized
from prm.schema import make_record, to_dataset
from prm.train import PRMTrainer, PRMTrainingArguments

bnb = pytest.importorskip("bitsandbytes")

PROBLEM = "Tom has 3 apples and buys 2 more. How many apples?"
STEPS = ["He starts with 3 apples.", "He buys 2, so 3 + 2 = 5.", "The answer is 5."]
ROWS = [make_record(PROBLEM, STEPS, [1, 1, 1], "binary"), make_record(PROBLEM, ["3 + 2 = 6.", "The answer is 6."], [0, 0], "binary")]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> str:
    """A causal-LM checkpoint (no classification head, as a hub backbone): loading it as a PRM
    creates the head."""
    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    # sizes are multiples of 64, bitsandbytes' quantization block
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, pad_token_id=tok.pad_token_id)
    d = tmp_path_factory.mktemp("llama_lm")
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


def _prm(path: str, four_bit: bool, lora: bool = True) -> PRM:
    torch.manual_seed(1)  # the same new head for 4-bit and full-precision loads
    prm = PRM.from_backbone(path, PRMSpec(label_scheme="binary"), load_in_4bit=four_bit)
    return apply_lora(prm, r=4, alpha=8, dropout=0.0) if lora else prm


def _trainable(prm: PRM) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in prm.model.named_parameters() if p.requires_grad}


def test_4bit_backbone_keeps_the_head_in_full_precision(backbone):
    prm = _prm(backbone, four_bit=True, lora=False)
    assert is_quantized(prm.model) and prm.spec.extra["load_in_4bit"]
    layer = prm.model.model.layers[0]
    # every linear layer of the backbone is 4-bit NF4 ...
    assert isinstance(layer.self_attn.q_proj, bnb.nn.Linear4bit) and isinstance(layer.mlp.down_proj, bnb.nn.Linear4bit)
    assert layer.self_attn.q_proj.weight.quant_state.quant_type == "nf4"
    # ... the new head is a plain fp32 Linear, not quantized
    assert type(prm.model.score) is torch.nn.Linear and prm.model.score.weight.dtype == torch.float32
    # scores differ from full precision only by the quantization error
    full = _prm(backbone, four_bit=False, lora=False).score_steps(PROBLEM, STEPS)
    q = prm.score_steps(PROBLEM, STEPS)
    assert len(q) == 3 and max(abs(a - b) for a, b in zip(q, full)) < 0.05


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux /proc/self/maps")
def test_4bit_model_holds_no_view_of_the_checkpoint_file(backbone):
    # quantizing reads the whole memory-mapped file; a full-precision tensor left as a view of it
    # would keep every page of the file resident for the model's lifetime
    prm = _prm(backbone, four_bit=True, lora=False)
    ckpt = str(Path(backbone, "model.safetensors"))
    spans = [[int(x, 16) for x in line.split()[0].split("-")] for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(ckpt)]
    tensors = [*prm.model.parameters(), *prm.model.buffers()]
    assert tensors and not [t for t in tensors if any(a <= t.data_ptr() < b for a, b in spans)]


def test_qlora_forward_backward_reaches_adapters_and_head_only(backbone):
    prm = _prm(backbone, four_bit=True)
    enc = prm.encode(PROBLEM, STEPS)
    out = prm.model(input_ids=torch.tensor([enc.input_ids])).logits  # (1, seq, 2)
    out[0, enc.score_positions, 1].sum().backward()
    grads = {n: p.grad for n, p in prm.model.named_parameters() if p.requires_grad}
    # trainable: LoRA A/B of the backbone's linear layers and the head (modules_to_save)
    assert any("lora_B" in n for n in grads) and any("score" in n for n in grads)
    assert all(g is not None for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)
    # the quantized base stays frozen
    frozen = [p for n, p in prm.model.named_parameters() if "lora_" not in n and "score" not in n]
    assert frozen and not any(p.requires_grad for p in frozen)


# gradient checkpointing (reentrant by default) must still reach the adapters of a frozen 4-bit base
@pytest.mark.parametrize("checkpointing", [False, True])
def test_qlora_training_step_changes_adapters_not_base(backbone, tmp_path, checkpointing):
    prm = _prm(backbone, four_bit=True)
    before = _trainable(prm)
    packed = prm.model.get_base_model().model.layers[0].self_attn.q_proj.weight.detach().clone()
    args = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2,
                                activation_checkpointing=checkpointing, report_to=[], disable_tqdm=True, save_strategy="no")
    PRMTrainer(prm=prm, args=args, train_dataset=to_dataset(ROWS)).train()
    after = _trainable(prm)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert any("lora_B" in n for n in changed) and any("score" in n for n in changed)
    assert torch.equal(packed, prm.model.get_base_model().model.layers[0].self_attn.q_proj.weight)


def test_qlora_adapter_saves_and_loads_with_the_same_scores(backbone, tmp_path):
    prm = _prm(backbone, four_bit=True)
    args = PRMTrainingArguments(output_dir=str(tmp_path / "ckpt"), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2,
                                report_to=[], disable_tqdm=True, save_strategy="no")
    trainer = PRMTrainer(prm=prm, args=args, train_dataset=to_dataset(ROWS))
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    want = prm.score_steps(PROBLEM, STEPS)
    # only the adapter and the head are written, not the base weights
    names = {p.name for p in (tmp_path / "final").iterdir()}
    assert "adapter_model.safetensors" in names and "model.safetensors" not in names
    loaded = PRM.load(tmp_path / "final")
    assert loaded.spec.adapter and loaded.spec.extra["load_in_4bit"] and is_quantized(loaded.model)
    assert max(abs(a - b) for a, b in zip(loaded.score_steps(PROBLEM, STEPS), want)) < 1e-6
    # the same adapter on a full-precision base: close, not identical (the 4-bit base is really used)
    full = PRM.load(tmp_path / "final", load_in_4bit=False)
    assert not is_quantized(full.model) and "load_in_4bit" not in full.spec.extra
    diff = max(abs(a - b) for a, b in zip(full.score_steps(PROBLEM, STEPS), want))
    assert 0 < diff < 0.05


def test_4bit_needs_pretrained_weights(backbone):
    # random init never goes through from_pretrained, so it could not be quantized: refuse, not ignore
    with pytest.raises(ValueError, match="load_in_4bit"):
        PRM.from_backbone(backbone, PRMSpec(), load_in_4bit=True, use_pretrained=False)
