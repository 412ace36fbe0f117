"""A BERT-style step classifier (the BMUq PRM module's API) on the PRM core.

    from prm.bert_prm import BertPRMConfig, PRMTrainer
    trainer = PRMTrainer(BertPRMConfig(model_name_or_path="minilm", featurizer_type="embeddings"))
    data = trainer.load_prm800k_dataset()                    # {"train": ..., "test": ...} from the hub
    train, test = trainer.prepare_dataset(data["train"]), trainer.prepare_dataset(data["test"])
    trainer.train(train, test); trainer.evaluate(test)       # accuracy, weighted/per-class P/R/F1
    trainer.predict(["2 + 2 = 5"]); trainer.save_model("out"); PRMTrainer.from_saved("out")

Every step gets one of ``num_labels`` classes (3: negative/neutral/positive as PRM800K rates steps;
2: incorrect/correct). Three ways to featurize a step, chosen by ``featurizer_type`` and ``token_mode``:

- ``tokens`` + ``token_mode=step``: the backbone's tokenizer; one sequence-classification example
  per step, the step paired with its context (``step`` alone, or ``problem+previous+step``, whose
  context keeps its tail when it must be truncated).
- ``tokens`` + ``token_mode=single_pass``: the core's token-level PRM (`prm.models.prm.PRM`, trained
  by `prm.train.PRMTrainer`): every step of a solution classified in one forward pass, at its
  separator, with the one tokenization of `prm.models.encoding`.
- ``embeddings``: each step (and the problem) embedded once by a sentence-transformers model; the
  sequence ``[problem, step_1, ..., step_n]`` of vectors goes to a BERT encoder as
  ``inputs_embeds`` (through a linear projection when the sizes differ), which classifies every
  step position. With ``problem+previous+step`` the encoder is causal (``is_decoder``), so a step
  sees the problem and the steps before it only; with ``step`` each step is its own sequence.
  Embeddings are cached on disk (`EmbeddingCache`), keyed by model and text, and computed lazily
  in the collator: the first epoch runs the sentence encoder, later epochs and reruns read the cache.

``use_pretrained`` loads the backbone's weights, or builds the same architecture from its config with
random weights. `PRMTrainer` here is a thin driver with the old module's API; the training loop is
`transformers.Trainer` (the core's `prm.train.PRMTrainer` for ``single_pass``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F

from prm.models.backbones import cache_dir, resolve
from prm.models.encoding import IGNORE
from prm.schema import BINARY_NAMES, TERNARY_NAMES

log = logging.getLogger(__name__)

FEATURIZERS = ("tokens", "embeddings")
TOKEN_MODES = ("step", "single_pass")
CONTEXTS = ("step", "problem+previous+step")
SAVED_CONFIG = "bert_prm.json"
PREPARED_COLUMNS = {"prompt", "completions", "labels", "id", "label_scheme"}
DEFAULT_LABEL_MAPS = {3: dict(zip(TERNARY_NAMES, range(3))), 2: dict(zip(BINARY_NAMES, range(2)))}
# Names a custom label_map may use for the classes of stepwise data (so that e.g.
# {"correct": 0, "unclear": 1, "incorrect": 2} applies to PRM800K's ternary labels).
ALIASES = {
    "positive": ("positive", "correct", "good", "+", "pos"),
    "neutral": ("neutral", "unclear", "ok", "neu"),
    "negative": ("negative", "incorrect", "wrong", "bad", "-", "neg"),
}
ALIASES["correct"], ALIASES["incorrect"] = ALIASES["positive"], ALIASES["negative"]


class LabelError(ValueError):
    """A label or label map that does not fit the model (one line: where, what, what is known)."""


@dataclass
class BertPRMConfig:
    """Everything a BERT-style PRM run needs (the old PRMTrainingConfig's fields, same meaning)."""

    model_name_or_path: str = field(default="minilm", metadata={"help": "Backbone / encoder: hub id, local path, or embedded 'minilm'."})
    use_pretrained: bool = field(default=True, metadata={"help": "Load pretrained weights (else random init from the same config)."})
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


def parse_label_map(value: Any, num_labels: int) -> dict[str, int]:
    """``{name: id}`` from a dict, a JSON string or ``name=id,...``; ids must be 0..num_labels-1."""
    if value is None or value == "":
        return dict(DEFAULT_LABEL_MAPS[num_labels])
    if isinstance(value, str):
        s = value.strip()
        try:
            value = json.loads(s) if s.startswith("{") else {k.strip(): int(v) for k, v in (p.split("=", 1) for p in s.split(",") if p.strip())}
        except (ValueError, json.JSONDecodeError) as e:
            raise LabelError(f"label_map {s!r}: expected JSON or name=id,... ({e})") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in value.items()):
        raise LabelError(f"label_map must map names to integer ids, got {value!r}")
    ids = sorted(set(value.values()))
    if ids != list(range(num_labels)) or len(value) != num_labels:
        raise LabelError(f"label_map {value} does not fit num_labels={num_labels}: it needs one name per class id 0..{num_labels - 1}")
    return dict(value)


# --- labels ------------------------------------------------------------------------------------


def _scheme_ids(scheme: str, label_map: dict[str, int], where: str) -> list[int]:
    """Model class id of each class of a stepwise scheme (ternary 0/1/2, binary 0/1), via aliases."""
    names = {"ternary": TERNARY_NAMES, "binary": BINARY_NAMES}.get(scheme)
    if names is None:
        raise LabelError(f"{where}: label scheme '{scheme}' cannot train a classifier (use hard labels: binary or ternary)")
    if len(names) != len(label_map):
        raise LabelError(f"{where}: {scheme} labels ({len(names)} classes) but num_labels={len(label_map)}"
                         + ("; load PRM800K with label_scheme=binary, or use num_labels 3" if scheme == "ternary" else "; use num_labels 2"))
    out = []
    for n in names:
        hits = [label_map[a] for a in ALIASES[n] if a in label_map]
        if len(hits) != 1:
            raise LabelError(f"{where}: {scheme} class '{n}' has {'no' if not hits else 'several'} name in label_map {label_map} (accepted: {', '.join(ALIASES[n])})")
        out.append(hits[0])
    return out


def label_id(value: Any, label_map: dict[str, int], where: str) -> int:
    """Class id of a label given by name (or as an id already in range)."""
    if isinstance(value, str):
        if value in label_map:
            return label_map[value]
        raise LabelError(f"{where}: label {value!r} is not in label_map (known: {', '.join(label_map)})")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < len(label_map):
        return int(value)
    raise LabelError(f"{where}: label {value!r} is neither a name in label_map ({', '.join(label_map)}) nor a class id < {len(label_map)}")


def prepare_records(data: Any, label_map: dict[str, int], num_labels: int) -> datasets.Dataset:
    """Rows -> ``{prompt, completions, labels (class ids or None), label_scheme, id}``.

    Accepts stepwise records (`prm.data.load` output), flat ``{text, label}`` rows (one step each,
    label by name or id; optional ``prompt``), or raw PRM800K rows (``question``/``label``)."""
    if isinstance(data, datasets.IterableDataset):
        data = list(data)
    rows = data.to_list() if isinstance(data, datasets.Dataset) else list(data)
    if not rows:
        raise ValueError("prepare_dataset: no rows")
    cols = set(rows[0])
    scheme = "ternary" if num_labels == 3 else "binary"
    out = []
    if {"question", "label"} <= cols:  # raw PRM800K
        from prm.data import convert_rows

        rows = list(convert_rows("prm800k", ((f"row {i}", r) for i, r in enumerate(rows)), label_scheme=scheme))
        cols = set(rows[0])
    if "label_scheme" in cols:
        maps: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            s = r["label_scheme"]
            if s not in maps:
                maps[s] = _scheme_ids(s, label_map, f"row {i} ({r.get('id') or 'no id'})")
            labs = [None if v is None else maps[s][int(v)] for v in r["labels"]]
            out.append({"prompt": r["prompt"], "completions": list(r["completions"]), "labels": labs, "id": str(r.get("id") or i)})
    elif {"text", "label"} <= cols:
        for i, r in enumerate(rows):
            out.append({"prompt": str(r.get("prompt") or ""), "completions": [r["text"]], "labels": [label_id(r["label"], label_map, f"row {i}")], "id": str(r.get("id", i))})
    else:
        raise ValueError(f"prepare_dataset: cannot read rows with fields {sorted(cols)} (stepwise records, text/label rows, or raw PRM800K rows)")
    for r in out:
        r["label_scheme"] = scheme
        r["labels"] = [None if v is None else float(v) for v in r["labels"]]
    feats = datasets.Features({"prompt": datasets.Value("string"), "completions": datasets.List(datasets.Value("string")),
                               "labels": datasets.List(datasets.Value("float64")), "id": datasets.Value("string"), "label_scheme": datasets.Value("string")})
    return datasets.Dataset.from_list(out, features=feats)


# --- embeddings cache ----------------------------------------------------------------------------


class EmbeddingCache:
    """Sentence embeddings on disk (SQLite, one row per (model, text)); safe across processes."""

    def __init__(self, model_key: str, directory: str | Path | None = None):
        self.model_key = model_key
        self.path = Path(directory or cache_dir()) / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB)")
        self._db.commit()

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_key}\0{text}".encode()).hexdigest()

    def get(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        keys = {self.key(t): t for t in texts}
        out: dict[str, np.ndarray] = {}
        items = list(keys)
        for b in range(0, len(items), 500):  # SQLite's bound-parameter limit
            part = items[b : b + 500]
            q = f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(part))})"
            for k, vec in self._db.execute(q, part):
                out[keys[k]] = np.frombuffer(vec, dtype=np.float32)
        return out

    def put(self, items: dict[str, np.ndarray]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?)", [(self.key(t), np.asarray(v, np.float32).tobytes()) for t, v in items.items()])
        self._db.commit()


class SentenceEmbedder:
    """Texts -> vectors: memory, then the disk cache, then the sentence-transformers model (loaded
    only when some text is missing). Counts where each vector came from."""

    def __init__(self, model_name: str, *, cache: bool = True, cache_directory: str | Path | None = None, batch_size: int = 64):
        self.model_name = model_name
        self.batch_size = batch_size
        self.cache = EmbeddingCache(model_name, cache_directory) if cache else None
        self._model: Any = None
        self._memory: dict[str, np.ndarray] = {}
        self.stats = {"memory": 0, "disk": 0, "computed": 0, "encode_seconds": 0.0}

    def _encoder(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(resolve(self.model_name), device="cuda" if torch.cuda.is_available() else "cpu")
        return self._model

    @property
    def dim(self) -> int:
        return int(self.embed(["dimension probe"]).shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32."""
        want = [t for t in dict.fromkeys(texts) if t not in self._memory]
        self.stats["memory"] += len(texts) - len(want)
        if want and self.cache is not None:
            found = self.cache.get(want)
            self.stats["disk"] += len(found)
            self._memory.update(found)
            want = [t for t in want if t not in found]
        if want:
            t0 = time.perf_counter()
            vecs = self._encoder().encode(want, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
            self.stats["encode_seconds"] += time.perf_counter() - t0
            self.stats["computed"] += len(want)
            new = {t: v.astype(np.float32) for t, v in zip(want, vecs)}
            self._memory.update(new)
            if self.cache is not None:
                self.cache.put(new)
        return np.stack([self._memory[t] for t in texts])


# --- the embeddings model ----------------------------------------------------------------------


class StepEmbeddingClassifier(torch.nn.Module):
    """A BERT token classifier over a sequence of step vectors (``inputs_embeds``)."""

    def __init__(self, encoder: Any, input_dim: int):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        # A projection only when the sentence vectors and the encoder differ in size.
        self.proj = torch.nn.Identity() if input_dim == hidden else torch.nn.Linear(input_dim, hidden)
        self.input_dim = input_dim

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        # embeds: (batch, positions, input_dim) -> logits (batch, positions, classes)
        logits = self.encoder(inputs_embeds=self.proj(embeds), attention_mask=attention_mask).logits
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)
        return out


def build_encoder(cfg: BertPRMConfig) -> Any:
    """BertForTokenClassification-style encoder for step vectors (causal with full context)."""
    from transformers import AutoConfig, AutoModelForTokenClassification

    path = resolve(cfg.model_name_or_path)
    kw = dict(num_labels=cfg.num_labels, id2label=dict(enumerate(cfg.names)), label2id={n: i for i, n in enumerate(cfg.names)},
              is_decoder=cfg.context != "step")
    if cfg.encoder_layers:
        kw["num_hidden_layers"] = cfg.encoder_layers
    if cfg.use_pretrained:
        return AutoModelForTokenClassification.from_pretrained(path, ignore_mismatched_sizes=True, **kw)
    return AutoModelForTokenClassification.from_config(AutoConfig.from_pretrained(path, **kw))


# --- featurized datasets and collators ---------------------------------------------------------


def step_examples(ds: datasets.Dataset, context: str, labeled_only: bool) -> list[dict]:
    """One example per step: ``(context text or None, step text, label, record index, step index)``."""
    out = []
    for r_i, r in enumerate(ds):
        for s_i, (step, lab) in enumerate(zip(r["completions"], r["labels"])):
            if labeled_only and lab is None:
                continue
            ctx = "\n".join([r["prompt"], *r["completions"][:s_i]]).strip() if context != "step" else None
            out.append({"context": ctx or None, "step": step, "label": IGNORE if lab is None else int(lab), "record": r_i, "position": s_i})
    return out


class TokenStepCollator:
    """Tokenizes (context, step) pairs per batch; the context is cut from the left when too long."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tok, self.max_length = tokenizer, max_length
        self.tok.truncation_side = "left"  # keep the most recent context and the step

    def __call__(self, rows: list[dict]) -> dict:
        ctx = [r["context"] for r in rows]
        steps = [r["step"] for r in rows]
        if all(c is None for c in ctx):
            enc = self.tok(steps, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        else:
            enc = self.tok([c or "" for c in ctx], steps, truncation="longest_first", max_length=self.max_length, padding=True, return_tensors="pt")
        enc["labels"] = torch.tensor([r["label"] for r in rows], dtype=torch.long)
        return dict(enc)


def embedding_examples(ds: datasets.Dataset, context: str, max_positions: int, labeled_only: bool) -> list[dict]:
    """Sequences of texts to embed, with a label per position (IGNORE for the problem/unlabeled)."""
    out = []
    for r_i, r in enumerate(ds):
        labs = [IGNORE if v is None else int(v) for v in r["labels"]]
        if context == "step":
            for s_i, (s, lab) in enumerate(zip(r["completions"], labs)):
                if not (labeled_only and lab == IGNORE):
                    out.append({"texts": [s], "labels": [lab], "record": r_i, "positions": [s_i]})
            continue
        steps = r["completions"][: max_positions - 1]
        if labeled_only and all(v == IGNORE for v in labs[: len(steps)]):
            continue
        out.append({"texts": [r["prompt"], *steps], "labels": [IGNORE, *labs[: len(steps)]], "record": r_i, "positions": [-1, *range(len(steps))]})
    return out


class EmbeddingCollator:
    """Embeds the texts of a batch (through the cache) and pads: (batch, positions, dim)."""

    def __init__(self, embedder: SentenceEmbedder):
        self.embedder = embedder

    def __call__(self, rows: list[dict]) -> dict:
        flat = [t for r in rows for t in r["texts"]]
        vecs = torch.from_numpy(self.embedder.embed(flat))
        width = max(len(r["texts"]) for r in rows)
        embeds = torch.zeros(len(rows), width, vecs.shape[1])
        att = torch.zeros(len(rows), width, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        k = 0
        for i, r in enumerate(rows):
            n = len(r["texts"])
            embeds[i, :n], att[i, :n] = vecs[k : k + n], 1
            labels[i, :n] = torch.tensor(r["labels"])
            k += n
        return {"embeds": embeds, "attention_mask": att, "labels": labels}


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


# --- the trainer -------------------------------------------------------------------------------


class _EpochTimer:
    """Wall time of every epoch (the embedding cache shows as a faster second epoch)."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        timer = self

        class CB(TrainerCallback):
            def on_epoch_begin(self, args, state, control, **kw):
                timer._t = time.perf_counter()

            def on_epoch_end(self, args, state, control, **kw):
                timer.seconds.append(round(time.perf_counter() - timer._t, 2))

        self.seconds: list[float] = []
        self.callback = CB()


class PRMTrainer:
    """The BMUq PRM module's API: ``PRMTrainer(config)``, `load_prm800k_dataset`, `prepare_dataset`,
    `train`, `evaluate`, `predict`, `save_model`, `load_model`.

    Not to be confused with `prm.train.PRMTrainer` (a `transformers.Trainer` for token-level PRMs):
    this class builds the model for its featurizer and drives a `transformers.Trainer` — that one
    for ``token_mode=single_pass``, the stock one for per-step and embedding classification.
    """

    def __init__(self, config: BertPRMConfig | None = None, **overrides: Any):
        self.config = config or BertPRMConfig(**overrides)
        cfg = self.config
        from transformers import set_seed

        set_seed(cfg.seed)  # before any head is initialized
        self.label_map, self.names = cfg.labels, cfg.names
        self.embedder: SentenceEmbedder | None = None
        self.prm: Any = None  # the core PRM (single_pass)
        self.tokenizer: Any = None
        self.model: Any = None
        self.epoch_seconds: list[float] = []
        self.log_history: list[dict] = []
        self.train_majority: int | None = None
        self._build()

    # model construction ---------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.config
        if cfg.featurizer_type == "embeddings":
            self.embedder = SentenceEmbedder(cfg.featurizer_model, cache=cfg.embedding_cache, batch_size=cfg.embedding_batch_size)
            self.model = StepEmbeddingClassifier(build_encoder(cfg), self.embedder.dim)
        elif cfg.token_mode == "single_pass":
            from prm.models.prm import PRM, PRMSpec

            self.prm = PRM.from_backbone(cfg.model_name_or_path, PRMSpec(label_scheme=self._scheme, max_length=cfg.max_length), use_pretrained=cfg.use_pretrained)
            self.prm.model.config.id2label, self.prm.model.config.label2id = dict(enumerate(self.names)), dict(self.label_map)
            self.model, self.tokenizer = self.prm.model, self.prm.tokenizer
        else:
            from transformers import (
                AutoConfig,
                AutoModelForSequenceClassification,
                AutoTokenizer,
            )

            path = resolve(cfg.model_name_or_path)
            kw = dict(num_labels=cfg.num_labels, id2label=dict(enumerate(self.names)), label2id=dict(self.label_map))
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            if cfg.use_pretrained:
                self.model = AutoModelForSequenceClassification.from_pretrained(path, ignore_mismatched_sizes=True, **kw)
            else:
                self.model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path, **kw))
            if self.tokenizer.pad_token_id is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    @property
    def _scheme(self) -> str:
        return "ternary" if self.config.num_labels == 3 else "binary"

    # data ---------------------------------------------------------------------------------------
    def load_prm800k_dataset(self, split: str | None = None, streaming: bool = False, source: str | None = None,
                             phases: Sequence[int] = (1, 2), **options: Any) -> dict[str, Any]:
        """PRM800K as stepwise records, ``{split: dataset}`` (see `load_prm800k`)."""
        options.setdefault("label_scheme", self._scheme)
        return load_prm800k(split=split, streaming=streaming, source=source, phases=phases, **options)

    def prepare_dataset(self, ds: Any, label_map: dict[str, int] | str | None = None) -> datasets.Dataset:
        """Rows with labels -> rows with class ids of this model (see `prepare_records`).
        ``label_map`` overrides the config's names for this data; its ids must match the model's."""
        lm = parse_label_map(label_map, self.config.num_labels) if label_map is not None else self.label_map
        return prepare_records(ds, lm, self.config.num_labels)

    def _ready(self, ds: Any) -> datasets.Dataset:
        """Data as `prepare_dataset` returns it (prepared data passes through)."""
        prepared = isinstance(ds, datasets.Dataset) and set(ds.column_names) == PREPARED_COLUMNS and ds.num_rows and ds[0]["label_scheme"] == self._scheme
        return ds if prepared else self.prepare_dataset(ds)

    def _features(self, ds: datasets.Dataset, labeled_only: bool) -> tuple[Any, Any]:
        cfg = self.config
        if cfg.featurizer_type == "embeddings":
            return _Rows(embedding_examples(ds, cfg.context, cfg.max_length, labeled_only)), EmbeddingCollator(self.embedder)
        return _Rows(step_examples(ds, cfg.context, labeled_only)), TokenStepCollator(self.tokenizer, cfg.max_length)

    def _args(self, eval_given: bool) -> Any:
        from transformers import TrainingArguments

        from prm.train import PRMTrainingArguments

        cfg = self.config
        kw = dict(
            output_dir=cfg.output_dir, num_train_epochs=cfg.num_train_epochs, per_device_train_batch_size=cfg.per_device_train_batch_size,
            per_device_eval_batch_size=cfg.per_device_eval_batch_size, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup_steps, logging_steps=cfg.logging_steps, fp16=cfg.fp16, bf16=cfg.bf16,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps, dataloader_num_workers=cfg.dataloader_num_workers, seed=cfg.seed,
            eval_strategy="steps" if eval_given and cfg.eval_steps else "no", eval_steps=cfg.eval_steps,
            save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500, report_to="none", remove_unused_columns=False,
            use_cpu=cfg.bf16 and not torch.cuda.is_available(), dataloader_pin_memory=torch.cuda.is_available(),
        )
        if self.prm is not None:
            return PRMTrainingArguments(**kw, max_length=cfg.max_length, max_prompt_length=cfg.max_length // 2, disable_dropout=False)
        return TrainingArguments(**kw)

    # training and evaluation ----------------------------------------------------------------------
    def train(self, train: Any, eval: Any = None) -> dict:
        """Train on prepared (or preparable) data; returns the last training log entry. The final
        model is saved to ``<output_dir>/final_model``."""
        train = self._ready(train)
        eval_ds = self._ready(eval) if eval is not None else None
        labs = [int(v) for ls in train["labels"] for v in ls if v is not None]
        if not labs:
            raise ValueError("train: no labeled step")
        self.train_majority = int(np.bincount(labs, minlength=self.config.num_labels).argmax())
        timer = _EpochTimer()
        if self.prm is not None:
            from prm.train import PRMTrainer as CorePRMTrainer

            trainer = CorePRMTrainer(prm=self.prm, args=self._args(eval_ds is not None), train_dataset=train, eval_dataset=eval_ds, callbacks=[timer.callback])
        else:
            from transformers import Trainer

            tr, collate = self._features(train, labeled_only=True)
            ev = self._features(eval_ds, labeled_only=True)[0] if eval_ds is not None else None
            trainer = Trainer(model=self.model, args=self._args(ev is not None), train_dataset=tr, eval_dataset=ev, data_collator=collate, callbacks=[timer.callback])
        trainer.train()
        self.epoch_seconds = timer.seconds
        self.log_history = trainer.state.log_history
        self.save_model(Path(self.config.output_dir) / "final_model")
        return dict(trainer.state.log_history[-1]) if trainer.state.log_history else {}

    @torch.no_grad()
    def _probs(self, ds: datasets.Dataset) -> list[list[list[float] | None]]:
        """Class probabilities of every step of every record (None for a step cut by truncation)."""
        self.model.eval()
        device = next(self.model.parameters()).device
        bs = self.config.per_device_eval_batch_size
        out: list[list[Any]] = [[None] * len(r) for r in ds["completions"]]
        if self.prm is not None:
            from prm.train.data import StepCollator

            collate = StepCollator(self.tokenizer.pad_token_id or 0)
            encs = [(i, self.prm.encode(r["prompt"], r["completions"])) for i, r in enumerate(ds)]
            encs = [(i, e) for i, e in encs if e is not None]
            for b in range(0, len(encs), bs):
                part = encs[b : b + bs]
                batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for _, e in part])
                logits = self.model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
                probs = logits.float().softmax(-1).cpu()  # (batch, seq, classes)
                for r, (i, e) in enumerate(part):
                    for s, pos in enumerate(e.score_positions):
                        out[i][s] = probs[r, pos].tolist()
            return out
        rows, collate = self._features(ds, labeled_only=False)
        for b in range(0, len(rows), bs):
            part = [rows[k] for k in range(b, min(b + bs, len(rows)))]
            batch = {k: v.to(device) for k, v in collate(part).items() if k != "labels"}
            probs = self.model(**batch)["logits"].float().softmax(-1).cpu()
            for r, row in enumerate(part):
                if self.config.featurizer_type == "embeddings":
                    for j, pos in enumerate(row["positions"]):
                        if pos >= 0:
                            out[row["record"]][pos] = probs[r, j].tolist()
                else:
                    out[row["record"]][row["position"]] = probs[r].tolist()
        return out

    def evaluate(self, ds: Any) -> dict:
        """Accuracy, weighted precision/recall/F1, per-class figures, the confusion matrix and the
        majority-class baseline (the training set's majority class, else this set's) over labeled steps."""
        from sklearn.metrics import confusion_matrix

        from prm.eval.metrics import step_metrics

        ds = self._ready(ds)
        probs = self._probs(ds)
        y, p = [], []
        for labs, pr in zip(ds["labels"], probs):
            for v, q in zip(labs, pr):
                if v is not None and q is not None:
                    y.append(int(v))
                    p.append(q)
        if not y:
            raise ValueError("evaluate: no labeled step")
        p_arr = np.asarray(p)
        m = step_metrics(y, p_arr, self._scheme)
        # step_metrics names classes by scheme; rename them to this model's label names.
        scheme_names = TERNARY_NAMES if self._scheme == "ternary" else BINARY_NAMES
        out: dict[str, Any] = {"n_steps": m["n_steps"], "accuracy": m["accuracy"], "f1": m["f1_weighted"], "precision": m["precision_weighted"], "recall": m["recall_weighted"]}
        for k, name in enumerate(self.names):
            for what in ("precision", "recall", "f1", "support"):
                out[f"{name}_{what}"] = m[f"{scheme_names[k]}_{what}"]
        if self.label_map == DEFAULT_LABEL_MAPS[self.config.num_labels]:
            out["auroc_positive"] = m["auroc"]  # P(positive class) vs the rest; ids follow the default map
        pred = p_arr.argmax(-1)
        out["label_names"] = self.names
        out["confusion_matrix"] = confusion_matrix(y, pred, labels=list(range(self.config.num_labels))).tolist()  # rows: true, columns: predicted
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
        if texts:
            recs = [{"prompt": "", "completions": [x], "labels": [None]} for x in items]
        else:
            recs = [{"prompt": x["prompt"], "completions": list(x["completions"]), "labels": [None] * len(x["completions"])} if isinstance(x, dict)
                    else {"prompt": x[0], "completions": list(x[1]), "labels": [None] * len(x[1])} for x in items]
        ds = datasets.Dataset.from_list([{**r, "id": str(i), "label_scheme": self._scheme} for i, r in enumerate(recs)])
        out = [[None if q is None else {"label_id": int(np.argmax(q)), "label": self.names[int(np.argmax(q))], "probs": [round(v, 6) for v in q]} for q in pr] for pr in self._probs(ds)]
        return [o[0] for o in out] if texts else out

    # saving and loading -------------------------------------------------------------------------
    def save_model(self, path: str | Path) -> Path:
        """A model directory: Hugging Face weights (safetensors) + tokenizer where one is used + `bert_prm.json`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.prm is not None:
            self.prm.save(path)
        elif self.config.featurizer_type == "embeddings":
            from safetensors.torch import save_file

            self.model.encoder.save_pretrained(path / "encoder", safe_serialization=True)
            if isinstance(self.model.proj, torch.nn.Linear):
                save_file({k: v.contiguous() for k, v in self.model.proj.state_dict().items()}, str(path / "projection.safetensors"))
        else:
            self.model.save_pretrained(path, safe_serialization=True)
            self.tokenizer.save_pretrained(path)
        meta = {"config": asdict(self.config), "input_dim": getattr(self.model, "input_dim", None), "train_majority": self.train_majority}
        (path / SAVED_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
        return path

    def load_model(self, path: str | Path) -> None:
        """Load a model saved by `save_model`; its featurizer, labels and sizes must match this config."""
        saved = read_saved_config(path)
        mine = self.config
        for key in ("num_labels", "featurizer_type", "token_mode", "context", "featurizer_model"):
            if getattr(saved, key) != getattr(mine, key) and not (key in ("token_mode", "featurizer_model") and mine.featurizer_type != ("tokens" if key == "token_mode" else "embeddings")):
                raise LabelError(f"{path}: saved model has {key}={getattr(saved, key)!r} but this trainer has {key}={getattr(mine, key)!r}")
        if saved.labels != mine.labels:
            raise LabelError(f"{path}: saved label_map {saved.labels} differs from this trainer's {mine.labels}")
        path = Path(path)
        if mine.featurizer_type == "tokens" and mine.token_mode == "single_pass":
            from prm.models.prm import PRM

            self.prm = PRM.load(path)
            self.model, self.tokenizer = self.prm.model, self.prm.tokenizer
        elif mine.featurizer_type == "embeddings":
            from safetensors.torch import load_file
            from transformers import AutoModelForTokenClassification

            meta = json.loads((path / SAVED_CONFIG).read_text())
            self.model = StepEmbeddingClassifier(AutoModelForTokenClassification.from_pretrained(path / "encoder"), meta["input_dim"])
            if (path / "projection.safetensors").is_file():
                self.model.proj.load_state_dict(load_file(str(path / "projection.safetensors")))
        else:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self.model = AutoModelForSequenceClassification.from_pretrained(path)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.train_majority = json.loads((path / SAVED_CONFIG).read_text()).get("train_majority")
        self.model.eval()

    @classmethod
    def from_saved(cls, path: str | Path, **overrides: Any) -> PRMTrainer:
        """A trainer rebuilt from a saved model's own config (e.g. in a fresh process)."""
        cfg = read_saved_config(path)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        t = cls.__new__(cls)
        t.config, t.label_map, t.names = cfg, cfg.labels, cfg.names
        t.embedder = SentenceEmbedder(cfg.featurizer_model, cache=cfg.embedding_cache, batch_size=cfg.embedding_batch_size) if cfg.featurizer_type == "embeddings" else None
        t.prm = t.tokenizer = t.model = None
        t.log_history = []
        t.epoch_seconds, t.train_majority = [], None
        t.load_model(path)
        return t


def read_saved_config(path: str | Path) -> BertPRMConfig:
    f = Path(path) / SAVED_CONFIG
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not a saved BERT PRM: no {SAVED_CONFIG}")
    raw = json.loads(f.read_text())["config"]
    known = {x.name for x in fields(BertPRMConfig)}
    return BertPRMConfig(**{k: v for k, v in raw.items() if k in known})


# --- PRM800K -----------------------------------------------------------------------------------

PRM800K_HUB = "tasksource/PRM800K"  # the raw release's four JSONL files (phase{1,2}_{train,test}.jsonl)


def load_prm800k(split: str | None = None, streaming: bool = False, source: str | None = None,
                 phases: Sequence[int] = (1, 2), **options: Any) -> dict[str, Any]:
    """PRM800K as stepwise records (converter `prm800k`; ``options`` such as ``label_scheme``,
    ``neutral``, ``paths`` go to it), as ``{split: Dataset}`` for ``split`` in (train, test) or both.

    ``source``: a Hugging Face dataset repo holding the raw release's files
    ``phase{1,2}_{train,test}.jsonl`` (default `PRM800K_HUB`; openai/prm800k's own Git LFS files have
    the same names), or a local folder with those files, or one local file (any split name maps to it).
    """
    from prm.data import convert_rows, load
    from prm.schema import FEATURES, to_dataset

    source = source or PRM800K_HUB
    splits = [split] if split else ["train", "test"]
    out: dict[str, Any] = {}
    local = Path(source)
    for sp in splits:
        if local.is_file():
            files = [local]
        else:
            names = [f"phase{p}_{sp}.jsonl" for p in phases]
            files = [local / n for n in names] if local.is_dir() else [f"hf://datasets/{source}/{n}" for n in names]
        if local.exists():
            missing = [str(f) for f in files if not Path(f).is_file()]
            if missing:
                raise FileNotFoundError(f"PRM800K files not found: {', '.join(missing)}")
            parts = [load("prm800k", f, streaming=streaming, **options) for f in files]
            out[sp] = parts[0] if len(parts) == 1 else (datasets.interleave_datasets(parts, stopping_strategy="all_exhausted") if streaming else datasets.concatenate_datasets(parts))
            continue

        def rows(files: list = files) -> Any:
            # One file at a time: phase 1 and phase 2 rows differ in fields, so no shared Arrow schema.
            for f in files:
                hub = datasets.load_dataset("json", data_files=f, split="train", streaming=True)
                yield from ((f"{f} row {i}", r) for i, r in enumerate(hub))

        if streaming:
            out[sp] = datasets.IterableDataset.from_generator(lambda rows=rows: convert_rows("prm800k", rows(), **options), features=FEATURES)
        else:
            out[sp] = to_dataset(convert_rows("prm800k", rows(), **options))
    return out

