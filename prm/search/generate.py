"""Step-at-a-time generators for PRM-guided search: one interface, several back ends.

A search grows partial solutions one step at a time. Every generator answers one question: given a
problem and some partial solutions (``parents``), sample ``counts[i]`` continuations of
``parents[i]``, each one step long (up to and including the step separator), or to the end of the
solution when ``to_end`` is set. The step separator follows from the prompt format of
`prm.label.generate.local` (one short step per line), so a step ends at the first generated token
that holds a newline after some non-blank text.

- ``local``: transformers, with a decoding loop of its own. The problem prompt is run through the
  model once per problem and its keys/values kept once, shared by every row without copies
  (`prm.search.kv`: per-row tails in preallocated buffers, cascade attention). A parent made by the
  previous call continues from the keys/values its tokens got while they were generated, so only
  its last token runs; other parents run their tokens after the prompt, once per distinct parent;
  the parent's tail is then copied into its ``counts[i]`` continuations (``reuse_prefix=True``).
  ``reuse_prefix=False`` recomputes the whole prefix (prompt and steps so far) for every
  continuation, which is what a plain batched ``generate`` call per continuation does; it exists as
  the benchmark's baseline and as the reference the tests compare against. Both draw the same
  random numbers, so equal logits give equal tokens, and both compute vocabulary logits only at the
  last position of a prefill (as ``generate`` does). The shared-prefix attention covers models
  whose attention goes through transformers' attention interface without sliding windows or
  soft-capping (Llama, Qwen2, SmolLM2...); it refuses the others (use ``reuse_prefix=False``).
- ``vllm``: vLLM on a GPU (prefix caching does the sharing there); imported only when chosen.

Each generator counts the tokens it generated (``tokens``).
"""

from __future__ import annotations

import copy
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from prm.answers import extract_answer
from prm.label.generate.local import EXAMPLES, SYSTEM_PROMPT, chat_prompt, load_causal_lm
from prm.registry import Registry
from prm.search.kv import RowCache, using_shared_prefix_attention

log = logging.getLogger(__name__)

STEP_SEPARATOR = "\n"  # the local prompt asks for one step per line


@dataclass
class Partial:
    """A partial (or finished) solution: its steps, the generator's tokens after the prompt, and
    whether it has ended (end of sequence, an answer line, or the token budget)."""

    steps: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    done: bool = False
    tokens: int = 0  # tokens generated on this path from the root
    scores: list[float] | None = None  # PRM step scores, filled in by the search

    @property
    def text(self) -> str:
        return "\n".join(self.steps)

    @property
    def answer(self) -> str | None:
        return extract_answer(self.text)


class Generator(Protocol):
    """What every search generator offers."""

    tokens: int

    def expand(self, problem: str, parents: Sequence[Partial], counts: Sequence[int], *, to_end: bool = False) -> list[list[Partial]]:
        """``counts[i]`` sampled continuations of ``parents[i]`` (one step, or to the end)."""
        ...

    def reset(self) -> None:
        """Restart the random streams (the next search draws what the first one did)."""
        ...


GENERATORS: Registry[Any] = Registry("search generator")


def _split_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.split("\n") if ln.strip()]


def _token_masks(tok: Any, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(vocab,) masks of the tokens holding the step separator and of whitespace-only tokens;
    decoding every token takes a second or two, so the result is kept on the tokenizer."""
    key = (vocab, STEP_SEPARATOR)
    kept = getattr(tok, "_prm_search_masks", None)
    if kept is not None and kept[0] == key:
        return kept[1], kept[2]
    pieces = tok.batch_decode([[i] for i in range(min(vocab, len(tok)))])
    has_sep = torch.zeros(vocab, dtype=torch.bool)
    has_sep[: len(pieces)] = torch.tensor([STEP_SEPARATOR in p for p in pieces])
    blank = torch.zeros(vocab, dtype=torch.bool)
    blank[: len(pieces)] = torch.tensor([not p.strip() for p in pieces])
    tok._prm_search_masks = (key, has_sep, blank)
    return has_sep, blank


@GENERATORS.register("local")
class LocalStepGenerator:
    """transformers causal LM, one step at a time, sharing the prefix's key/value cache.

    Sampling: temperature and top-p (temperature 0 is greedy). The random numbers of a call come
    from a generator seeded by (seed, problem, call number on that problem), so a rerun of the same
    search repeats itself, and ``reuse_prefix`` on or off gives the same tokens when the logits agree.
    """

    def __init__(self, model: str | Any = "smollm2", tokenizer: Any = None, *, temperature: float = 0.8, top_p: float = 1.0,
                 max_step_tokens: int = 96, max_tokens: int = 320, seed: int = 0, reuse_prefix: bool = True,
                 system_prompt: str = SYSTEM_PROMPT, examples: Sequence[tuple[str, str]] = EXAMPLES, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        if isinstance(model, str):
            self.model, self.tokenizer = load_causal_lm(model, dtype=dtype, device=device)
        else:  # an already built model (tests, benchmarks)
            self.model, self.tokenizer = model.eval(), tokenizer
        self.temperature, self.top_p, self.seed, self.reuse_prefix = temperature, top_p, seed, reuse_prefix
        self.max_step_tokens, self.max_tokens = max_step_tokens, max_tokens
        self.system_prompt, self.examples = system_prompt, list(examples)
        self.tokens = 0
        self._calls: dict[str, int] = {}
        self._prompt_cache: tuple[str, list[int], Any] | None = None
        self._tails: dict[tuple[int, ...], tuple[RowCache, int, torch.Tensor]] = {}  # the last call's children's keys/values
        tok = self.tokenizer
        eos = {tok.eos_token_id}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_ids = sorted(e for e in eos if e is not None)
        self._has_sep, self._blank = _token_masks(tok, self.model.get_input_embeddings().weight.shape[0])
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else self.eos_ids[0]

    def reset(self) -> None:
        """Start the random streams again: a search run after ``reset`` draws what the first did."""
        self._calls.clear()

    def prompt_ids(self, problem: str) -> list[int]:
        text = chat_prompt(self.tokenizer, problem, self.system_prompt, self.examples)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _prompt(self, problem: str) -> tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """Prompt tokens and, when reusing, the per-layer keys/values of all but the last one (batch 1,
        kept for the current problem)."""
        from transformers import DynamicCache

        if self._prompt_cache is None or self._prompt_cache[0] != problem:
            ids = self.prompt_ids(problem)
            prefix = None
            if self.reuse_prefix:
                cache = DynamicCache()
                self.model(input_ids=torch.tensor([ids[:-1]], device=self._device()), past_key_values=cache, use_cache=True, logits_to_keep=1)
                prefix = [(layer.keys, layer.values) for layer in cache.layers]
            self._prompt_cache = (problem, ids, prefix)
            self._tails = {}  # tails of another problem's partial solutions never match
        return self._prompt_cache[1], self._prompt_cache[2]

    def _rng(self, problem: str) -> torch.Generator:
        k = self._calls.get(problem, 0)
        self._calls[problem] = k + 1
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + zlib.crc32(problem.encode()) * 7919 + k) % (2**63))
        return g

    def _sample(self, logits: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(rows, vocab) -> (rows,) token ids."""
        logits = logits.float().cpu()
        if self.temperature <= 0:
            return logits.argmax(-1)
        probs = (logits / self.temperature).softmax(-1)
        if self.top_p < 1.0:
            sp, si = probs.sort(-1, descending=True)
            drop = sp.cumsum(-1) - sp > self.top_p  # keep the smallest head whose mass reaches top_p
            sp[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, si, sp)
        return torch.multinomial(probs, 1, generator=g).squeeze(-1)

    def _forward(self, cache: RowCache, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Run ``ids`` (rows, q) at positions ``pos`` on top of ``cache`` (whose ``valid`` already covers
        the new columns); vocabulary logits of the last position (rows, vocab)."""
        dev = self._device()
        q = ids.shape[1]
        out = self.model(input_ids=ids.to(dev), position_ids=pos.to(dev), attention_mask=cache.mask(q), past_key_values=cache, prm_kv=cache,
                         use_cache=True, logits_to_keep=1)
        cache.advance(q)
        return out.logits[:, -1]

    def _start_shared(self, ids: list[int], prefix: Any, parents: Sequence[Partial], rows: torch.Tensor, room: int) -> tuple[RowCache, torch.Tensor]:
        """Reuse: the prompt's keys/values are shared by every row (never copied); a parent that the
        previous call generated continues from its own keys/values, so only its last token runs (it
        was sampled but never fed); any other parent runs its tokens after the prompt. One forward
        pass per distinct parent, then each parent's tail is copied into its ``counts[i]`` rows."""
        tails = [[ids[-1]] + list(p.token_ids) for p in parents]
        known = [self._tails.get(tuple(p.token_ids)) for p in parents]  # (cache, row, columns) or None
        cached = [len(k[2]) if k else 0 for k in known]
        todo = [t[c:] for t, c in zip(tails, cached)]
        C, U = max(cached), max(len(t) for t in todo)
        start = RowCache.empty(self.model, prefix, len(parents), C + U)
        P = start.prefix_length
        new_ids = torch.full((len(parents), U), self._pad, dtype=torch.long)
        pos = torch.full((len(parents), U), P, dtype=torch.long)
        for i, (k, c, t) in enumerate(zip(known, cached, todo)):
            # row layout: padding | cached tail (C columns) | padding | tokens to run (U columns)
            if k:
                k[0].gather(k[1], k[2], start, i, C - c)
                start.valid[i, C - c : C] = True
            new_ids[i, U - len(t):] = torch.tensor(t)
            pos[i, U - len(t):] = torch.arange(P + c, P + c + len(t))
            start.valid[i, C + U - len(t) : C + U] = True
        start.length = C
        logits = self._forward(start, new_ids, pos)
        return start.select(rows.to(start.valid.device), C + U + room), logits[rows.to(logits.device)]

    def _start_recompute(self, ids: list[int], parents: Sequence[Partial], rows: torch.Tensor, room: int) -> tuple[RowCache, torch.Tensor]:
        """Baseline: every row (continuation) runs its whole prefix, prompt and steps so far, from
        scratch, as a plain batched ``generate`` call would (layout: prompt | padding | tail)."""
        P = len(ids) - 1
        tails = [[ids[-1]] + list(parents[int(r)].token_ids) for r in rows]
        W = max(len(t) for t in tails)
        cache = RowCache.empty(self.model, None, len(rows), P + W + room)
        full = torch.full((len(rows), P + W), self._pad, dtype=torch.long)
        pos = torch.zeros((len(rows), P + W), dtype=torch.long)
        full[:, :P] = torch.tensor(ids[:-1])
        pos[:, :P] = torch.arange(P)
        cache.valid[:, :P] = True
        for r, t in enumerate(tails):
            full[r, P + W - len(t):] = torch.tensor(t)
            pos[r, P + W - len(t):] = torch.arange(P, P + len(t))
            cache.valid[r, P + W - len(t) : P + W] = True
        return cache, self._forward(cache, full, pos)

    @torch.no_grad()
    def expand(self, problem: str, parents: Sequence[Partial], counts: Sequence[int], *, to_end: bool = False) -> list[list[Partial]]:
        if len(parents) != len(counts) or any(c < 0 for c in counts):
            raise ValueError("expand needs one non-negative count per parent")
        if not parents or sum(counts) == 0:
            return [[] for _ in parents]
        self.model.eval()
        ids, prefix = self._prompt(problem)
        rows = torch.repeat_interleave(torch.arange(len(parents)), torch.tensor(list(counts)))  # (R,) parent of each row
        R = len(rows)
        used = torch.tensor([len(parents[int(r)].token_ids) for r in rows])
        limit = torch.clamp(self.max_tokens - used, min=1)
        if not to_end:
            limit = torch.clamp(limit, max=self.max_step_tokens)
        room = int(limit.max())  # decoding writes at most this many columns
        with using_shared_prefix_attention(self.model):
            if self.reuse_prefix:
                cache, logits = self._start_shared(ids, prefix, parents, rows, room)
            else:
                cache, logits = self._start_recompute(ids, parents, rows, room)
            first = cache.length  # the column the first generated token goes to
            pos_last = torch.tensor([len(ids) - 1 + len(parents[int(r)].token_ids) for r in rows])
            new = self._decode(problem, cache, logits, pos_last, limit, to_end)
        children: list[list[Partial]] = [[] for _ in parents]
        tails: dict[tuple[int, ...], tuple[RowCache, int, torch.Tensor]] = {}
        for r in range(R):
            parent = parents[int(rows[r])]
            toks, ended = new[r]
            self.tokens += len(toks)
            body = [x for x in toks if x not in self.eos_ids]
            text = self.tokenizer.decode(body, skip_special_tokens=True)
            steps = list(parent.steps) + _split_lines(text)
            all_ids = list(parent.token_ids) + toks
            done = ended or to_end or len(all_ids) >= self.max_tokens or extract_answer(text) is not None
            child = Partial(steps=steps, token_ids=all_ids, done=done, tokens=parent.tokens + len(toks))
            children[int(rows[r])].append(child)
            if self.reuse_prefix and not done:
                # the child's keys/values: its parent's columns, then the generated tokens that were fed
                # back (all but the last: it was sampled after the row's final forward pass)
                cols = torch.cat([torch.nonzero(cache.valid[r, :first]).flatten(), torch.arange(first, first + len(toks) - 1, device=cache.valid.device)])
                tails[tuple(all_ids)] = (cache, r, cols)
        if self.reuse_prefix:
            self._tails = tails  # only this call's children can be the next call's parents
        return children

    def _decode(self, problem: str, cache: RowCache, logits: torch.Tensor, pos_last: torch.Tensor, limit: torch.Tensor,
                to_end: bool) -> list[tuple[list[int], bool]]:
        """Sample one token per row per pass until every row stopped (separator after some text, end
        of sequence, its token limit); each row's tokens and whether it hit the end of sequence."""
        R = len(pos_last)
        g = self._rng(problem)
        new: list[list[int]] = [[] for _ in range(R)]
        active = torch.ones(R, dtype=torch.bool)
        ended = torch.zeros(R, dtype=torch.bool)  # end of sequence
        content = torch.zeros(R, dtype=torch.bool)  # the step has non-blank text so far
        eos = torch.tensor(self.eos_ids)
        for t in range(int(limit.max())):
            nxt = self._sample(logits, g)  # (R,)
            for r in torch.nonzero(active).flatten().tolist():
                new[r].append(int(nxt[r]))
            is_eos = torch.isin(nxt, eos)
            ended |= active & is_eos
            stop = is_eos | (t + 1 >= limit)
            if not to_end:
                stop |= self._has_sep[nxt] & content
            content |= ~self._blank[nxt]
            active &= ~stop
            if not active.any():
                break
            cache.valid[:, cache.length] = True  # a stopped row keeps running (its outputs are ignored): one batch shape
            pos_last = pos_last + 1
            logits = self._forward(cache, nxt[:, None], pos_last[:, None])
        return [(new[r], bool(ended[r])) for r in range(R)]


@GENERATORS.register("vllm")
class VLLMStepGenerator:
    """vLLM on a GPU, same interface: continuations from the prompt's token ids plus the parent's,
    stopped at the separator; vLLM's automatic prefix caching shares the prefix's cache.
    Not installed here (it needs CUDA): ``pip install vllm`` on a GPU machine."""

    def __init__(self, model: str = "smollm2", *, temperature: float = 0.8, top_p: float = 1.0, max_step_tokens: int = 96,
                 max_tokens: int = 320, seed: int = 0, system_prompt: str = SYSTEM_PROMPT,
                 examples: Sequence[tuple[str, str]] = EXAMPLES, **_: Any):
        from prm.label.generate.vllm import vllm_usable

        if not vllm_usable():
            raise RuntimeError("generator 'vllm' needs vLLM installed and a CUDA GPU; use generator 'local' here")
        from vllm import LLM

        from prm.models.backbones import resolve

        self.llm = LLM(model=resolve(model), seed=seed, enable_prefix_caching=True)
        self.tokenizer = self.llm.get_tokenizer()
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.max_step_tokens, self.max_tokens = max_step_tokens, max_tokens
        self.system_prompt, self.examples = system_prompt, list(examples)
        self.tokens = 0

    def reset(self) -> None:
        """vLLM seeds every request with the same seed: nothing to restart."""

    def expand(self, problem: str, parents: Sequence[Partial], counts: Sequence[int], *, to_end: bool = False) -> list[list[Partial]]:
        from vllm import SamplingParams

        ids = self.tokenizer(chat_prompt(self.tokenizer, problem, self.system_prompt, self.examples), add_special_tokens=False)["input_ids"]
        children: list[list[Partial]] = [[] for _ in parents]
        for i, (p, c) in enumerate(zip(parents, counts)):
            if c == 0:
                continue
            room = max(1, self.max_tokens - len(p.token_ids))
            params = SamplingParams(n=c, temperature=self.temperature, top_p=self.top_p, seed=self.seed,
                                    max_tokens=room if to_end else min(room, self.max_step_tokens),
                                    stop=None if to_end else [STEP_SEPARATOR], include_stop_str_in_output=True)
            (res,) = self.llm.generate([{"prompt_token_ids": ids + list(p.token_ids)}], params, use_tqdm=False)
            for o in res.outputs:
                toks = list(o.token_ids)
                self.tokens += len(toks)
                all_ids = list(p.token_ids) + toks
                done = to_end or o.finish_reason == "length" and len(all_ids) >= self.max_tokens or (o.finish_reason == "stop" and o.stop_reason is None)
                done = done or extract_answer(o.text) is not None
                children[i].append(Partial(steps=list(p.steps) + _split_lines(o.text), token_ids=all_ids, done=done, tokens=p.tokens + len(toks)))
        return children


class SharedSamples:
    """Wraps a generator so that strategies that sample the same thing (majority, best-of-N and
    weighted majority all take N complete samples) see the same samples, generated once, as
    search-and-learn derives the three from one set of completions. Each strategy is charged the
    tokens of the samples it used (``tokens``), cached or not."""

    def __init__(self, gen: Generator):
        self.gen, self.tokens = gen, 0
        self._memo: dict[tuple, list[list[Partial]]] = {}
        self._calls: dict[str, int] = {}

    def reset(self) -> None:
        self.gen.reset()
        self._calls.clear()

    def expand(self, problem: str, parents: Sequence[Partial], counts: Sequence[int], *, to_end: bool = False) -> list[list[Partial]]:
        k = self._calls.get(problem, 0)
        self._calls[problem] = k + 1
        key = (problem, k, tuple(tuple(p.token_ids) for p in parents), tuple(counts), to_end)
        if key not in self._memo:
            self._memo[key] = self.gen.expand(problem, parents, counts, to_end=to_end)
        out = self._memo[key]
        self.tokens += sum(c.tokens - p.tokens for p, g in zip(parents, out) for c in g)
        return [[copy.deepcopy(c) for c in g] for g in out]


def make_generator(name: str, **kw: Any) -> Generator:
    """A search generator by name (``local`` or ``vllm``)."""
    return GENERATORS.get(name)(**kw)
