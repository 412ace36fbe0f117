"""The BMUq PRM module's API (a compatibility layer) on PRM lab's one PRM interface.

    from prm.bert_prm import BertPRMConfig, PRMTrainer
    trainer = PRMTrainer(BertPRMConfig(model_name_or_path="minilm", featurizer_type="embeddings"))
    data = trainer.load_prm800k_dataset()                    # {"train": ..., "test": ...} from the hub
    train, test = trainer.prepare_dataset(data["train"]), trainer.prepare_dataset(data["test"])
    trainer.train(train, test); trainer.evaluate(test)       # accuracy, weighted/per-class P/R/F1
    trainer.predict(["2 + 2 = 5"]); trainer.save_model("out"); PRMTrainer.from_saved("out")

Every step gets one of ``num_labels`` classes (3: negative/neutral/positive as PRM800K rates steps;
2: incorrect/correct), named by a label map. The featurizers are PRM kinds (`prm.models.kinds`):
``tokens`` + ``token_mode=step`` is ``step_cls`` (one sequence-classification example per step),
``tokens`` + ``token_mode=single_pass`` is ``token_cls`` (every step at its separator in one pass),
``embeddings`` is ``step_embeddings`` (sentence vectors as ``inputs_embeds``); ``context`` is the
kind's layout. This module only maps names and options: the model is a `prm.models.prm.PRM`, trained
by `prm.train.PRMTrainer`, scored by `PRM.score_batch`, measured by `prm.eval.metrics`, and saved as
any PRM (``prm_config.json``, this config under ``extra.bmuq``). Directories written by the old
module (``bert_prm.json``, no ``prm_config.json``) still load.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from prm.data.label_maps import (  # noqa: F401 - the BMUq module's label maps
    ALIASES,
    DEFAULT_LABEL_MAPS,
    LabelError,
    label_id,
    parse_label_map,
    prepare_records,
)
from prm.data.prm800k import PRM800K_HUB, load_prm800k  # noqa: F401 - the BMUq module's loader
from prm.models.prm import PRM, PRM_CONFIG, PRMSpec, load_prm
from prm.models.step_kinds import EmbeddingCache, SentenceEmbedder  # noqa: F401 - re-exported
from prm.schema import BINARY_NAMES, TERNARY_NAMES

FEATURIZERS = ("tokens", "embeddings")
TOKEN_MODES = ("step", "single_pass")
CONTEXTS = ("problem+previous+step", "step")
LEGACY_CONFIG = "bert_prm.json"  # what the old module saved (read, never written)
PREPARED_COLUMNS = {"prompt", "completions", "labels", "id", "label_scheme"}


@dataclass
class BertPRMOptions:
    """The old PRMTrainingConfig's fields (same meaning), except the backbone (`BertPRMConfig`)."""

    featurizer_type: str = field(default="tokens", metadata={"help": "tokens (backbone tokenizer) or embeddings (sentence-transformers vectors as inputs_embeds)."})
    token_mode: str = field(default="step", metadata={"help": "For tokens: step (one classification per step) or single_pass (the core's token-level PRM)."})
    featurizer_model: str = field(default="minilm", metadata={"help": "Sentence-transformers model for embeddings: hub id, local path, or 'minilm'."})
    num_labels: int = field(default=3, metadata={"help": "3 (negative/neutral/positive) or 2 (incorrect/correct)."})
    label_map: str | None = field(default=None, metadata={"help": "Label names to class ids, JSON or 'name=id,...' (e.g. correct=0,unclear=1,incorrect=2); default by num_labels."})
    context: str = field(default="problem+previous+step", metadata={"help": "What each step is classified with: step, or problem+previous+step."})
    output_dir: str = field(default="prm_output", metadata={"help": "Checkpoints and the final model."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Training epochs."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Training batch size."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Evaluation batch size."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    logging_steps: int = field(default=50, metadata={"help": "Log every N optimizer steps."})
    eval_steps: int | None = field(default=None, metadata={"help": "Evaluate every N steps when eval data is given (None: at the end only)."})
    save_steps: int | None = field(default=None, metadata={"help": "Checkpoint every N steps (None: no intermediate checkpoints)."})
    max_length: int = field(default=256, metadata={"help": "Max tokens per example (tokens) or max step positions per solution (embeddings)."})
    fp16: bool = field(default=False, metadata={"help": "fp16 mixed precision (GPU)."})
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision (GPU, or CPU autocast)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data-loading worker processes."})
    seed: int = field(default=42, metadata={"help": "Seed for initialization, shuffling and splits."})
    embedding_batch_size: int = field(default=64, metadata={"help": "Texts per sentence-encoder call (embeddings)."})
    embedding_cache: bool = field(default=True, metadata={"help": "Cache step embeddings on disk ($PRM_CACHE_DIR or ~/.cache/prm-lab)."})
    encoder_layers: int | None = field(default=None, metadata={"help": "embeddings: keep only the first N layers of the encoder (None: all)."})

    def __post_init__(self) -> None:
        for name, value, allowed in (("featurizer_type", self.featurizer_type, FEATURIZERS), ("token_mode", self.token_mode, TOKEN_MODES), ("context", self.context, CONTEXTS)):
            if value not in allowed:
                raise ValueError(f"{name} '{value}' unknown; known: {', '.join(allowed)}")
        if self.num_labels not in DEFAULT_LABEL_MAPS:
            raise LabelError(f"num_labels must be 2 or 3, got {self.num_labels}")
        if self.featurizer_type == "tokens" and self.token_mode == "single_pass" and self.context != "problem+previous+step":
            raise ValueError("token_mode single_pass scores all steps of a solution together: use context problem+previous+step")
        self.label_map = json.dumps(parse_label_map(self.label_map, self.num_labels))

    @property
    def labels(self) -> dict[str, int]:
        return json.loads(self.label_map)

    @property
    def names(self) -> list[str]:
        """Class names in id order."""
        return [n for n, _ in sorted(self.labels.items(), key=lambda kv: kv[1])]

    @property
    def prm_kind(self) -> str:
        return "step_embeddings" if self.featurizer_type == "embeddings" else "token_cls" if self.token_mode == "single_pass" else "step_cls"


@dataclass
class BertPRMConfig(BertPRMOptions):
    """Everything a BERT-style PRM run needs (the old PRMTrainingConfig)."""

    model_name_or_path: str = field(default="minilm", metadata={"help": "Backbone / encoder: hub id, local path, or embedded 'minilm'."})
    use_pretrained: bool = field(default=True, metadata={"help": "Load pretrained weights (else random init from the same config)."})


# --- the trainer -------------------------------------------------------------------------------


class PRMTrainer:
    """The BMUq PRM module's API: ``PRMTrainer(config)``, `load_prm800k_dataset`, `prepare_dataset`,
    `train`, `evaluate`, `predict`, `save_model`, `load_model`, over a `prm.models.prm.PRM`.

    Not to be confused with `prm.train.PRMTrainer` (the one trainer, which `train` runs)."""

    def __init__(self, config: BertPRMConfig | None = None, **overrides: Any):
        from transformers import set_seed

        self.config = config or BertPRMConfig(**overrides)
        set_seed(self.config.seed)  # before any head is initialized
        self._reset()
        self.prm = PRM.from_backbone(self.config.model_name_or_path, self._spec(), use_pretrained=self.config.use_pretrained)
        self.prm.model.config.id2label, self.prm.model.config.label2id = dict(enumerate(self.names)), dict(self.label_map)

    def _reset(self) -> None:
        self.label_map, self.names = self.config.labels, self.config.names
        self.epoch_seconds: list[float] = []
        self.log_history: list[dict] = []
        self.train_majority: int | None = None
        self.last_predictions: list[dict] = []

    @property
    def _scheme(self) -> str:
        return "ternary" if self.config.num_labels == 3 else "binary"

    def _spec(self) -> PRMSpec:
        cfg = self.config
        hits = [self.label_map[a] for a in ALIASES["positive"] if a in self.label_map]
        extra: dict[str, Any] = {"positive_class": hits[0] if len(hits) == 1 else None}
        if cfg.prm_kind == "step_embeddings":  # max_length counts positions (problem + steps) here
            extra.update(featurizer_model=cfg.featurizer_model, embedding_cache=cfg.embedding_cache, embedding_batch_size=cfg.embedding_batch_size,
                         encoder_layers=cfg.encoder_layers, max_positions=cfg.max_length)
        tokens = None if cfg.prm_kind == "step_embeddings" else cfg.max_length
        return PRMSpec(label_scheme=self._scheme, prm_kind=cfg.prm_kind, layout="" if cfg.prm_kind == "token_cls" else cfg.context,
                       max_length=tokens, max_prompt_length=tokens and tokens // 2, extra=extra)

    # the model's parts, as the old module exposed them
    model = property(lambda self: self.prm.model)
    tokenizer = property(lambda self: self.prm.tokenizer)
    embedder = property(lambda self: self.prm.kind.embedder if self.config.prm_kind == "step_embeddings" else None)

    # data ---------------------------------------------------------------------------------------
    def load_prm800k_dataset(self, split: str | None = None, streaming: bool = False, source: str | None = None,
                             phases: Sequence[int] = (1, 2), **options: Any) -> dict[str, Any]:
        """PRM800K as stepwise records, ``{split: dataset}`` (see `prm.data.prm800k.load_prm800k`)."""
        options.setdefault("label_scheme", self._scheme)
        return load_prm800k(split=split, streaming=streaming, source=source, phases=phases, **options)

    def prepare_dataset(self, ds: Any, label_map: dict[str, int] | str | None = None) -> datasets.Dataset:
        """Rows with labels -> rows with class ids of this model (see `prepare_records`).
        ``label_map`` overrides the config's names for this data; its ids must match the model's."""
        lm = parse_label_map(label_map, self.config.num_labels) if label_map is not None else self.label_map
        return prepare_records(ds, lm, self.config.num_labels)

    def _ready(self, ds: Any) -> datasets.Dataset:
        prepared = isinstance(ds, datasets.Dataset) and set(ds.column_names) == PREPARED_COLUMNS and ds.num_rows and ds[0]["label_scheme"] == self._scheme
        return ds if prepared else self.prepare_dataset(ds)

    # training and evaluation ----------------------------------------------------------------------
    def train(self, train: Any, eval: Any = None) -> dict:
        """Train with `prm.train.PRMTrainer`; returns the last log entry. The final model is saved to
        ``<output_dir>/final_model``."""
        from transformers import TrainerCallback

        from prm.train import PRMTrainer as CorePRMTrainer
        from prm.train import PRMTrainingArguments

        cfg, spec = self.config, self.prm.spec
        train = self._ready(train)
        eval_ds = self._ready(eval) if eval is not None else None
        labs = [int(v) for ls in train["labels"] for v in ls if v is not None]
        if not labs:
            raise ValueError("train: no labeled step")
        self.train_majority = int(np.bincount(labs, minlength=cfg.num_labels).argmax())
        self._steps_per_solution = float(np.mean([len(c) for c in train["completions"]]))
        seconds, t0 = self.epoch_seconds, [0.0]

        class EpochTimer(TrainerCallback):  # the embedding cache shows as a faster second epoch
            def on_epoch_begin(self, *a: Any, **k: Any) -> None:
                t0[0] = time.perf_counter()

            def on_epoch_end(self, *a: Any, **k: Any) -> None:
                seconds.append(round(time.perf_counter() - t0[0], 2))

        args = PRMTrainingArguments(
            output_dir=cfg.output_dir, num_train_epochs=cfg.num_train_epochs, per_device_train_batch_size=self._batch(cfg.per_device_train_batch_size),
            per_device_eval_batch_size=self._batch(cfg.per_device_eval_batch_size), learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup_steps, logging_steps=cfg.logging_steps, fp16=cfg.fp16, bf16=cfg.bf16,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps, dataloader_num_workers=cfg.dataloader_num_workers, seed=cfg.seed,
            eval_strategy="steps" if eval_ds is not None and cfg.eval_steps else "no", eval_steps=cfg.eval_steps,
            save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500, report_to="none",
            max_length=spec.max_length, max_prompt_length=spec.max_prompt_length, disable_dropout=False)
        trainer = CorePRMTrainer(prm=self.prm, args=args, train_dataset=train, eval_dataset=eval_ds, callbacks=[EpochTimer()])
        trainer.train()
        self.log_history = trainer.state.log_history
        self.save_model(Path(cfg.output_dir) / "final_model")
        return dict(self.log_history[-1]) if self.log_history else {}

    def _batch(self, size: int) -> int:
        """Solutions per batch. step_cls runs one example per step, and the batch sizes count step
        examples there (as in the old module): a batch holds about that many (bounded memory)."""
        if self.config.prm_kind != "step_cls":
            return size
        return max(1, round(size / max(1.0, getattr(self, "_steps_per_solution", 1.0))))

    def _probs(self, ds: datasets.Dataset) -> list[list[list[float] | None]]:
        """Class probabilities of every step of every record (None for a step cut by truncation),
        from the one scoring path."""
        if self.config.prm_kind == "step_cls":
            self._steps_per_solution = float(np.mean([len(c) for c in ds["completions"]]))
        got = self.prm.score_batch([(r["prompt"], r["completions"]) for r in ds], self._batch(self.config.per_device_eval_batch_size), all_classes=True)
        return [list(g) + [None] * (len(r) - len(g)) for g, r in zip(got, ds["completions"])]

    def evaluate(self, ds: Any) -> dict:
        """Accuracy, weighted precision/recall/F1, per-class figures, the confusion matrix and the
        majority-class baseline (the training set's majority class, else this set's) over labeled steps."""
        from prm.eval.metrics import confusion_matrix, step_metrics

        ds = self._ready(ds)
        probs = self._probs(ds)
        pairs = [(int(v), q) for labs, pr in zip(ds["labels"], probs) for v, q in zip(labs, pr) if v is not None and q is not None]
        if not pairs:
            raise ValueError("evaluate: no labeled step")
        y, p = [v for v, _ in pairs], np.asarray([q for _, q in pairs])
        m = step_metrics(y, p, self._scheme)
        # step_metrics names classes by scheme; rename them to this model's label names (same ids)
        scheme_names = TERNARY_NAMES if self._scheme == "ternary" else BINARY_NAMES
        out: dict[str, Any] = {"n_steps": m["n_steps"], "accuracy": m["accuracy"], "f1": m["f1_weighted"], "precision": m["precision_weighted"], "recall": m["recall_weighted"]}
        for k, name in enumerate(self.names):
            for what in ("precision", "recall", "f1", "support"):
                out[f"{name}_{what}"] = m[f"{scheme_names[k]}_{what}"]
        if self.label_map == DEFAULT_LABEL_MAPS[self.config.num_labels]:
            out["auroc_positive"] = m["auroc"]  # P(positive class) vs the rest; ids follow the default map
        out["label_names"] = self.names
        out["confusion_matrix"] = confusion_matrix(y, p.argmax(-1), self.config.num_labels)
        major = self.train_majority if self.train_majority is not None else int(np.bincount(y).argmax())
        base = step_metrics(y, np.eye(self.config.num_labels)[[major] * len(y)], self._scheme)
        out["majority_baseline"] = {"label": self.names[major], "accuracy": base["accuracy"], "f1": base["f1_weighted"]}
        self.last_predictions = [{"id": i, "labels": labs, "pred": [None if q is None else int(np.argmax(q)) for q in pr]} for i, labs, pr in zip(ds["id"], ds["labels"], probs)]
        return out

    def predict(self, items: Sequence[Any]) -> list[Any]:
        """Labels of steps. ``items``: strings (each one step, classified alone), or solutions
        (``{"prompt", "completions"}`` dicts or ``(problem, steps)`` pairs). Returns, per string, a
        ``{"label_id", "label", "probs"}`` dict; per solution, a list of them (one per step)."""
        texts = all(isinstance(x, str) for x in items)
        sols = [("", [x]) if texts else (x["prompt"], list(x["completions"])) if isinstance(x, dict) else (x[0], list(x[1])) for x in items]
        ds = datasets.Dataset.from_list([{"prompt": p, "completions": c} for p, c in sols])
        out = [[None if q is None else {"label_id": int(np.argmax(q)), "label": self.names[int(np.argmax(q))], "probs": [round(v, 6) for v in q]} for q in pr]
               for pr in self._probs(ds)]
        return [o[0] for o in out] if texts else out

    # saving and loading -------------------------------------------------------------------------
    def save_model(self, path: str | Path) -> Path:
        """A PRM directory (`PRM.save`), this config and the training majority class in its spec."""
        self.prm.spec.extra.update(bmuq=asdict(self.config), train_majority=self.train_majority)
        self.prm.save(path)
        return Path(path)

    def load_model(self, path: str | Path) -> None:
        """Load a model saved by `save_model` (or the old module); featurizer and labels must match."""
        saved, mine = read_saved_config(path), self.config
        for key in ("num_labels", "featurizer_type", "token_mode", "context", "featurizer_model"):
            if getattr(saved, key) != getattr(mine, key) and not (key in ("token_mode", "featurizer_model") and mine.featurizer_type != ("tokens" if key == "token_mode" else "embeddings")):
                raise LabelError(f"{path}: saved model has {key}={getattr(saved, key)!r} but this trainer has {key}={getattr(mine, key)!r}")
        if saved.labels != mine.labels:
            raise LabelError(f"{path}: saved label_map {saved.labels} differs from this trainer's {mine.labels}")
        if Path(path, PRM_CONFIG).is_file():
            self.prm = load_prm(str(path))
            self.train_majority = self.prm.spec.extra.get("train_majority")
        else:
            self.prm, self.train_majority = _load_legacy(Path(path), self._spec()), json.loads(Path(path, LEGACY_CONFIG).read_text()).get("train_majority")
        self.prm.spec.extra.setdefault("positive_class", self._spec().extra["positive_class"])

    @classmethod
    def from_saved(cls, path: str | Path, **overrides: Any) -> PRMTrainer:
        """A trainer rebuilt from a saved model's own config (e.g. in a fresh process)."""
        cfg = read_saved_config(path)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        t = cls.__new__(cls)
        t.config = cfg
        t._reset()
        t.load_model(path)
        return t


def read_saved_config(path: str | Path) -> BertPRMConfig:
    """The `BertPRMConfig` a model was saved with (``prm_config.json``, or the old ``bert_prm.json``)."""
    spec = Path(path, PRM_CONFIG)
    raw = json.loads(spec.read_text()).get("extra", {}).get("bmuq") if spec.is_file() else None
    if raw is None and Path(path, LEGACY_CONFIG).is_file():
        raw = json.loads(Path(path, LEGACY_CONFIG).read_text())["config"]
    if raw is None:
        raise FileNotFoundError(f"{path} is not a saved BERT PRM: no BMUq settings in {PRM_CONFIG} and no {LEGACY_CONFIG}")
    known = {x.name for x in fields(BertPRMConfig)}
    return BertPRMConfig(**{k: v for k, v in raw.items() if k in known})


def _load_legacy(path: Path, spec: PRMSpec) -> PRM:
    """A directory of the old module: a sequence classifier + tokenizer (step mode), or
    ``encoder/`` + ``projection.safetensors`` (embeddings), as the PRM of its kind."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    from prm.models.prm import is_causal
    from prm.models.step_kinds import StepEmbeddingModel, StepEmbeddings

    if spec.prm_kind == "step_cls":
        model, tok = AutoModelForSequenceClassification.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    else:
        from safetensors.torch import load_file

        enc = AutoModelForTokenClassification.from_pretrained(path / "encoder")
        enc.config.step_input_dim = json.loads((path / LEGACY_CONFIG).read_text())["input_dim"]
        enc.config.architectures = ["StepEmbeddingModel"]
        model = StepEmbeddingModel(enc.config)
        model.model.load_state_dict(enc.base_model.state_dict(), strict=False)  # (no pooler: unused)
        model.classifier.load_state_dict(enc.classifier.state_dict())
        if (path / "projection.safetensors").is_file():
            model.proj.load_state_dict(load_file(str(path / "projection.safetensors")))
        tok = StepEmbeddings.load_tokenizer("", spec)
    spec.kind = "causal" if is_causal(model.config) else "encoder"
    return PRM(model.eval(), tok, spec)
