"""The PRM core on tiny real models built from configs (with the real MiniLM tokenizer):
invariants 1, 3, 4 and 5 of DESIGN.md, the trainer, and the loss."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    LlamaConfig,
    pipeline,
)

from prm.data import load
from prm.models.backbones import minilm_path
from prm.models.encoding import IGNORE
from prm.models.prm import PRM, PRMSpec, apply_lora, step_loss
from prm.schema import make_record, to_dataset
from prm.train import PRMTrainer, PRMTrainingArguments
from prm.train.data import StepCollator, encode_dataset

PROBLEM = "Tom has 3 apples and buys 2 more. How many apples?"
STEPS = ["He starts with 3 apples.", "He buys 2, so 3 + 2 = 5.", "The answer is 5."]


def _tiny(tmp_path_factory, kind: str, num_labels: int = 2) -> str:
    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    if kind == "bert":
        cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=num_labels)
    else:
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, num_labels=num_labels, pad_token_id=tok.pad_token_id)
    model = AutoModelForTokenClassification.from_config(cfg)
    d = tmp_path_factory.mktemp(kind)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return _tiny(tmp_path_factory, "bert")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return _tiny(tmp_path_factory, "llama")


def test_single_pass_equals_per_prefix_for_causal(tiny_llama):
    # invariant 4: one forward pass scores every step exactly as scoring each prefix separately
    prm = PRM.from_backbone(tiny_llama, PRMSpec(separator="\n\n"))
    assert prm.spec.kind == "causal"
    single = prm.score_steps(PROBLEM, STEPS)
    per_prefix = [prm.score_steps(PROBLEM, STEPS[: k + 1])[-1] for k in range(len(STEPS))]
    assert max(abs(a - b) for a, b in zip(single, per_prefix)) < 1e-4
    # batching with padding changes nothing either
    batch = prm.score_batch([(PROBLEM, STEPS), ("Short?", ["x"]), (PROBLEM, STEPS[:2])], batch_size=3)
    assert max(abs(a - b) for a, b in zip(batch[0], single)) < 1e-5
    assert max(abs(a - b) for a, b in zip(batch[2], per_prefix[:2])) < 1e-4


def test_inference_uses_training_tokenization(tiny_bert):
    # invariant 1: the positions the trainer labels are the positions inference reads
    prm = PRM.from_backbone(tiny_bert, PRMSpec(separator="\n"))
    ds = to_dataset([make_record(PROBLEM, STEPS, [1, 1, 0], "binary")])
    enc, _ = encode_dataset(ds, prm.tokenizer, separator="\n")
    inf = prm.encode(PROBLEM, STEPS)
    assert enc[0]["input_ids"] == inf.input_ids
    assert [i for i, v in enumerate(enc[0]["labels"]) if v != IGNORE] == inf.score_positions


def test_soft_loss_is_soft():
    # invariant 3: a 0.25 target is trained as 0.25, not rounded to a class
    logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]], requires_grad=True)  # (batch, seq, classes)
    labels = torch.tensor([[0.25, IGNORE]])
    loss = step_loss(logits, labels, "soft")
    p = torch.sigmoid(torch.tensor(1.0))  # softmax over (0, 1) = sigmoid of the difference
    expected = -(0.25 * torch.log(p) + 0.75 * torch.log(1 - p))
    assert torch.isclose(loss, expected, atol=1e-6)
    hard = step_loss(logits, torch.tensor([[0.0, IGNORE]]), "binary")
    assert not torch.isclose(loss, hard)
    # the collator keeps float targets
    batch = StepCollator(0)([{"input_ids": [1, 2], "labels": [IGNORE, 0.25]}])
    assert batch["labels"].dtype == torch.float32 and batch["labels"][0, 1].item() == 0.25


def test_weighted_loss():
    logits = torch.randn(2, 3, 2)
    labels = torch.tensor([[IGNORE, 1.0, 0.0], [1.0, IGNORE, IGNORE]])
    w = torch.tensor([1.0, 0.0])
    # an example with weight 0 contributes nothing to the sum
    only_first = step_loss(logits[:1], labels[:1], "binary") * 2 / 3
    assert torch.isclose(step_loss(logits, labels, "binary", w), only_first, atol=1e-6)


def test_soft_training_moves_toward_target(tiny_bert, tmp_path):
    prm = PRM.from_backbone(tiny_bert, PRMSpec(label_scheme="soft"))
    recs = [make_record(f"Problem {i}?", ["step a", "step b"], [0.25, 0.25], "soft") for i in range(16)]
    args = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=60, learning_rate=3e-3, per_device_train_batch_size=8, save_strategy="no", report_to="none", disable_tqdm=True)
    PRMTrainer(prm=prm, args=args, train_dataset=to_dataset(recs)).train()
    scores = prm.score_steps("Problem 3?", ["step a", "step b"])
    assert all(abs(s - 0.25) < 0.1 for s in scores), scores


def test_save_load_standard_artifacts(tiny_bert, tmp_path):
    # invariant 5: a plain HF directory with safetensors; loads without remote code; pipeline works
    prm = PRM.from_backbone(tiny_bert, PRMSpec(label_scheme="binary", separator="\n"))
    before = prm.score_steps(PROBLEM, STEPS)
    out = tmp_path / "saved"
    prm.save(out)
    assert (out / "model.safetensors").is_file() and (out / "prm_config.json").is_file()
    plain = AutoModelForTokenClassification.from_pretrained(out)
    assert type(plain).__name__ == "BertForTokenClassification"
    pipe = pipeline("token-classification", model=str(out), device="cpu")
    assert isinstance(pipe("3 + 2 = 5"), list)
    # a fresh process reloads it and gives identical scores
    code = (
        "import json,sys; from prm.models.prm import PRM; "
        f"p=PRM.load(sys.argv[1]); print(json.dumps(p.score_steps({PROBLEM!r}, {STEPS!r})))"
    )
    res = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == before


def test_lora_adapter_roundtrip(tiny_llama, tmp_path):
    prm = apply_lora(PRM.from_backbone(tiny_llama, PRMSpec()), r=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # move the adapter and head off their initial values
        for n, p in prm.model.named_parameters():
            if "lora_B" in n or "score" in n:
                p.add_(0.05)
    before = prm.score_steps(PROBLEM, STEPS)
    prm.save(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    again = PRM.load(tmp_path / "adapter")
    assert max(abs(a - b) for a, b in zip(before, again.score_steps(PROBLEM, STEPS))) < 1e-6


def test_special_separator_token_is_added(tiny_bert):
    prm = PRM.from_backbone(tiny_bert, PRMSpec(separator="ки"))
    sep_ids = prm.tokenizer("ки", add_special_tokens=False)["input_ids"]
    assert len(sep_ids) == 1
    assert prm.model.get_input_embeddings().weight.shape[0] == len(prm.tokenizer)
    assert len(prm.score_steps(PROBLEM, STEPS)) == 3


def test_trainer_metrics_checkpoint_resume(tiny_bert, tmp_path, fixtures):
    ds = load("math_shepherd", fixtures / "math_shepherd.jsonl")
    prm = PRM.from_backbone(tiny_bert, PRMSpec(label_scheme="binary"))
    kw = dict(output_dir=str(tmp_path / "ck"), per_device_train_batch_size=1, gradient_accumulation_steps=2, learning_rate=1e-3,
              save_strategy="steps", save_steps=2, report_to="none", disable_tqdm=True, max_length=128)
    t = PRMTrainer(prm=prm, args=PRMTrainingArguments(max_steps=2, **kw), train_dataset=ds, eval_dataset=ds)
    t.train()
    m = t.evaluate()
    assert {"eval_accuracy", "eval_f1_weighted", "eval_correct_f1", "eval_incorrect_recall"} <= set(m)
    assert (tmp_path / "ck" / "checkpoint-2").is_dir()
    prm2 = PRM.from_backbone(tiny_bert, PRMSpec(label_scheme="binary"))
    t2 = PRMTrainer(prm=prm2, args=PRMTrainingArguments(max_steps=4, **kw), train_dataset=ds)
    t2.train(resume_from_checkpoint=True)
    assert t2.state.global_step == 4


def test_mismatched_scheme_and_truncation_drops_are_reported(tiny_bert, tmp_path, caplog):
    prm = PRM.from_backbone(tiny_bert, PRMSpec(label_scheme="ternary"))
    args = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to="none", max_length=24, max_prompt_length=8)
    with pytest.raises(ValueError, match="label scheme 'binary' but the PRM was built for 'ternary'"):
        PRMTrainer(prm=prm, args=args, train_dataset=to_dataset([make_record("q", ["a"], [1], "binary")]))
    long = make_record("q", ["word " * 40], [2], "ternary")
    short = make_record("q", ["a", "b " * 40], [2, 0], "ternary")
    t = PRMTrainer(prm=prm, args=args, train_dataset=to_dataset([long, short]))
    st = t.encode_stats["train"]
    # the long row is dropped whole; the short one keeps step "a" and loses its second step
    assert (st.rows, st.dropped_rows, st.truncated_steps, st.labeled_steps) == (2, 1, 1, 1)


def test_model_and_tokenizer_api_with_old_format(tiny_bert, tmp_path):
    # the old ProcessRewardTrainer style: model + tokenizer + list of {input, value, label} dicts
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert)
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    rows = [{"input": "Find 2+2.", "value": ["2+2 = 4.", "So 4."], "label": ["+", "+"]},
            {"input": "Find 3*3.", "value": ["3*3 = 6.", "So 6."], "label": ["-", "-"]}]
    args = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to="none", disable_tqdm=True)
    t = PRMTrainer(model=model, tokenizer=tok, args=args, train_dataset=rows)
    t.train()
    t.save_model(str(tmp_path / "final"))
    assert len(PRM.load(tmp_path / "final").score_steps("Find 2+2.", ["2+2 = 4.", "So 4."])) == 2


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_llama"])
def test_attention_kernel_choice_keeps_scores(backbone, request, tmp_path):
    # the trainer's attention kernel (a speed choice: auto takes eager on a CPU for short bf16 or
    # packed rows) does not change what the model computes: eager and sdpa score the same steps alike
    path = request.getfixturevalue(backbone)
    prm = PRM.from_backbone(path, PRMSpec(separator="\n"))
    assert prm.model.config._attn_implementation == "sdpa"
    sdpa = prm.score_steps(PROBLEM, STEPS)
    args = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=1, max_length=256, attn_implementation="eager", report_to=[])
    PRMTrainer(prm=prm, args=args, train_dataset=to_dataset([make_record(PROBLEM, STEPS, [1, 1, 0], "binary")]))
    assert prm.model.config._attn_implementation == "eager"
    assert max(abs(a - b) for a, b in zip(prm.score_steps(PROBLEM, STEPS), sdpa)) < 1e-5


def test_attention_kernel_auto_rule():
    # auto picks eager only on a CPU with short rows in bf16 or packed; an explicit choice always wins
    from prm.train.trainer import attention_kernel

    cases = [  # (attn_implementation, max_length, bf16, packed, expected on this CPU-only machine)
        ("auto", 512, True, False, "eager"),
        ("auto", 512, False, True, "eager"),  # packed rows: a 4-D mask, where eager was the faster
        ("auto", 512, False, False, None),  # fp32 rows one per sequence: SDPA was the faster
        ("auto", 2048, True, True, None),  # long rows: eager's attention probabilities cost too much memory
        ("auto", None, True, False, None),
        ("sdpa", 256, True, True, "sdpa"),
        ("eager", 2048, False, False, "eager"),
    ]
    for impl, max_length, bf16, packed, expected in cases:
        args = PRMTrainingArguments(output_dir="unused", attn_implementation=impl, max_length=max_length, bf16=bf16, use_cpu=bf16, report_to=[])
        assert attention_kernel(args, packed=packed) == (expected if not torch.cuda.is_available() or impl != "auto" else None), (impl, max_length, bf16, packed)
