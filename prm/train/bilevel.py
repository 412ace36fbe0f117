"""DreamPRM's bilevel training: a PRM trained on reweighted data, the weights learned on a meta set.

Inner problem (PRM parameters theta; only the trainable ones, i.e. the LoRA adapters and the head
when LoRA is used)::

    L_train(theta, w) = mean_i  w_i * l_i(theta)       l_i = mean over labeled steps of
                                                        BCE(z_s, pi_s) or (sigmoid(z_s) - pi_s)^2

where ``z_s`` is the PRM's log-odds that step s is correct, read at the step's score position by the
one encoding of `prm.models.encoding` (the same model code as inference), and ``pi_s`` the soft
step target. Outer problem (weight parameters alpha)::

    L_meta(theta'(alpha)) = mean_j  loss(sigmoid(S_j), meta_label_j)
    S_j = mean_s z_s ("mean_logodds", DreamPRM), min_s z_s ("min"), or log prod_s p_s ("prod")

with ``theta'(alpha)`` the parameters after ``unroll_steps`` virtual SGD steps on L_train. The
hypergradient dL_meta/dalpha flows through the unrolled update: ``torch.autograd.grad(...,
create_graph=True)`` for the inner gradient and ``torch.func.functional_call`` for the forward at
theta'. Nothing on that path is detached or under ``no_grad``; tests check the hypergradient
against finite differences. Each outer step then updates alpha (Adam, ``meta_lr``) and takes the
real inner steps (AdamW, ``lr``) on the same train batches with the new, detached weights.

Weights (`make_weights`): ``domain`` (one per domain: softplus, normalized to mean 1 over
domains), ``instance`` (a table over training examples, softplus, mean 1 over the table), ``net``
(a small MLP of the example's loss and domain, mean 1 over the batch), ``none`` (all 1: the
baseline, no outer step).

The loop is plain PyTorch: batches are a pure function of (seed, step), checkpoints hold the
trainable parameters, both optimizers, the weights and every RNG state, so a resumed run repeats
an uninterrupted one bit for bit. Ctrl+C (SIGINT) finishes the current step, saves and returns. A
step that raises (out of memory, a non-finite loss) is logged and skipped, up to
``max_failed_batches``; one more stops the run.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from prm.io import append_jsonl, write_jsonl
from prm.models.encoding import IGNORE
from prm.models.prm import PRM, set_attention

log = logging.getLogger(__name__)

INNER_LOSSES = ("bce", "mse")
META_LOSSES = ("mse", "bce")
AGGREGATIONS = ("mean_logodds", "min", "prod")
WEIGHTINGS = ("domain", "instance", "net", "none")


@dataclass
class BilevelConfig:
    """Options of `BilevelTrainer` (defaults follow DreamPRM where it has one)."""

    total_steps: int = field(default=2000, metadata={"help": "Outer steps (each takes unroll_steps inner steps)."})
    batch_size: int = field(default=1, metadata={"help": "Training examples per inner step."})
    meta_batch_size: int = field(default=1, metadata={"help": "Meta examples per outer step."})
    lr: float = field(default=2e-4, metadata={"help": "Inner (PRM) learning rate, AdamW."})
    meta_lr: float = field(default=1e-1, metadata={"help": "Outer (weights) learning rate, Adam."})
    unroll_lr: float | None = field(default=None, metadata={"help": "Step size of the virtual SGD unroll (default: lr)."})
    unroll_steps: int = field(default=1, metadata={"help": "Virtual inner steps the hypergradient flows through."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay of the PRM."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Clip the real inner gradient (None: off)."})
    inner_loss: str = field(default="bce", metadata={"help": "Step loss against soft targets pi: bce (on logits) or mse (on probabilities)."})
    meta_loss: str = field(default="mse", metadata={"help": "Solution loss against meta_label: mse (DreamPRM) or bce."})
    aggregation: str = field(default="mean_logodds", metadata={"help": "Solution score from step scores: mean_logodds, min, prod."})
    weighting: str = field(default="domain", metadata={"help": "domain, instance, net, or none (baseline)."})
    seed: int = field(default=42, metadata={"help": "Seeds batch order and every RNG."})
    log_every: int = field(default=10, metadata={"help": "Write a log row every N outer steps."})
    eval_every: int = field(default=0, metadata={"help": "Evaluate on the eval set every N outer steps (0: only at the end)."})
    save_every: int = field(default=100, metadata={"help": "Checkpoint every N outer steps (0: only at the end)."})
    keep_last: int = field(default=2, metadata={"help": "Checkpoints kept (older ones are deleted)."})
    max_failed_batches: int = field(default=10, metadata={"help": "Failed steps tolerated; one more stops the run."})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name, value, known in (("inner_loss", self.inner_loss, INNER_LOSSES), ("meta_loss", self.meta_loss, META_LOSSES),
                                   ("aggregation", self.aggregation, AGGREGATIONS), ("weighting", self.weighting, WEIGHTINGS)):
            if value not in known:
                raise ValueError(f"{name}: unknown value '{value}'; known: {', '.join(known)}")
        for name in ("total_steps", "batch_size", "meta_batch_size", "unroll_steps", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# --- data ------------------------------------------------------------------------------------


@dataclass
class Example:
    """One encoded solution: token ids, step targets at score positions, solution label, domain."""

    input_ids: list[int]
    labels: list[float]  # IGNORE except at labeled score positions
    score_positions: list[int]
    meta_label: float
    domain: int
    index: int
    id: str = ""


def encode_records(prm: PRM, records: Any, domains: Sequence[str] | None = None, drop_truncated: bool = False) -> tuple[list[Example], list[str], dict]:
    """Encode stepwise records (``meta.domain``, ``meta.meta_label``) with the PRM's tokenization.

    ``domains`` fixes the domain order (e.g. the training domains, for a meta set); otherwise it
    is the sorted set of domains found. ``drop_truncated`` drops rows that lose steps to
    truncation: a solution-level label (meta_label) speaks of the whole solution, and a wrong
    step cut off would leave a "wrong" label on steps that are all right. Returns (examples,
    domain names, counts)."""
    rows = list(records)
    names = list(domains) if domains is not None else sorted({(r.get("meta") or {}).get("domain") or "default" for r in rows})
    ids = {d: i for i, d in enumerate(names)}
    out, dropped, truncated = [], 0, 0
    for r in rows:
        meta = r.get("meta") or {}
        enc = prm.encode(r["prompt"], r["completions"], r["labels"])
        if enc is None or (drop_truncated and enc.n_truncated):
            dropped += 1  # no scorable step after truncation, or (drop_truncated) a partial solution
            continue
        truncated += enc.n_truncated
        domain = meta.get("domain") or "default"
        ml = meta.get("meta_label")
        out.append(Example(enc.input_ids, enc.labels, enc.score_positions, float("nan") if ml is None else float(ml),
                           ids.get(domain, -1), len(out), str(r.get("id") or "")))
    return out, names, {"rows": len(rows), "kept": len(out), "dropped": dropped, "truncated_steps": truncated}


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """The one padding (`prm.train.data.StepCollator`: input_ids/attention_mask/labels, right padded)
    plus step_mask (batch, seq), meta_label, domain, index (batch,)."""
    from prm.train.data import StepCollator

    batch = StepCollator(pad_id)([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    steps = torch.zeros(batch["input_ids"].shape, dtype=torch.bool)
    for r, e in enumerate(examples):
        steps[r, e.score_positions] = True
    return {**batch, "step_mask": steps, "meta_label": torch.tensor([e.meta_label for e in examples]),
            "domain": torch.tensor([e.domain for e in examples]), "index": torch.tensor([e.index for e in examples])}


def batch_indices(n: int, batch_size: int, seed: int, step: int, stream: int = 0) -> list[int]:
    """Indices of batch ``step``: epochs are seeded permutations (drop-last), so a batch depends
    only on (seed, stream, step) and a resumed run reads the same batches."""
    bs = min(batch_size, n)
    per_epoch = n // bs
    epoch, j = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, stream, epoch]).permutation(n)
    return perm[j * bs : (j + 1) * bs].tolist()


class _StepBatches(torch.utils.data.Dataset):
    """Item t = the collated batches of outer step t (a DataLoader can prefetch them in workers)."""

    def __init__(self, train: list[Example], meta: list[Example], cfg: BilevelConfig, pad_id: int):
        self.train, self.meta, self.cfg, self.pad_id = train, meta, cfg, pad_id

    def __len__(self) -> int:
        return self.cfg.total_steps

    def __getitem__(self, t: int) -> tuple[list[dict], dict | None]:
        c = self.cfg
        inner = [collate([self.train[i] for i in batch_indices(len(self.train), c.batch_size, c.seed, t * c.unroll_steps + u)], self.pad_id)
                 for u in range(c.unroll_steps)]
        meta = collate([self.meta[i] for i in batch_indices(len(self.meta), c.meta_batch_size, c.seed, t, stream=1)], self.pad_id) if self.meta else None
        return inner, meta


# --- losses ----------------------------------------------------------------------------------


def step_logodds(logits: torch.Tensor, positive: int = 1) -> torch.Tensor:
    """(batch, seq, classes) logits -> (batch, seq) log-odds that the step is correct."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # losses in float32; float64 stays float64 (gradient checks)
    if logits.shape[-1] == 2:
        return logits[..., positive] - logits[..., 1 - positive]
    lp = logits.log_softmax(-1)[..., positive]
    return lp - torch.log(-torch.expm1(lp.clamp(max=-1e-7)))


def example_losses(z: torch.Tensor, labels: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """(batch,) mean step loss of each example over its labeled steps (0 if it has none).
    ``bce`` is BCE on the log-odds (never on probabilities); ``mse`` is on sigmoid(z)."""
    mask = labels != IGNORE
    target = torch.where(mask, labels, torch.zeros_like(labels)).to(z.dtype)
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(z, target, reduction="none")
    elif kind == "mse":
        per = (torch.sigmoid(z) - target) ** 2
    else:
        raise ValueError(f"unknown inner loss '{kind}'; known: {', '.join(INNER_LOSSES)}")
    per = per * mask
    return per.sum(1) / mask.sum(1).clamp(min=1)


def solution_score(z: torch.Tensor, step_mask: torch.Tensor, aggregation: str = "mean_logodds") -> tuple[torch.Tensor, torch.Tensor]:
    """(log p, log(1 - p)) per solution, p = P(solution correct) from its step log-odds.

    ``mean_logodds``: p = sigmoid(mean_s z_s) (DreamPRM); ``min``: p = min_s sigmoid(z_s);
    ``prod``: p = prod_s sigmoid(z_s)."""
    m = step_mask.to(z.dtype)
    n = m.sum(1).clamp(min=1)
    if aggregation == "mean_logodds":
        s = (z * m).sum(1) / n
    elif aggregation == "min":
        s = torch.where(step_mask, z, torch.full_like(z, float("inf"))).min(1).values
    elif aggregation == "prod":
        logp = (F.logsigmoid(z) * m).sum(1)
        return logp, torch.log(-torch.expm1(logp.clamp(max=-1e-12)))
    else:
        raise ValueError(f"unknown aggregation '{aggregation}'; known: {', '.join(AGGREGATIONS)}")
    return F.logsigmoid(s), F.logsigmoid(-s)


def meta_loss(z: torch.Tensor, step_mask: torch.Tensor, y: torch.Tensor, aggregation: str = "mean_logodds", kind: str = "mse") -> torch.Tensor:
    """Mean solution-level loss against ``y`` (meta_label in [0, 1])."""
    logp, log1mp = solution_score(z, step_mask, aggregation)
    y = y.to(logp.dtype)
    if kind == "mse":
        return ((logp.exp() - y) ** 2).mean()
    if kind == "bce":
        return -(y * logp + (1 - y) * log1mp).mean()
    raise ValueError(f"unknown meta loss '{kind}'; known: {', '.join(META_LOSSES)}")


# --- weights ---------------------------------------------------------------------------------

_ONE = math.log(math.e - 1.0)  # softplus(_ONE) == 1: every weight starts at 1


class DomainWeights(nn.Module):
    def __init__(self, n_domains: int):
        super().__init__()
        self.raw = nn.Parameter(torch.full((n_domains,), _ONE))

    def table(self) -> torch.Tensor:
        w = F.softplus(self.raw)
        return w / w.mean()

    def forward(self, domain: torch.Tensor, index: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        return self.table()[domain]


class InstanceWeights(DomainWeights):
    """One weight per training example (same parametrization, indexed by example)."""

    def forward(self, domain: torch.Tensor, index: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        return self.table()[index]


class WeightNet(nn.Module):
    """Meta-Weight-Net style: weight = MLP(example loss, one-hot domain), mean 1 over the batch."""

    def __init__(self, n_domains: int, hidden: int = 32):
        super().__init__()
        self.n_domains = n_domains
        self.mlp = nn.Sequential(nn.Linear(1 + n_domains, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.constant_(self.mlp[2].bias, _ONE)

    def forward(self, domain: torch.Tensor, index: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        # The loss enters as a feature: its gradient path to theta is not part of the weight.
        x = torch.cat([losses.detach().float()[:, None], F.one_hot(domain.clamp(min=0), self.n_domains).float()], 1)
        w = F.softplus(self.mlp(x)[:, 0])
        return w / w.mean()


def make_weights(kind: str, n_domains: int, n_examples: int) -> nn.Module | None:
    if kind == "domain":
        return DomainWeights(n_domains)
    if kind == "instance":
        return InstanceWeights(n_examples)
    if kind == "net":
        return WeightNet(n_domains)
    if kind == "none":
        return None
    raise ValueError(f"unknown weighting '{kind}'; known: {', '.join(WEIGHTINGS)}")


def train_top_layers(model: nn.Module, n: int) -> int:
    """Keep trainable only the classification head and the parameters of the top ``n``
    transformer layers (``...layer.K.`` / ``...layers.K.``); returns how many stay trainable.

    On a CPU this makes the unroll cheap: the backward and the hypergradient's double backward
    stop at the lowest trainable layer, while the forward still runs the whole model."""
    import re

    layer = re.compile(r"\.layers?\.(\d+)\.")
    idx = {name: int(m.group(1)) for name, _ in model.named_parameters() if (m := layer.search(name))}
    if not idx:
        raise ValueError("train_top_layers: no numbered transformer layers in this model's parameter names")
    first = max(idx.values()) + 1 - n
    kept = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head = any(h in name for h in ("classifier", "score", "modules_to_save"))
        if not head and idx.get(name, -1) < first:
            p.requires_grad_(False)
        kept += p.numel() if p.requires_grad else 0
    return kept


# --- trainer ---------------------------------------------------------------------------------


class BilevelTrainer:
    """Bilevel (DreamPRM) training of ``prm`` on ``train`` with weights learned on ``meta``.

    ``run_dir`` receives ``log.jsonl`` (one row per ``log_every`` steps: losses and the weights,
    i.e. the weight trajectory); ``checkpoint_dir`` the checkpoints.
    """

    def __init__(self, prm: PRM, cfg: BilevelConfig, train: list[Example], meta: list[Example], domain_names: Sequence[str],
                 *, run_dir: str | Path | None = None, checkpoint_dir: str | Path | None = None, device: str | torch.device = "cpu",
                 num_workers: int = 0, callbacks: Sequence[Callable[[int, dict], None]] = ()):
        cfg.validate()
        if not train:
            raise ValueError("no training examples")
        if cfg.weighting != "none" and not meta:
            raise ValueError("reweighting needs a meta set (or use weighting='none', the baseline)")
        if meta and any(math.isnan(e.meta_label) for e in meta):
            raise ValueError("every meta example needs a meta_label")
        self.prm, self.cfg, self.train_examples, self.meta_examples = prm, cfg, train, meta
        self.domain_names = list(domain_names)
        self.device = torch.device(device)
        self.model = prm.model.to(self.device)
        _eager_attention(self.model)
        self._step_logits = _StepLogits(self.model, prm.kind)
        self.positive = prm.positive_class
        self.pad_id = prm.tokenizer.pad_token_id or 0
        self.params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.weights = make_weights(cfg.weighting, max(1, len(self.domain_names)), len(train))
        if self.weights is not None:
            self.weights.to(self.device)
        self.opt = torch.optim.AdamW(self.params.values(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.meta_opt = torch.optim.Adam(self.weights.parameters(), lr=cfg.meta_lr) if self.weights is not None else None
        self.run_dir = Path(run_dir) if run_dir else None
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.num_workers = num_workers
        self.callbacks = list(callbacks)
        self.step = 0
        self.failed = 0
        self.history: list[dict] = []
        self._stop = False

    # ----- the math
    def _z(self, batch: dict, params: dict | None = None) -> torch.Tensor:
        # the kind's step logits (the training and scoring reading of every PRM kind), at ``params``
        kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if params is None:
            logits = self._step_logits(**kw)
        else:
            logits = functional_call(self._step_logits, {f"model.{n}": p for n, p in params.items()}, args=(), kwargs=kw)
        return step_logodds(logits, self.positive)  # (batch, seq)

    def batch_weights(self, batch: dict, losses: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            return torch.ones_like(losses)
        return self.weights(batch["domain"], batch["index"], losses).to(losses.dtype)

    def train_loss(self, batch: dict, params: dict | None = None, detach_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted loss, per-example losses) of a training batch at ``params`` (default: the model's)."""
        losses = example_losses(self._z(batch, params), batch["labels"], self.cfg.inner_loss)
        w = self.batch_weights(batch, losses)
        if detach_weights:
            w = w.detach()
        return (w * losses).mean(), losses

    def unrolled_meta_loss(self, inner: Sequence[dict], meta_batch: dict, create_graph: bool = True) -> tuple[torch.Tensor, list[float]]:
        """Meta loss at theta' = theta after len(inner) virtual SGD steps on the weighted train
        loss. With create_graph (the default) the result is differentiable in the weights."""
        lr = self.cfg.unroll_lr if self.cfg.unroll_lr is not None else self.cfg.lr
        fast = dict(self.params)
        inner_losses = []
        for batch in inner:
            loss, _ = self.train_loss(batch, fast)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph, allow_unused=True)
            fast = {n: p if g is None else p - lr * g for (n, p), g in zip(fast.items(), grads)}
            inner_losses.append(loss.item())
        z = self._z(meta_batch, fast)
        return meta_loss(z, meta_batch["step_mask"], meta_batch["meta_label"], self.cfg.aggregation, self.cfg.meta_loss), inner_losses

    def hypergradient(self, inner: Sequence[dict], meta_batch: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(meta loss at theta', d meta loss / d weight parameters)."""
        loss, _ = self.unrolled_meta_loss(inner, meta_batch, create_graph=True)
        ps = list(self.weights.parameters())
        grads = torch.autograd.grad(loss, ps, allow_unused=True)
        return loss.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(ps, grads)]

    def _to(self, batch: dict) -> dict:
        return {k: v.to(self.device) for k, v in batch.items()}

    def train_step(self, inner: Sequence[dict], meta_batch: dict | None) -> dict:
        """One outer step: hypergradient -> weights update, then the real inner steps."""
        inner = [self._to(b) for b in inner]
        row: dict[str, Any] = {}
        self.model.train()
        if self.weights is not None and meta_batch is not None:
            meta_batch = self._to(meta_batch)
            mloss, grads = self.hypergradient(inner, meta_batch)
            if not torch.isfinite(mloss) or not all(torch.isfinite(g).all() for g in grads):
                raise FloatingPointError(f"non-finite meta loss or hypergradient (meta loss {mloss.item()})")
            self.meta_opt.zero_grad(set_to_none=True)
            for p, g in zip(self.weights.parameters(), grads):
                p.grad = g
            self.meta_opt.step()
            row["meta_loss"] = mloss.item()
            row["hypergrad_norm"] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))
        losses = []
        for batch in inner:
            self.opt.zero_grad(set_to_none=True)
            loss, _ = self.train_loss(batch, detach_weights=True)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss ({loss.item()})")
            loss.backward()
            if self.cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.cfg.max_grad_norm)
            self.opt.step()
            losses.append(loss.item())
        row["train_loss"] = float(np.mean(losses))
        return row

    def weight_table(self) -> dict[str, float] | None:
        """Current weights: per domain (domain weighting), or each domain's mean weight (instance/net
        weighting, over the training examples)."""
        if self.weights is None:
            return None
        with torch.no_grad():
            if isinstance(self.weights, InstanceWeights) or not isinstance(self.weights, DomainWeights):
                dom = torch.tensor([e.domain for e in self.train_examples], device=self.device)
                idx = torch.tensor([e.index for e in self.train_examples], device=self.device)
                w = self.weights(dom, idx, torch.zeros(len(self.train_examples), device=self.device))
                return {d: float(w[dom == i].mean()) for i, d in enumerate(self.domain_names) if (dom == i).any()}
            return {d: float(v) for d, v in zip(self.domain_names, self.weights.table().tolist())}

    # ----- evaluation
    def score(self, examples: Sequence[Example], batch_size: int = 16) -> list[dict]:
        """Step probabilities (the one scoring path, `PRM.score_encoded`) and the solution score of
        each example (eval mode, length-sorted batches)."""
        was_training = self.model.training
        probs = self.prm.score_encoded(examples, batch_size)
        self.model.train(was_training)
        out = []
        for e, p in zip(examples, probs):
            pt = torch.tensor(p, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)[None]  # (1, steps)
            logp, _ = solution_score(pt.log() - torch.log1p(-pt), torch.ones_like(pt, dtype=torch.bool), self.cfg.aggregation)
            out.append({"id": e.id, "meta_label": e.meta_label, "score": float(logp[0].exp()), "step_scores": list(p),
                        "labels": [e.labels[q] for q in e.score_positions]})
        return out

    def evaluate(self, examples: Sequence[Example], batch_size: int = 16) -> tuple[dict, list[dict]]:
        """Solution-level metrics (AUROC, accuracy at 0.5, meta loss) and step AUROC (`prm.eval.metrics`)."""
        from prm.eval.metrics import step_metrics

        rows = self.score(examples, batch_size)
        y = np.array([r["meta_label"] for r in rows])
        s = np.array([r["score"] for r in rows])
        sol = step_metrics(y >= 0.5, s, "binary") if rows else {}
        m: dict[str, Any] = {"n": len(rows), "auroc": sol.get("auroc"), "accuracy": sol.get("accuracy"),
                             "meta_mse": float(np.mean((s - y) ** 2)) if rows else None}
        sl = [lab >= 0.5 for r in rows for lab in r["labels"] if lab != IGNORE]
        sp = [p for r in rows for p, lab in zip(r["step_scores"], r["labels"]) if lab != IGNORE]
        m["step_auroc"] = step_metrics(sl, np.array(sp), "binary").get("auroc") if sl else None
        return m, rows

    # ----- checkpoints
    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_dir / f"checkpoint_step_{step}.pt"

    def save_checkpoint(self) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self.step, "failed": self.failed, "history": self.history, "config": asdict(self.cfg), "domains": self.domain_names,
            "params": {n: p.detach().cpu().clone() for n, p in self.params.items()},
            "opt": self.opt.state_dict(),
            "weights": self.weights.state_dict() if self.weights is not None else None,
            "meta_opt": self.meta_opt.state_dict() if self.meta_opt is not None else None,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        }
        path = self.checkpoint_path(self.step)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)  # never a half-written checkpoint under the real name
        for old in self.checkpoints()[: -self.cfg.keep_last]:
            old.unlink()
        log.info("saved %s", path)
        return path

    def checkpoints(self) -> list[Path]:
        if self.checkpoint_dir is None or not self.checkpoint_dir.is_dir():
            return []
        return sorted(self.checkpoint_dir.glob("checkpoint_step_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            found = sorted(path.glob("checkpoint_step_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
            if not found:
                raise FileNotFoundError(f"no checkpoint_step_*.pt in {path}")
            path = found[-1]
        if not path.is_file():
            raise FileNotFoundError(f"no such checkpoint: {path}")
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["domains"] != self.domain_names:
            raise ValueError(f"{path}: checkpoint domains {state['domains']} differ from the data's {self.domain_names}")
        missing = set(self.params) ^ set(state["params"])
        if missing:
            raise ValueError(f"{path}: trainable parameters differ from the model's (e.g. {sorted(missing)[:3]}); same --lora_r / model?")
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(state["params"][n])
        self.opt.load_state_dict(state["opt"])
        if self.weights is not None:
            if state["weights"] is None:
                raise ValueError(f"{path}: a baseline checkpoint cannot resume a reweighted run")
            self.weights.load_state_dict(state["weights"])
            self.meta_opt.load_state_dict(state["meta_opt"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.step, self.failed, self.history = state["step"], state["failed"], list(state["history"])
        log.info("resumed from %s at step %d", path, self.step)

    # ----- the loop
    def _log(self, row: dict) -> None:
        self.history.append(row)
        if self.run_dir is not None:
            append_jsonl(self.run_dir / "log.jsonl", row)
        for cb in self.callbacks:
            cb(self.step, row)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._stop:  # a second Ctrl+C stops at once
            raise KeyboardInterrupt
        log.warning("interrupt: finishing step %d, saving a checkpoint, then stopping (Ctrl+C again to abort)", self.step + 1)
        self._stop = True

    def train(self, resume_from: str | Path | None = None, eval_examples: Sequence[Example] | None = None) -> dict:
        """Run to ``total_steps`` (or Ctrl+C). Returns {"status", "step", "failed", "history"}."""
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        if self.run_dir is not None:  # the log restarts from the checkpoint's history
            write_jsonl(self.run_dir / "log.jsonl", self.history)
        cfg = self.cfg
        batches = _StepBatches(self.train_examples, self.meta_examples if self.weights is not None else [], cfg, self.pad_id)
        loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(self.step, cfg.total_steps), num_workers=self.num_workers,
                                             generator=torch.Generator().manual_seed(cfg.seed))  # its own seed draw must not consume the global RNG
        old = signal.signal(signal.SIGINT, self._on_sigint) if _main_thread() else None
        status, t0, saved = "completed", time.time(), False
        try:
            for inner, meta_batch in loader:
                try:
                    row = self.train_step(inner, meta_batch)
                except (RuntimeError, ValueError, FloatingPointError) as e:
                    self.opt.zero_grad(set_to_none=True)
                    self.failed += 1
                    log.error("step %d failed (%d so far): %s", self.step + 1, self.failed, e)
                    self._log({"step": self.step + 1, "error": f"{type(e).__name__}: {e}"[:500]})
                    if self.failed > cfg.max_failed_batches:
                        self.step += 1
                        self.save_checkpoint()
                        raise RuntimeError(f"stopping: {self.failed} failed steps (limit max_failed_batches={cfg.max_failed_batches}); last: {e}") from e
                    row = None
                self.step += 1
                if row is not None and (self.step % cfg.log_every == 0 or self.step == cfg.total_steps or self.step == 1):
                    row = {"step": self.step, **row, "weights": self.weight_table(), "elapsed_s": round(time.time() - t0, 2)}
                    if eval_examples and cfg.eval_every and self.step % cfg.eval_every == 0:
                        row["eval"] = self.evaluate(eval_examples)[0]
                    self._log(row)
                saved = bool(cfg.save_every and self.step % cfg.save_every == 0)
                if saved:
                    self.save_checkpoint()
                if self._stop:
                    status = "interrupted"
                    break
            if not saved:
                self.save_checkpoint()
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        return {"status": status, "step": self.step, "failed": self.failed, "history": self.history}


class _StepLogits(nn.Module):
    """The PRM kind's step logits as a module, so `functional_call` can run them at other parameters."""

    def __init__(self, model: nn.Module, kind: Any):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, **inputs: Any) -> torch.Tensor:
        return self.kind.step_logits(self.model, **inputs)  # (batch, seq, classes)


def _eager_attention(model: Any) -> None:
    """The hypergradient differentiates through a backward pass; fused attention kernels (SDPA's
    flash path, flash-attention) have no double backward, eager attention has."""
    old = set_attention(model, "eager")
    if old not in (None, "eager"):
        log.info("attention: %s -> eager (double backward for the hypergradient)", old)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
