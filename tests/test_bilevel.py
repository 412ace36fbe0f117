"""The bilevel (DreamPRM) trainer on tiny real models built from configs (real MiniLM tokenizer).

Each test is one a known-wrong implementation fails: an outer loop under no_grad or with a
detached unroll (hypergradient zero, finite differences not), step probabilities detached from
the graph, BCE-with-logits applied to probabilities, a resume that is not bit-exact."""

import math
import random
import signal

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForTokenClassification, AutoTokenizer, BertConfig

from prm.models.backbones import minilm_path
from prm.models.encoding import IGNORE
from prm.models.prm import PRM, PRMSpec, apply_lora, step_loss
from prm.schema import make_record
from prm.train.bilevel import (
    BilevelConfig,
    BilevelTrainer,
    InstanceWeights,
    collate,
    encode_records,
    example_losses,
    meta_loss,
    solution_score,
    train_top_layers,
)

WORDS = {1: ["right", "good", "true", "valid"], 0: ["wrong", "bad", "false", "invalid"]}


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(minilm_path())


def tiny_prm(tok, dropout: float = 0.0, dtype=torch.float32, seed: int = 0) -> PRM:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=2,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    model = AutoModelForTokenClassification.from_config(cfg).to(dtype)
    return PRM(model, tok, PRMSpec(label_scheme="soft", separator="\n"))


def word_task(n_clean: int, n_noisy: int, n_meta: int, seed: int = 0):
    """Two-step solutions whose steps say a right/wrong word; the clean domain's step labels follow
    the words, the noisy domain's are coin flips; the meta set is clean (meta_label: all steps right)."""
    rng = random.Random(seed)

    def rec(domain: str, noisy: bool) -> dict:
        ok = [rng.random() < 0.5 for _ in range(2)]
        steps = [f"step {i} is {rng.choice(WORDS[int(o)])}" for i, o in enumerate(ok)]
        labels = [float(rng.random() < 0.5) if noisy else float(o) for o in ok]
        return make_record("check each step", steps, labels, "soft", meta={"domain": domain, "meta_label": float(all(ok))})

    return [rec("clean", False) for _ in range(n_clean)] + [rec("noisy", True) for _ in range(n_noisy)], [rec("meta", False) for _ in range(n_meta)]


def make_trainer(prm, train, meta, tmp_path=None, **kw) -> BilevelTrainer:
    tr, names, _ = encode_records(prm, train)
    me, _, _ = encode_records(prm, meta, names)
    cfg = BilevelConfig(**{"total_steps": 4, "batch_size": 4, "meta_batch_size": 4, "lr": 1e-2, "meta_lr": 0.1, "aggregation": "min",
                           "log_every": 1, "save_every": 0, **kw})
    return BilevelTrainer(prm, cfg, tr, me, names, run_dir=tmp_path, checkpoint_dir=tmp_path and tmp_path / "ckpt")


# --- losses -------------------------------------------------------------------------------------


def test_inner_losses_are_on_logits_and_match_the_prm_core():
    z = torch.tensor([[0.0, 2.0, -1.0, 0.5]], dtype=torch.float64)
    t = torch.tensor([[IGNORE, 0.7, 0.2, IGNORE]], dtype=torch.float64)
    p = torch.sigmoid(z[0, 1:3])
    bce = -(t[0, 1:3] * p.log() + (1 - t[0, 1:3]) * (1 - p).log()).mean()
    # BCE on the log-odds; "BCE with logits on probabilities" would give another number
    assert torch.isclose(example_losses(z, t, "bce")[0], bce)
    assert not torch.isclose(F.binary_cross_entropy_with_logits(torch.sigmoid(z[0, 1:3]), t[0, 1:3]), bce)
    assert torch.isclose(example_losses(z, t, "mse")[0], ((p - t[0, 1:3]) ** 2).mean())
    # the same number as the PRM core's soft loss on 2-class logits (log-odds = l1 - l0)
    logits = torch.stack([torch.zeros_like(z), z], -1)
    assert torch.isclose(example_losses(z, t, "bce")[0], step_loss(logits, t, "soft").double())


@pytest.mark.parametrize("aggregation, expect_p", [
    ("mean_logodds", lambda z: torch.sigmoid(z.mean())),  # DreamPRM
    ("min", lambda z: torch.sigmoid(z).min()),
    ("prod", lambda z: torch.sigmoid(z).prod()),
])
def test_meta_loss_per_aggregation(aggregation, expect_p):
    z = torch.tensor([[1.0, -0.5, 2.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])  # the last position is not a step
    p = expect_p(z[0, :3])
    logp, log1mp = solution_score(z, mask, aggregation)
    assert torch.isclose(logp.exp()[0], p) and torch.isclose(log1mp.exp()[0], 1 - p)
    y = torch.tensor([1.0])
    assert torch.isclose(meta_loss(z, mask, y, aggregation, "mse"), (p - 1) ** 2)
    assert torch.isclose(meta_loss(z, mask, y, aggregation, "bce"), -p.log())


# --- the hypergradient ----------------------------------------------------------------------------


def finite_difference(trainer: BilevelTrainer, inner, meta_batch, eps: float = 1e-5) -> torch.Tensor:
    """Central differences of the unrolled meta loss in each weight parameter (float64)."""
    (raw,) = list(trainer.weights.parameters())
    out = torch.zeros_like(raw)
    for i in range(raw.numel()):
        vals = []
        for sign in (1, -1):
            with torch.no_grad():
                raw.view(-1)[i] += sign * eps
            vals.append(trainer.unrolled_meta_loss(inner, meta_batch, create_graph=False)[0].item())
            with torch.no_grad():
                raw.view(-1)[i] -= sign * eps
        out.view(-1)[i] = (vals[0] - vals[1]) / (2 * eps)
    return out


def batches(trainer: BilevelTrainer, k: int):
    ds_inner = [collate(trainer.train_examples[4 * u : 4 * u + 4], trainer.pad_id) for u in range(k)]
    return ds_inner, collate(trainer.meta_examples[:6], trainer.pad_id)


@pytest.mark.parametrize("weighting, unroll", [
    ("domain", 1),    # DreamPRM's per-domain weights, one-step unroll
    ("domain", 2),    # gradient through two virtual steps
    pytest.param("instance", 1, marks=pytest.mark.slow),  # a weight per training example
])
def test_hypergradient_matches_finite_differences(tok, weighting, unroll):
    train, meta = word_task(4, 4, 6)
    # interleave domains so that every batch holds both
    train = [r for pair in zip(train[:4], train[4:]) for r in pair]
    t = make_trainer(tiny_prm(tok, dtype=torch.float64), train, meta, weighting=weighting, unroll_steps=unroll, lr=0.5, aggregation="mean_logodds")
    t.weights.double()
    with torch.no_grad():  # away from the symmetric start, so every coordinate matters
        t.weights.raw.copy_(torch.linspace(0.2, 1.5, t.weights.raw.numel(), dtype=torch.float64))
    t.model.eval()
    inner, mb = batches(t, unroll)
    _, (g,) = t.hypergradient(inner, mb)
    fd = finite_difference(t, inner, mb)
    assert fd.abs().max() > 1e-6, "the task must give a measurable hypergradient"
    assert torch.allclose(g, fd, rtol=1e-4, atol=1e-9), (g, fd)


def test_wrong_hypergradients_fail_the_check(tok):
    train, meta = word_task(4, 4, 6)
    train = [r for pair in zip(train[:4], train[4:]) for r in pair]
    t = make_trainer(tiny_prm(tok, dtype=torch.float64), train, meta, lr=0.5, aggregation="mean_logodds")
    t.weights.double()
    t.model.eval()
    inner, mb = batches(t, 1)
    fd = finite_difference(t, inner, mb)
    assert fd.abs().max() > 1e-6
    # an unroll without create_graph (or an outer loop under no_grad) loses the path to the weights
    loss, _ = t.unrolled_meta_loss(inner, mb, create_graph=False)
    assert torch.autograd.grad(loss, [t.weights.raw], allow_unused=True)[0] is None
    # detached step probabilities: the meta loss has no gradient at all
    z = t._z(mb).detach()
    assert not meta_loss(z, mb["step_mask"], mb["meta_label"]).requires_grad


@pytest.mark.slow
def test_noisy_domain_is_downweighted(tok):
    """Clean meta set, one domain with coin-flip labels: its weight falls below the clean one's
    within a fixed number of steps (a no-op outer loop leaves both at 1)."""
    train, meta = word_task(32, 32, 32)
    t = make_trainer(tiny_prm(tok), train, meta, total_steps=15, batch_size=8, meta_batch_size=8, lr=3e-3, meta_lr=0.1, log_every=5)
    t.train()
    w = t.weight_table()
    assert w["noisy"] < 0.9 < 1.1 < w["clean"], w


def test_lora_unroll_holds_only_adapters(tok):
    prm = apply_lora(tiny_prm(tok), r=4, alpha=8, dropout=0.0, target_modules="query,value")
    train, meta = word_task(8, 8, 6)
    t = make_trainer(prm, train, meta, total_steps=2)
    names = list(t.params)
    assert names and all("lora_" in n or "modules_to_save" in n for n in names), names
    base = {n: p.detach().clone() for n, p in t.model.named_parameters() if not p.requires_grad}
    inner, mb = batches(t, 1)
    _, (g,) = t.hypergradient(inner, mb)
    assert g.abs().sum() > 0
    t.train()
    assert all(torch.equal(p, base[n]) for n, p in t.model.named_parameters() if not p.requires_grad)


# --- the loop: resume, interrupt, failures ---------------------------------------------------


def _losses(history):
    return [(r["step"], r.get("train_loss"), r.get("meta_loss"), r.get("weights")) for r in history]


@pytest.mark.parametrize("weighting", ["domain", "none"])
def test_resume_is_bit_exact(tok, tmp_path, weighting):
    train, meta = word_task(12, 12, 8)
    # dropout on: the RNG state must be restored too
    straight = make_trainer(tiny_prm(tok, dropout=0.1), train, meta, tmp_path / "a", total_steps=6, weighting=weighting).train()
    first = make_trainer(tiny_prm(tok, dropout=0.1), train, meta, tmp_path / "b", total_steps=3, weighting=weighting)
    first.train()
    second = make_trainer(tiny_prm(tok, dropout=0.1, seed=123), train, meta, tmp_path / "b", total_steps=6, weighting=weighting)
    resumed = second.train(resume_from=tmp_path / "b" / "ckpt")
    assert _losses(resumed["history"]) == _losses(straight["history"])
    assert len(_losses(straight["history"])) == 6
    a = dict(make_trainer(tiny_prm(tok), train, meta, total_steps=6).model.named_parameters())  # a fresh model differs
    assert any(not torch.equal(p, a[n]) for n, p in second.model.named_parameters())


def test_keep_last_checkpoints(tok, tmp_path):
    train, meta = word_task(8, 8, 4)
    t = make_trainer(tiny_prm(tok), train, meta, tmp_path, total_steps=5, save_every=1, keep_last=2)
    t.train()
    assert [p.name for p in t.checkpoints()] == ["checkpoint_step_4.pt", "checkpoint_step_5.pt"]


def test_ctrl_c_saves_and_stops(tok, tmp_path):
    train, meta = word_task(8, 8, 4)
    t = make_trainer(tiny_prm(tok), train, meta, tmp_path, total_steps=50, save_every=0)
    t.callbacks.append(lambda step, row: signal.raise_signal(signal.SIGINT) if step == 2 else None)
    out = t.train()
    assert out["status"] == "interrupted" and out["step"] == 2
    assert [p.name for p in t.checkpoints()] == ["checkpoint_step_2.pt"]


def test_failed_batches_are_skipped_then_stop(tok, tmp_path):
    train, meta = word_task(4, 4, 4)
    train[0]["labels"][0] = float("nan")  # a corrupt row: every batch holding it fails
    t = make_trainer(tiny_prm(tok), train, meta, tmp_path, total_steps=8, batch_size=1, max_failed_batches=5)
    out = t.train()
    errors = [r for r in out["history"] if "error" in r]
    assert out["status"] == "completed" and out["failed"] == len(errors) >= 1
    assert all("non-finite" in r["error"] for r in errors)
    t2 = make_trainer(tiny_prm(tok), train, meta, tmp_path / "b", total_steps=8, batch_size=8, max_failed_batches=2)
    with pytest.raises(RuntimeError, match="stopping: 3 failed steps"):
        t2.train()
    assert t2.checkpoints()  # state saved before stopping


def test_instance_weights_table_is_mean_one():
    w = InstanceWeights(5)
    with torch.no_grad():
        w.raw.copy_(torch.tensor([0.1, 1.0, 2.0, -1.0, 0.5]))
    assert math.isclose(float(w.table().detach().mean()), 1.0, rel_tol=1e-6)


def test_train_top_layers_keeps_head_and_top_layer(tok):
    prm = tiny_prm(tok)
    train_top_layers(prm.model, 1)
    trainable = [n for n, p in prm.model.named_parameters() if p.requires_grad]
    assert trainable and all(".layer.1." in n or n.startswith("classifier") for n in trainable), trainable
    assert any(n.startswith("classifier") for n in trainable)


def test_scores_and_metrics_come_from_the_one_path(tok):
    # the bilevel trainer's scores are PRM.score_batch's, its solution score the aggregate of its
    # step log-odds, its metrics prm.eval's
    import numpy as np

    from prm.eval.metrics import step_metrics

    prm = tiny_prm(tok)
    train, meta = word_task(6, 0, 6)
    trainer = make_trainer(prm, train, meta, aggregation="mean_logodds")
    rows = trainer.score(trainer.meta_examples, batch_size=4)
    want = prm.score_batch([(r["prompt"], r["completions"]) for r in meta])
    assert max(abs(a - b) for r, w in zip(rows, want) for a, b in zip(r["step_scores"], w)) < 1e-6
    for r, w in zip(rows, want):
        z = np.log(w) - np.log1p(-np.asarray(w))
        assert abs(r["score"] - 1 / (1 + math.exp(-z.mean()))) < 1e-5
    m, _ = trainer.evaluate(trainer.meta_examples)
    y = [e.meta_label for e in trainer.meta_examples]
    assert m["auroc"] == step_metrics(y, np.array([r["score"] for r in rows]), "binary")["auroc"]
