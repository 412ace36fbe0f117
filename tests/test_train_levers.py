"""Speed levers of PRMTrainer (PRMTrainingArguments fields) on tiny real models built from configs:
each leaves losses and scores equal to the plain path (bf16 autocast over fp32 weights) within a
stated tolerance, and the fp32 masters are what the model is given back and checkpointed as."""

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForTokenClassification, AutoTokenizer, BertConfig, LlamaConfig, TrainerCallback

from prm.models.backbones import minilm_path
from prm.models.prm import PRM, PRMSpec
from prm.schema import make_record, to_dataset
from prm.train import PRMTrainer, PRMTrainingArguments
from prm.train.data import StepCollator
from prm.train.precision import MasterWeightOptimizer

# bf16 keeps 8 bits of mantissa: a loss of ~0.7 moves by up to ~0.005 per rounding; over a few
# steps of training the two paths (autocast keeps some activations fp32, bf16 weights do not) drift
# apart by a few of those, never by a learning signal
LOSS_TOL = 0.03
SCORE_TOL = 0.03


def _tiny(tmp_path_factory, kind: str) -> str:
    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    if kind == "bert":
        cfg = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, num_labels=2)
    else:
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=128, num_labels=2, pad_token_id=tok.pad_token_id)
    d = tmp_path_factory.mktemp(kind)
    AutoModelForTokenClassification.from_config(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module", params=["bert", "llama"])
def tiny(request, tmp_path_factory):
    return _tiny(tmp_path_factory, request.param)


def _data():
    recs = [make_record(f"Problem {i}: add {i} and {i + 1}.", [f"{i} + {i + 1} = {2 * i + 1 + (i % 3 == 0)}.", f"The answer is {2 * i + 1}."],
                        [int(i % 3 != 0), 1], "binary") for i in range(24)]
    return to_dataset(recs)


def _train(path: str, out, steps: int = 6, data=None, **kw) -> tuple[PRMTrainer, list[float]]:
    torch.manual_seed(0)
    prm = PRM.from_backbone(path, PRMSpec(label_scheme="binary"))
    args = PRMTrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-3, bf16=True,
                                logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, seed=0, **kw)
    t = PRMTrainer(prm=prm, args=args, train_dataset=_data() if data is None else data)
    t.train()
    return t, [h["loss"] for h in t.state.log_history if "loss" in h]


def _scores(t: PRMTrainer) -> list[float]:
    return [s for i in range(4) for s in t.prm.score_steps(f"Problem {i}: add {i} and {i + 1}.", ["x", "The answer is 1."])]


def test_bf16_master_weights_equal_autocast(tiny, tmp_path):
    # the lever's claim: same losses step by step and same scores as autocast over fp32 weights
    plain, loss_plain = _train(tiny, tmp_path / "a", bf16_master_weights=False)
    fast, loss_fast = _train(tiny, tmp_path / "b", bf16_master_weights=True)
    assert not plain.use_master_weights and fast.use_master_weights
    assert len(loss_plain) == len(loss_fast) == 6
    assert loss_fast[-1] < loss_fast[0] - 0.05  # it learned something, so equality is not two untrained models
    assert max(abs(a - b) for a, b in zip(loss_plain, loss_fast)) < LOSS_TOL
    assert max(abs(a - b) for a, b in zip(_scores(plain), _scores(fast))) < SCORE_TOL
    # given back in fp32 (from the masters, not the bf16 working copy)
    assert {p.dtype for p in fast.model.parameters()} == {torch.float32}


def test_bf16_master_weights_train_in_bf16_and_keep_fp32_buffers(tmp_path_factory, tmp_path):
    # while training: bf16 parameters, but fp32 buffers (Llama's rotary inv_freq would move every angle)
    path = _tiny(tmp_path_factory, "llama")
    seen = {}

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            seen["params"] = {p.dtype for p in model.parameters()}
            seen["buffers"] = {b.dtype for b in model.buffers() if b.is_floating_point()}

    prm = PRM.from_backbone(path, PRMSpec(label_scheme="binary"))
    args = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=8, bf16=True, report_to=[], disable_tqdm=True)
    t = PRMTrainer(prm=prm, args=args, train_dataset=_data(), callbacks=[Probe()])
    t.train()
    assert seen["params"] == {torch.bfloat16} and seen["buffers"] == {torch.float32}


def test_master_weights_keep_updates_below_bf16_resolution():
    # 10 updates of 1e-4 on a weight of 1.0 (bf16 spacing there: 2^-7): the bf16 copy cannot move,
    # the fp32 master does, and it is what the model is given back
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    opt = MasterWeightOptimizer(torch.optim.SGD(model.parameters(), lr=1e-4), model)
    for _ in range(10):
        model.weight.grad = torch.ones_like(model.weight)
        opt.step()
        opt.zero_grad()
    assert model.weight.dtype == torch.bfloat16 and model.weight.item() == 1.0
    opt.release()
    assert model.weight.dtype == torch.float32 and model.weight.item() == pytest.approx(1 - 1e-3, abs=1e-6)


def test_master_weights_reuse_gradient_buffers_and_skip_parameters_without_gradient():
    # the fp32 gradients are written into buffers allocated once (not a new tensor per step), and a
    # parameter with no gradient in a step is not moved: AdamW's weight decay would otherwise move it
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    opt = MasterWeightOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1), model)
    ref = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    ref.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(4, 3)
    buffers = None
    for step in range(3):
        for m, o, dtype in ((model, opt, torch.bfloat16), (ref, ref_opt, torch.float32)):
            m(x.to(dtype)).float().sum().backward()
            if step == 1:  # the first layer's weight gets no gradient this step
                m[0].weight.grad = None
            o.step()
            o.zero_grad()
        grads = [m.grad for _, m in opt.trained]
        if step == 1:
            assert grads[0] is None  # its master was skipped, as the fp32 optimizer skips it
        elif buffers is None:
            assert all(g is not None and g.dtype == torch.float32 for g in grads)
            buffers = grads
        else:
            assert all(g is b for g, b in zip(grads, buffers))  # the same tensors every step
    opt.release()
    for p, q in zip(model.parameters(), ref.parameters()):
        # equal to the fp32 optimizer up to the bf16 forward and backward
        assert torch.allclose(p, q, atol=2e-2)

def test_master_weights_checkpoint_is_fp32_and_resumes(tmp_path_factory, tmp_path):
    # a checkpoint written mid-training holds the fp32 masters; resuming from it continues
    path = _tiny(tmp_path_factory, "bert")
    kw = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, bf16=True, report_to=[], disable_tqdm=True, save_steps=2, learning_rate=1e-3)
    t = PRMTrainer(prm=PRM.from_backbone(path, PRMSpec(label_scheme="binary")), args=PRMTrainingArguments(max_steps=2, **kw), train_dataset=_data())
    t.train()
    ckpt = tmp_path / "checkpoint-2"
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        w = {k: f.get_tensor(k) for k in f.keys()}
    assert dtypes == {"F32"}
    final = dict(t.model.state_dict())
    assert all(torch.equal(w[k], final[k]) for k in w if k in final)  # the checkpoint is the model given back
    t2 = PRMTrainer(prm=PRM.from_backbone(path, PRMSpec(label_scheme="binary")), args=PRMTrainingArguments(max_steps=4, **kw), train_dataset=_data())
    t2.train(resume_from_checkpoint=str(ckpt))
    assert t2.state.global_step == 4 and json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4


def test_master_weights_fall_back_where_they_cannot_apply(tmp_path_factory, tmp_path):
    # bf16 gradients summed over micro-batches would lose precision: autocast is used, and said so
    path = _tiny(tmp_path_factory, "bert")
    prm = PRM.from_backbone(path, PRMSpec(label_scheme="binary"))
    args = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=1, bf16=True, gradient_accumulation_steps=2, report_to=[])
    assert not PRMTrainer(prm=prm, args=args, train_dataset=_data()).use_master_weights
    args = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=1, bf16=False, report_to=[])  # fp32: nothing to do
    assert not PRMTrainer(prm=prm, args=args, train_dataset=_data()).use_master_weights


def test_freeze_embeddings_leaves_them_untouched(tmp_path_factory, tmp_path):
    # a documented modelling choice: the input embeddings stay as loaded, everything else trains
    path = _tiny(tmp_path_factory, "bert")
    torch.manual_seed(0)
    before = PRM.from_backbone(path, PRMSpec(label_scheme="binary")).model.state_dict()
    t, losses = _train(path, tmp_path, steps=3, freeze_embeddings=True)
    after = t.model.state_dict()
    emb = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(before[emb], after[emb])
    assert not torch.equal(before["bert.encoder.layer.0.attention.self.query.weight"], after["bert.encoder.layer.0.attention.self.query.weight"])
    assert len(losses) == 3


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packing_gives_the_unpacked_loss_and_logits(tiny, attn, tmp_path):
    # rows of different lengths packed into fewer sequences: every labeled position gets the logits
    # it gets alone in its padded row (fp32), so the loss is the same
    from prm.models.prm import set_attention

    prm = PRM.from_backbone(tiny, PRMSpec(label_scheme="binary"))
    args = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], attn_implementation=attn, packing=True)
    t = PRMTrainer(prm=prm, args=args, train_dataset=_data())
    set_attention(t.model, attn)
    t.model.eval()
    rows = [t.train_dataset[i] for i in range(8)]
    for i in range(1, 8, 2):  # make room: alternate long and short rows
        rows[i] = {**rows[i], "input_ids": rows[i]["input_ids"][:5], "labels": [*rows[i]["labels"][:4], 1.0]}
    packed = t.data_collator(rows)
    plain = StepCollator(prm.tokenizer.pad_token_id)(rows)
    assert packed["input_ids"].shape[0] < plain["input_ids"].shape[0]  # it did pack
    assert (packed["labels"] != -100).sum() == (plain["labels"] != -100).sum()
    with torch.no_grad():
        lp = t.compute_loss(t.model, dict(packed))
        lu = t.compute_loss(t.model, dict(plain))
        out_p = t.compute_loss(t.model, dict(packed), return_outputs=True)[1]["logits"][packed["labels"] != -100]
        out_u = t.compute_loss(t.model, dict(plain), return_outputs=True)[1]["logits"][plain["labels"] != -100]
    assert lp.item() == pytest.approx(lu.item(), abs=1e-5)
    # same multiset of labeled logits (packing reorders rows longest first)
    assert torch.allclose(out_p.sort(0).values, out_u.sort(0).values, atol=1e-4)


def test_packing_trains_like_padding(tiny, tmp_path):
    # a few optimizer steps with and without packing (bf16 weights): equal losses within bf16 rounding
    _, plain = _train(tiny, tmp_path / "a", steps=4)
    _, packed = _train(tiny, tmp_path / "b", steps=4, packing=True)
    assert max(abs(a - b) for a, b in zip(plain, packed)) < LOSS_TOL


def _shared_data():
    # three solutions per problem: the same question and first step, then they part (and one wrong)
    recs = []
    for i in range(8):
        q = f"Problem {i}: a shop sells {i + 2} apples a day for {i + 3} days. How many apples?"
        first = f"Each day the shop sells {i + 2} apples."
        for j, (step, ok) in enumerate([(f"In {i + 3} days that is {(i + 2) * (i + 3)} apples.", 1),
                                        (f"In {i + 3} days that is {(i + 2) * (i + 3) + 1} apples.", 0),
                                        (f"So {i + 2} times {i + 3} is {(i + 2) * (i + 3)}.", 1)]):
            recs.append(make_record(q, [first, step, f"The answer is {(i + 2) * (i + 3) + (ok == 0)}."], [1, ok, ok], "binary",
                                    meta={"solution": j}))
    return to_dataset(recs)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_share_prefix_gives_the_unshared_loss_and_gradients(tmp_path_factory, attn, tmp_path):
    # a problem's rows held as one tree (shared question and first step): every token sees exactly
    # its own row, so the loss and every gradient equal those of the padded rows (fp32)
    from prm.models.prm import set_attention

    prm = PRM.from_backbone(_tiny(tmp_path_factory, "llama"), PRMSpec(label_scheme="binary"))
    args = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], attn_implementation=attn, share_prefix=True)
    t = PRMTrainer(prm=prm, args=args, train_dataset=_shared_data())
    set_attention(t.model, attn)
    rows = [t.train_dataset[i] for i in range(9)]  # three problems, three rows each
    shared = t.data_collator(rows)
    plain = StepCollator(prm.tokenizer.pad_token_id)([{k: r[k] for k in ("input_ids", "labels")} for r in rows])
    real = sum(len(r["input_ids"]) for r in rows)
    assert (shared["input_ids"] != prm.tokenizer.pad_token_id).sum() < 0.75 * real  # the prefixes are held once
    assert shared["label_count"].item() == (plain["labels"] != -100).sum().item()

    def loss_and_grads(batch):
        t.model.zero_grad()
        loss = t.compute_loss(t.model, dict(batch))
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}

    ls, gs = loss_and_grads(shared)
    lu, gu = loss_and_grads(plain)
    assert ls == pytest.approx(lu, abs=1e-5)
    assert gs.keys() == gu.keys()
    for n in gu:
        assert torch.allclose(gs[n], gu[n], atol=1e-5, rtol=1e-4), n


def test_share_prefix_batches_keep_a_problem_together_and_train(tmp_path_factory, tmp_path):
    from prm.train.data import GroupedLengthSampler

    torch.manual_seed(0)
    groups = [i // 3 for i in range(24)]
    order = list(GroupedLengthSampler([10 + i % 5 for i in range(24)], groups, batch_size=6, mega=2))
    assert sorted(order) == list(range(24))
    seen = [groups[i] for i in order]
    assert all(seen[k] == seen[k + 1] or seen[k + 1] not in seen[:k + 1] for k in range(23))  # each group contiguous

    t, losses = _train(_tiny(tmp_path_factory, "llama"), tmp_path, steps=3, data=_shared_data(), share_prefix=True)
    assert len(losses) == 3 and all(0 < x < 5 for x in losses)
    sampled = [t.train_dataset[i] for i in list(t._get_train_sampler())[:8]]  # one training batch
    batch = t.data_collator(sampled)
    assert (batch["input_ids"] != t.prm.tokenizer.pad_token_id).sum() < sum(len(r["input_ids"]) for r in sampled)  # it shared


def test_share_prefix_refuses_an_encoder(tiny, tmp_path):
    prm = PRM.from_backbone(tiny, PRMSpec(label_scheme="binary"))
    args = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], share_prefix=True)
    if prm.spec.kind == "causal":
        PRMTrainer(prm=prm, args=args, train_dataset=_data())  # accepted
    else:
        with pytest.raises(ValueError, match="share_prefix needs a causal backbone"):
            PRMTrainer(prm=prm, args=args, train_dataset=_data())


def test_share_prefix_default_is_on_only_where_it_applies(tmp_path_factory, tmp_path):
    # unset: on for a causal backbone on length-grouped batches whose rows repeat a prompt; resolved
    # per trainer (the args object is not changed, so it serves another run on other data)
    llama, bert = _tiny(tmp_path_factory, "llama"), _tiny(tmp_path_factory, "bert")
    args = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[])
    assert args.share_prefix is None

    def resolved(path, data, a=args):
        return PRMTrainer(prm=PRM.from_backbone(path, PRMSpec(label_scheme="binary")), args=a, train_dataset=data).share_prefix

    assert resolved(llama, _shared_data()) is True
    assert resolved(llama, _data()) is False  # one row per prompt: nothing to share
    assert resolved(bert, _shared_data()) is False  # an encoder's prefix sees the tail: not an error when unset
    assert args.share_prefix is None
    off = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], share_prefix=False)
    assert resolved(llama, _shared_data(), off) is False
    shuffled = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], train_sampling_strategy="random")
    assert resolved(llama, _shared_data(), shuffled) is False  # the user's sampler is kept


def _tiny_roberta(tmp_path_factory) -> str:
    from transformers import RobertaConfig

    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, num_labels=2,
                        pad_token_id=tok.pad_token_id, max_position_embeddings=600)
    d = tmp_path_factory.mktemp("roberta")
    AutoModelForTokenClassification.from_config(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.mark.parametrize("arch,attn,packing", [("bert", "eager", False), ("bert", "sdpa", False), ("bert", "sdpa", True),
                                               ("bert", "eager", True), ("roberta", "sdpa", False), ("bert-lora", "sdpa", False)])
def test_last_layer_at_labels_gives_the_full_loss_and_gradients(tmp_path_factory, tmp_path, arch, attn, packing):
    # the last layer computed at labeled positions only: the loss and every gradient equal the full
    # forward pass's (fp32, dropout off), padded or packed rows, eager or sdpa, with LoRA adapters too
    from prm.models import last_layer
    from prm.models.prm import set_attention

    path = _tiny_roberta(tmp_path_factory) if arch == "roberta" else _tiny(tmp_path_factory, "bert")
    prm = PRM.from_backbone(path, PRMSpec(label_scheme="binary"))
    if arch == "bert-lora":
        from prm.models.prm import apply_lora

        prm = apply_lora(prm, r=4, dropout=0.0)
    args = PRMTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], attn_implementation=attn, packing=packing)
    t = PRMTrainer(prm=prm, args=args, train_dataset=_data())
    set_attention(t.model, attn)
    t.model.eval()  # dropout off: the two paths draw different dropout masks
    assert last_layer.supports(t.model)
    rows = [t.train_dataset[i] for i in range(8)]
    batch = t.data_collator(rows)

    def run(on: bool):
        t.args.last_layer_at_labels = on
        t.model.zero_grad()
        loss, out = t.compute_loss(t.model, dict(batch), return_outputs=True)
        loss.backward()
        return loss.item(), out["logits"].detach(), {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}

    (la, ga_logits, ga), (lb, gb_logits, gb) = run(True), run(False)
    labeled = batch["labels"] != -100
    assert la == pytest.approx(lb, abs=1e-5)
    assert torch.allclose(ga_logits[labeled], gb_logits[labeled], atol=1e-5)
    assert (ga_logits[~labeled] == 0).all() and (gb_logits[~labeled] != 0).any()  # the lever did run: nothing computed elsewhere
    assert ga.keys() == gb.keys() and ga
    for n in gb:
        assert torch.allclose(ga[n], gb[n], atol=1e-6, rtol=1e-4), n


def test_last_layer_at_labels_applies_to_bert_layouts_only(tmp_path_factory):
    from prm.models import last_layer

    bert = PRM.from_backbone(_tiny(tmp_path_factory, "bert"), PRMSpec(label_scheme="binary"))
    llama = PRM.from_backbone(_tiny(tmp_path_factory, "llama"), PRMSpec(label_scheme="binary"))
    assert last_layer.supports(bert.model) and not last_layer.supports(llama.model)
    with pytest.raises(ValueError, match="not a BERT-layout token classifier"):
        last_layer.logits_at(llama.model, torch.ones(1, 3, dtype=torch.bool), input_ids=torch.ones(1, 3, dtype=torch.long))
    # a row with no position to read gets zeros; a batch with none runs the plain pass
    ids = torch.tensor([[101, 2000, 2001, 102], [101, 2002, 102, 0]])
    att = (ids != 0).long()
    at = torch.tensor([[False, True, False, True], [False, False, False, False]])
    bert.model.eval()
    with torch.no_grad():
        full = bert.model(input_ids=ids, attention_mask=att).logits
        part = last_layer.logits_at(bert.model, at, input_ids=ids, attention_mask=att)
        none = last_layer.logits_at(bert.model, torch.zeros_like(at), input_ids=ids, attention_mask=att)
    assert torch.allclose(part[at], full[at], atol=1e-5) and (part[~at] == 0).all()
    assert torch.equal(none, full)


def test_encoder_scores_read_the_last_layer_at_steps_only(tmp_path_factory):
    # PRM.score_batch (the one scoring path) gives the full forward pass's probabilities at the step positions
    prm = PRM.from_backbone(_tiny(tmp_path_factory, "bert"), PRMSpec(label_scheme="binary"))
    items = [("What is 2+3?", ["2 + 3 = 5.", "The answer is 5."]), ("What is 7*6?", ["7 * 6 = 42.", "So 42.", "The answer is 42."])]
    scores = prm.score_batch(items)
    encs = [prm.encode(p, s) for p, s in items]
    prm.model.eval()
    for e, got in zip(encs, scores):
        with torch.no_grad():
            probs = prm.model(input_ids=torch.tensor([e.input_ids])).logits.softmax(-1)[0, e.score_positions, 1]
        assert got == pytest.approx(probs.tolist(), abs=1e-5)
