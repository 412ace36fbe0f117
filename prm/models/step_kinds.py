"""The BMUq featurizers as PRM kinds: ``step_cls`` and ``step_embeddings``.

Both lay a solution out as *segments*, one per text, each starting with the tokenizer's [CLS]
(or BOS) token, concatenated into one token sequence; a step's score is read at the last token of
its segment. So they use the one interface unchanged: `encode` gives token ids and score positions,
`step_logits` gives (batch, seq, classes) logits, the one trainer, loss, padding and scoring path
apply, and truncation keeps labels aligned (`truncate_at_steps`).

- ``step_cls``: one sequence-classification example per step (an ``AutoModelForSequenceClassification``
  backbone). Layout ``problem+previous+step`` pairs each step with its context (problem and the
  steps before it, joined by newlines; the context is cut from the left so its most recent part stays,
  ``max_length`` tokens per example); layout ``step`` classifies the step alone. `step_logits` splits
  each row into its examples and runs them as one batch.
- ``step_embeddings``: every text (the problem, each step) is embedded by a frozen
  sentence-transformers model (``spec.extra["featurizer_model"]``); the vectors ``[problem, step_1,
  ...]`` go to a BERT-style encoder as ``inputs_embeds`` (through a linear projection when the sizes
  differ) that classifies each position (`StepEmbeddingModel`). Layout ``problem+previous+step``
  makes the encoder causal (``is_decoder``), so a step sees the problem and the steps before it;
  layout ``step`` runs each step as its own one-position sequence. Embeddings are cached in memory
  and on disk (`EmbeddingCache`, keyed by model and token ids).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput

from prm.models.backbones import cache_dir, resolve
from prm.models.encoding import truncate_at_steps
from prm.models.kinds import KINDS, Kind

CONTEXT_LAYOUTS = ("problem+previous+step", "step")
_TRUNC_OPTS = ("train_on_last_step_only", "require_label")


def segment_marker(tok: Any) -> int:
    """The token that starts every segment: [CLS] for BERT-like tokenizers, else BOS."""
    for tid in (getattr(tok, "cls_token_id", None), getattr(tok, "bos_token_id", None)):
        if tid is not None:
            return int(tid)
    raise ValueError(f"step_cls/step_embeddings need a tokenizer with a [CLS] or BOS token to start each example; {type(tok).__name__} has neither")


def split_segments(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, marker: int) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) of each segment (right padding: the mask's ones come first)."""
    out = []
    for b in range(input_ids.shape[0]):
        n = int(attention_mask[b].sum()) if attention_mask is not None else input_ids.shape[1]
        starts = (input_ids[b, :n] == marker).nonzero().flatten().tolist()
        if not starts or starts[0] != 0:
            raise ValueError("a row does not start with the segment token: not encoded by this PRM kind")
        out.append(list(zip(starts, starts[1:] + [n])))
    return out


def _check_layout(spec: Any) -> str:
    layout = spec.layout or CONTEXT_LAYOUTS[0]
    if layout not in CONTEXT_LAYOUTS:
        raise ValueError(f"unknown {spec.prm_kind} layout '{layout}'; known: {', '.join(CONTEXT_LAYOUTS)}")
    return layout


class _SegmentKind(Kind):
    causal_only = False
    prefix_sharing = False  # each example/position sees its own context, not a shared prefix

    def __init__(self, spec: Any, tokenizer: Any):
        super().__init__(spec, tokenizer)
        self.layout = _check_layout(spec)
        self.marker = segment_marker(tokenizer)

    def _segment(self, ids: list[int], where: str) -> list[int]:
        if not ids or ids[0] != self.marker:
            ids = [self.marker, *ids]
        if self.marker in ids[1:]:
            raise ValueError(f"{where} contains the tokenizer's segment token (id {self.marker}); remove it from the text")
        return ids


# ----------------------------------------------------------------------------- step_cls


@KINDS.register("step_cls")
class StepCls(_SegmentKind):
    name = "step_cls"

    @classmethod
    def load_model(cls, path, spec, *, dtype=None, trust_remote_code=False, use_pretrained=True, num_labels=2, quantization=None):
        from transformers import AutoModelForSequenceClassification

        if not use_pretrained:
            config = AutoConfig.from_pretrained(path, num_labels=num_labels, trust_remote_code=trust_remote_code)
            return AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
        kw: dict[str, Any] = {"num_labels": num_labels, "trust_remote_code": trust_remote_code, "ignore_mismatched_sizes": True}
        if dtype is not None:
            kw["dtype"] = dtype
        kw.update(quantization or {})
        return AutoModelForSequenceClassification.from_pretrained(path, **kw)

    @classmethod
    def prepare_tokenizer(cls, tok, model, spec):
        super().prepare_tokenizer(tok, model, spec)
        model.config.pad_token_id = tok.pad_token_id

    def _example(self, context: str | None, step: str, max_length: int | None) -> list[int]:
        tok = self.tok
        room = None if max_length is None else max_length - (0 if tok("")["input_ids"][:1] == [self.marker] else 1)
        side, tok.truncation_side = tok.truncation_side, "left"  # keep the most recent context and the step
        try:
            trunc: Any = room is not None and ("longest_first" if context is not None else True)
            enc = tok(step, truncation=trunc, max_length=room) if context is None else tok(context, step, truncation=trunc, max_length=room)
        finally:
            tok.truncation_side = side
        return self._segment(enc["input_ids"], "a step or problem")

    def encode(self, prompt, steps, labels=None, **opts):
        ids: list[int] = []
        pos: list[int] = []
        for i, step in enumerate(steps):
            ctx = "\n".join([prompt, *steps[:i]]).strip() if self.layout != "step" else ""
            ids += self._example(ctx or None, step, opts.get("max_length"))
            pos.append(len(ids) - 1)
        # every step keeps its own (truncated) example, so no step is ever removed
        return truncate_at_steps(ids, pos, labels, n_steps=len(steps), **{k: v for k, v in opts.items() if k in _TRUNC_OPTS})

    def step_logits(self, model, input_ids=None, attention_mask=None, **_):
        segs = split_segments(input_ids, attention_mask, self.marker)
        flat = [(b, s, e) for b, row in enumerate(segs) for s, e in row]
        width = max(e - s for _, s, e in flat)
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        ids = torch.full((len(flat), width), pad, dtype=torch.long, device=input_ids.device)
        att = torch.zeros_like(ids)
        for k, (b, s, e) in enumerate(flat):  # (examples, width), right padded
            ids[k, : e - s] = input_ids[b, s:e]
            att[k, : e - s] = 1
        kw = {}
        sep = getattr(self.tok, "sep_token_id", None)
        if sep is not None and getattr(model.config, "type_vocab_size", 1) > 1:
            # BERT pairs: segment B (the step) starts after the first [SEP], as the tokenizer marks it
            kw["token_type_ids"] = ((ids == sep).long().cumsum(1) - (ids == sep).long() > 0).long() * att
        logits = model(input_ids=ids, attention_mask=att, **kw).logits  # (examples, classes)
        out = logits.new_zeros(input_ids.shape[0], input_ids.shape[1], logits.shape[-1])
        out[torch.tensor([b for b, _, _ in flat]), torch.tensor([e - 1 for _, _, e in flat])] = logits
        return out  # (batch, seq, classes): each step's logits at its last token


# ----------------------------------------------------------------------------- step_embeddings


class EmbeddingCache:
    """Sentence embeddings on disk (SQLite, one row per (model, token ids)); safe across processes."""

    def __init__(self, model_key: str, directory: str | Path | None = None):
        self.model_key = model_key
        self.path = Path(directory or cache_dir()) / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB)")
        self._db.commit()

    def key(self, ids: tuple[int, ...]) -> str:
        return hashlib.sha256(f"{self.model_key}\0{json.dumps(ids)}".encode()).hexdigest()

    def get(self, items: Sequence[tuple[int, ...]]) -> dict[tuple[int, ...], np.ndarray]:
        keys = {self.key(t): t for t in items}
        out: dict[tuple[int, ...], np.ndarray] = {}
        names = list(keys)
        for b in range(0, len(names), 500):  # SQLite's bound-parameter limit
            part = names[b : b + 500]
            for k, vec in self._db.execute(f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(part))})", part):
                out[keys[k]] = np.frombuffer(vec, dtype=np.float32)
        return out

    def put(self, items: dict[tuple[int, ...], np.ndarray]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?)", [(self.key(t), np.asarray(v, np.float32).tobytes()) for t, v in items.items()])
        self._db.commit()


class SentenceEmbedder:
    """Token ids of a text -> its sentence vector: memory, then the disk cache, then the
    sentence-transformers model (loaded only when a text is missing). Counts where vectors came from."""

    def __init__(self, model_name: str, *, cache: bool = True, cache_directory: str | Path | None = None, batch_size: int = 64):
        self.model_name, self.batch_size = model_name, batch_size
        self.cache = EmbeddingCache(model_name, cache_directory) if cache else None
        self._model: Any = None
        self._tok: Any = None
        self._max: int | None = None
        self._memory: dict[tuple[int, ...], np.ndarray] = {}
        self.stats = {"memory": 0, "disk": 0, "computed": 0, "encode_seconds": 0.0}

    def model(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(resolve(self.model_name), device="cuda" if torch.cuda.is_available() else "cpu").eval()
        return self._model

    def tokenize(self, text: str) -> list[int]:
        """The ids the sentence encoder embeds ``text`` as (its tokenizer, its max_seq_length);
        loads the tokenizer only, so cached vectors need no model."""
        if self._tok is None:
            from transformers import AutoTokenizer

            path = Path(resolve(self.model_name))
            conf = path / "sentence_bert_config.json"
            self._tok = AutoTokenizer.from_pretrained(path)
            self._max = json.loads(conf.read_text()).get("max_seq_length") if conf.is_file() else self._tok.model_max_length
        return self._tok(text, truncation=True, max_length=self._max)["input_ids"]

    @torch.no_grad()
    def embed_ids(self, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        """(len(seqs), dim) float32 for token-id sequences as the model's tokenizer writes them."""
        keys = [tuple(int(i) for i in s) for s in seqs]
        want = [k for k in dict.fromkeys(keys) if k not in self._memory]
        self.stats["memory"] += len(keys) - len(want)
        if want and self.cache is not None:
            found = self.cache.get(want)
            self.stats["disk"] += len(found)
            self._memory.update(found)
            want = [k for k in want if k not in found]
        if want:
            st, t0, new = self.model(), time.perf_counter(), {}
            device = next(st.parameters()).device
            for b in range(0, len(want), self.batch_size):
                part = want[b : b + self.batch_size]
                width = max(len(k) for k in part)
                ids = torch.zeros((len(part), width), dtype=torch.long)
                att = torch.zeros_like(ids)
                for r, k in enumerate(part):
                    ids[r, : len(k)], att[r, : len(k)] = torch.tensor(k), 1
                vec = st({"input_ids": ids.to(device), "attention_mask": att.to(device)})["sentence_embedding"]
                new.update({k: v for k, v in zip(part, vec.float().cpu().numpy())})
            self.stats["encode_seconds"] += time.perf_counter() - t0
            self.stats["computed"] += len(want)
            self._memory.update(new)
            if self.cache is not None:
                self.cache.put(new)
        return np.stack([self._memory[k] for k in keys])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_ids([self.tokenize(t) for t in texts])


class StepEmbeddingModel(PreTrainedModel):
    """A BERT-style encoder over a sequence of step vectors (``inputs_embeds``) with a token
    classification head: ``model`` (the encoder body), ``proj`` (Identity, or Linear when the vectors'
    size ``config.step_input_dim`` differs from the encoder's), ``classifier``. Logits (batch, positions, classes)."""

    base_model_prefix = "model"
    _supports_sdpa = True
    _supports_attention_backend = True

    def __init__(self, config: Any):
        super().__init__(config)
        self.model = AutoModel.from_config(config)
        h = config.hidden_size
        d = getattr(config, "step_input_dim", h)
        self.proj = nn.Identity() if d == h else nn.Linear(d, h)
        self.dropout = nn.Dropout(getattr(config, "classifier_dropout", None) or getattr(config, "hidden_dropout_prob", 0.0))
        self.classifier = nn.Linear(h, config.num_labels)
        self.post_init()

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> TokenClassifierOutput:
        hidden = self.model(inputs_embeds=self.proj(inputs_embeds), attention_mask=attention_mask).last_hidden_state
        return TokenClassifierOutput(logits=self.classifier(self.dropout(hidden)))


@KINDS.register("step_embeddings")
class StepEmbeddings(_SegmentKind):
    name = "step_embeddings"

    def __init__(self, spec, tokenizer):
        super().__init__(spec, tokenizer)
        self._embedder: SentenceEmbedder | None = None

    @property
    def embedder(self) -> SentenceEmbedder:
        if self._embedder is None:
            x = self.spec.extra
            self._embedder = SentenceEmbedder(_featurizer(self.spec), cache=x.get("embedding_cache", True), batch_size=x.get("embedding_batch_size", 64))
        return self._embedder

    @classmethod
    def load_tokenizer(cls, path: str, spec: Any, trust_remote_code: bool = False) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(resolve(_featurizer(spec)))  # the texts are the sentence encoder's

    @classmethod
    def load_model(cls, path, spec, *, dtype=None, trust_remote_code=False, use_pretrained=True, num_labels=2, quantization=None):
        config = AutoConfig.from_pretrained(path)
        if "StepEmbeddingModel" in (config.architectures or []):  # saved by PRM lab
            kw: dict[str, Any] = {"config": config} if dtype is None else {"config": config, "dtype": dtype}
            return StepEmbeddingModel.from_pretrained(path, **kw)
        # a new encoder on a backbone: its size from the sentence encoder, causal for the context layout
        st = SentenceEmbedder(_featurizer(spec), cache=False).model()
        spec.extra["text_max_tokens"] = int(st.max_seq_length)
        kw = {"num_labels": num_labels, "is_decoder": _check_layout(spec) != "step"}
        if spec.extra.get("encoder_layers"):
            kw["num_hidden_layers"] = int(spec.extra["encoder_layers"])
        config = AutoConfig.from_pretrained(path, **kw)
        config.step_input_dim = int(st.get_embedding_dimension())
        config.architectures = ["StepEmbeddingModel"]
        model = StepEmbeddingModel(config)
        if use_pretrained:
            body = AutoModel.from_pretrained(path, config=config).state_dict()
            model.model.load_state_dict(body, strict=False)
        return model

    @classmethod
    def prepare_tokenizer(cls, tok, model, spec):
        if tok.pad_token_id is None and tok.eos_token is not None:
            tok.pad_token = tok.eos_token

    def encode(self, prompt, steps, labels=None, **opts):
        limit = self.spec.extra.get("text_max_tokens")

        def seg(text: str) -> list[int]:
            return self._segment(self.tok(text, truncation=limit is not None, max_length=limit)["input_ids"], "a step or problem")

        ids = [] if self.layout == "step" else seg(prompt)
        pos = []
        max_pos = self.spec.extra.get("max_positions")  # problem + steps, as the encoder sees them
        keep = steps if self.layout == "step" or not max_pos else steps[: max(0, max_pos - 1)]
        for st in keep:
            ids += seg(st)
            pos.append(len(ids) - 1)
        labs = None if labels is None else list(labels)[: len(keep)]
        if labels is not None and len(labels) != len(steps):
            raise ValueError(f"{len(labels)} labels for {len(steps)} steps")
        enc = truncate_at_steps(ids, pos, labs, n_steps=len(keep), max_length=opts.get("max_length"),
                                **{k: v for k, v in opts.items() if k in _TRUNC_OPTS})
        if enc is not None:
            enc.n_truncated += len(steps) - len(keep)  # steps beyond max_positions go whole, with their labels
        return enc

    def step_logits(self, model, input_ids=None, attention_mask=None, **_):
        segs = split_segments(input_ids, attention_mask, self.marker)
        flat = [input_ids[b, s:e].tolist() for b, row in enumerate(segs) for s, e in row]
        vecs = torch.from_numpy(self.embedder.embed_ids(flat))  # (segments, dim), frozen
        dtype = next(model.parameters()).dtype
        vecs = vecs.to(device=input_ids.device, dtype=dtype)
        bsz, seq = input_ids.shape
        if self.layout == "step":  # every step alone: (segments, 1, dim)
            logits = model(inputs_embeds=vecs[:, None], attention_mask=torch.ones((len(flat), 1), dtype=torch.long, device=input_ids.device)).logits[:, 0]
        else:  # (batch, segments, dim), one sequence of vectors per solution
            width = max(len(r) for r in segs)
            emb = vecs.new_zeros(bsz, width, vecs.shape[-1])
            att = torch.zeros((bsz, width), dtype=torch.long, device=input_ids.device)
            k = 0
            for b, row in enumerate(segs):
                emb[b, : len(row)], att[b, : len(row)] = vecs[k : k + len(row)], 1
                k += len(row)
            full = model(inputs_embeds=emb, attention_mask=att).logits  # (batch, segments, classes)
            logits = torch.cat([full[b, : len(row)] for b, row in enumerate(segs)])
        out = logits.new_zeros(bsz, seq, logits.shape[-1])
        out[torch.tensor([b for b, row in enumerate(segs) for _ in row]), torch.tensor([e - 1 for row in segs for _, e in row])] = logits
        return out  # (batch, seq, classes): each text's logits at its segment's last token


def _featurizer(spec: Any) -> str:
    from prm.models.kinds import PRMLoadError

    name = spec.extra.get("featurizer_model")
    if not name:
        raise PRMLoadError("a step_embeddings PRM needs its sentence-transformers model (spec extra.featurizer_model); load one saved by PRM lab")
    return name
