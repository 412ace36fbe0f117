"""What every Claude job shares: the API key, prices, usage and cost, an on-disk answer cache, a
budget, concurrency with retries, and the Message Batches API.

A job (`ClaudeJob`) maps items to requests: each item has a cache key, first messages, a parser
for the reply and, optionally, one re-ask when the reply does not parse. The grading verifier
(`prm.label.verify.claude`) and the solution generator (`prm.label.generate.claude`) are jobs.

- Requests run concurrently (``max_concurrency``); the SDK retries 408/409/429/5xx/529 and
  connection errors with backoff, honouring ``retry-after``.
- Every answer is appended to the on-disk cache as soon as it arrives, so a rerun — after a crash,
  Ctrl+C or ``max_cost_usd`` — never pays twice.
- ``batch=True`` sends the uncached requests through the Message Batches API (half price, results
  within 24 hours). Submitted batch ids are written next to the cache before waiting, so a killed
  run, rerun, picks its batches up again instead of paying for them twice. Results are matched to
  requests by ``custom_id`` (the cache key), never by order.
- The API key comes from the environment or a ``.env`` file and is never written anywhere.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prm.io import append_jsonl, iter_json_rows, secret
from prm.label.prices import PRICES, cacheable, cost_usd
from prm.label.progress import progress

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-4-6"
MAX_BATCH_REQUESTS = 10_000  # per Message Batch (the API allows up to 100,000 or 256 MB)


def load_dotenv_key() -> str | None:
    """``ANTHROPIC_API_KEY`` from the environment, else from a ``.env`` file in the working dir."""
    return secret("ANTHROPIC_API_KEY")


@dataclass
class Usage:
    requests: int = 0
    cached: int = 0  # answered from the on-disk cache, no request
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    unlabeled: int = 0  # items whose reply could not be read after one re-ask
    failed: int = 0  # batch requests that errored or expired: not cached, a rerun retries them
    batch: bool = False  # sent through the Message Batches API (half price)

    def add(self, u: Any) -> None:
        self.requests += 1
        self.input_tokens += getattr(u, "input_tokens", 0) or 0
        self.output_tokens += getattr(u, "output_tokens", 0) or 0
        self.cache_read_tokens += getattr(u, "cache_read_input_tokens", 0) or 0
        self.cache_write_tokens += getattr(u, "cache_creation_input_tokens", 0) or 0

    def cost_usd(self, model: str) -> float | None:
        return cost_usd(model, self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_tokens, self.batch)

    def as_dict(self, model: str) -> dict:
        return {**self.__dict__, "model": model, "cost_usd": self.cost_usd(model)}


class BudgetExceeded(RuntimeError):
    """Raised when the next request would go past ``max_cost_usd``; all answers so far are cached."""


def estimate_usage(tokens: Sequence[tuple[int, int]], system_tokens: int, model: str, batch: bool = False) -> dict:
    """Expected calls, tokens and USD for requests of (input, output) ``tokens`` sharing a system
    prompt of ``system_tokens``: written to the prompt cache once and read afterwards when it is
    long enough to be cached (`prm.label.prices.CACHE_MIN_TOKENS`), else paid in full by every request."""
    inp, out = sum(t[0] for t in tokens), sum(t[1] for t in tokens)
    if cacheable(model, system_tokens):
        u = Usage(requests=len(tokens), input_tokens=inp, output_tokens=out, cache_read_tokens=max(0, len(tokens) - 1) * system_tokens,
                  cache_write_tokens=system_tokens if tokens else 0, batch=batch)
    else:
        u = Usage(requests=len(tokens), input_tokens=inp + len(tokens) * system_tokens, output_tokens=out, batch=batch)
    return {"calls": len(tokens), "input_tokens": u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
            "output_tokens": u.output_tokens, "usd": u.cost_usd(model), "batch": batch}


def reply_text(msg: Any) -> str:
    return "".join(getattr(b, "text", "") for b in msg.content)


class ClaudeJob:
    """Base of Claude jobs (see the module docstring). Subclasses define the hooks below."""

    prompt_version = "v1"
    unit = "request"  # what the progress bar counts: one request per item

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        cache_path: str | Path | None = None,
        max_concurrency: int = 8,
        max_retries: int = 4,
        timeout: float = 120.0,
        api_key: str | None = None,
        base_url: str | None = None,
        max_cost_usd: float | None = None,
        confirm: Callable[[dict], bool] | None = None,
        batch: bool = False,
        poll_interval: float = 30.0,
    ):
        import anthropic

        key = api_key or load_dotenv_key()
        if not key:
            raise RuntimeError(f"the {type(self).__name__} needs ANTHROPIC_API_KEY (environment or .env)")
        self._anthropic = anthropic
        # The async client is made inside each event loop: its connection pool belongs to that loop.
        self._client_kw = dict(api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout)
        self.model, self.max_concurrency = model, max_concurrency
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache: dict[str, dict] = {}
        if self.cache_path and self.cache_path.is_file():
            self.cache = {row["key"]: row for _, row in iter_json_rows(self.cache_path)}
        self.usage = Usage(batch=batch)
        self.max_cost_usd, self.confirm = max_cost_usd, confirm
        self.batch, self.poll_interval = batch, poll_interval

    # --- hooks -------------------------------------------------------------------------------
    def key(self, item: Any) -> str:
        raise NotImplementedError

    def messages(self, item: Any) -> list[dict]:
        raise NotImplementedError

    def params(self, messages: list[dict]) -> dict:
        """Request parameters (model, system, max_tokens, ...) for ``messages``."""
        raise NotImplementedError

    def parse(self, text: str, item: Any) -> Any | None:
        """The reply's content, or None when it is unusable (then one re-ask, if `reask` gives one)."""
        raise NotImplementedError

    def reask(self, item: Any, messages: list[dict], text: str) -> list[dict] | None:
        return None

    def estimate_one(self, item: Any) -> tuple[int, int]:
        """Expected (input, output) tokens of the item's request, cached system prompt excluded."""
        raise NotImplementedError

    def system_tokens(self) -> int:
        return 0

    def result(self, row: dict, item: Any) -> Any:
        """What `run` returns for a cached row (``row["value"]`` is the parsed reply or None)."""
        return row["value"]

    # --- running -----------------------------------------------------------------------------
    def estimate(self, items: Sequence[Any]) -> dict:
        return estimate_usage([self.estimate_one(it) for it in items], self.system_tokens(), self.model, self.batch)

    def run(self, items: Sequence[Any], desc: str = "claude") -> list[Any]:
        """Results for ``items`` in input order: cached answers first, the rest asked (online or as
        a batch). A batch request that errored or expired gives None and is not cached."""
        keys = [self.key(it) for it in items]
        todo = {}
        for k, it in zip(keys, items):
            if k in self.cache:
                self.usage.cached += 1
            else:
                todo.setdefault(k, it)
        if todo and self.confirm is not None and not self.confirm(self.estimate(list(todo.values()))):
            raise BudgetExceeded("stopped before paid work")
        with progress(len(items), desc, self.unit) as bar:  # cached items count as done
            bar.update(len(items) - sum(1 for k in keys if k in todo))
            if todo:
                if self.batch:
                    self._run_batch(todo, desc)
                else:
                    asyncio.run(self._run_online(todo, desc))
        return [self.result(self.cache[k], it) if k in self.cache else None for k, it in zip(keys, items)]

    def _spent(self) -> float | None:
        return self.usage.cost_usd(self.model)

    def _check_budget(self) -> None:
        spent = self._spent()
        if self.max_cost_usd is not None and spent is not None and spent >= self.max_cost_usd:
            raise BudgetExceeded(f"spent ${spent:.2f} of --max_cost_usd {self.max_cost_usd}; every answer so far is cached, "
                                 "rerun with a larger budget to continue")

    def _store(self, key: str, item: Any, value: Any) -> None:
        if value is None:
            self.usage.unlabeled += 1
        row = {"key": key, "model": self.model, "prompt_version": self.prompt_version, "value": value}
        self.cache[key] = row
        if self.cache_path:
            append_jsonl(self.cache_path, row)

    def _next(self, item: Any, messages: list[dict], text: str, attempt: int) -> tuple[Any, list[dict] | None]:
        """Parse a reply; on a bad first reply, the messages of the re-ask (else None)."""
        value = self.parse(text, item)
        if value is None and attempt == 0:
            return None, self.reask(item, messages, text)
        return value, None

    async def _run_online(self, todo: dict[str, Any], desc: str) -> None:
        sem = asyncio.Semaphore(self.max_concurrency)
        client = self._anthropic.AsyncAnthropic(**self._client_kw)

        async def one(key: str, item: Any) -> None:
            messages: list[dict] | None = self.messages(item)
            value, attempt = None, 0
            while messages is not None:
                async with sem:
                    self._check_budget()
                    msg = await client.messages.create(**self.params(messages))
                self.usage.add(msg.usage)
                text = reply_text(msg)
                value, retry = self._next(item, messages, text, attempt)
                messages = retry
                attempt += 1
            self._store(key, item, value)
            bar.update()

        try:
            with progress(len(todo), desc, self.unit) as bar:
                await asyncio.gather(*(one(k, it) for k, it in todo.items()))
        finally:
            await client.close()

    # --- Message Batches ---------------------------------------------------------------------
    def _batch_log(self) -> Path | None:
        return self.cache_path.with_name(self.cache_path.stem + ".batches.jsonl") if self.cache_path else None

    def _open_batches(self) -> dict[str, list[str]]:
        """Batches an earlier run submitted and did not finish reading: id -> custom_ids."""
        path, state = self._batch_log(), {}
        if path and path.is_file():
            for _, row in iter_json_rows(path):
                if row.get("done"):
                    state.pop(row["id"], None)
                else:
                    state[row["id"]] = row["keys"]
        return state

    def _affordable(self, todo: dict[str, Any]) -> dict[str, Any]:
        """The leading part of ``todo`` whose estimated cost fits what is left of the budget."""
        if self.max_cost_usd is None or self.model not in PRICES:
            return todo
        left = self.max_cost_usd - (self._spent() or 0.0)
        out: dict[str, Any] = {}
        for k, it in todo.items():
            if self.estimate(list(out.values()) + [it])["usd"] > left:
                break
            out[k] = it
        return out

    def _run_batch(self, todo: dict[str, Any], desc: str) -> None:
        client = self._anthropic.Anthropic(**self._client_kw)
        try:
            send = self._affordable(todo)
            pending = {k: (it, self.messages(it)) for k, it in send.items()}
            for attempt in range(2):
                if not pending:
                    break
                replies = self._batch_round(client, {k: m for k, (_, m) in pending.items()}, f"{desc} (batch)",
                                            self.unit if attempt == 0 else "re-ask")
                again = {}
                for key, msg in replies.items():
                    item, messages = pending[key]
                    if msg is None:
                        self.usage.failed += 1
                        continue
                    self.usage.add(msg.usage)
                    text = reply_text(msg)
                    value, retry = self._next(item, messages, text, attempt)
                    if retry is not None:
                        again[key] = (item, retry)
                    else:
                        self._store(key, item, value)
                pending = again
            if self.usage.failed:
                log.warning("%d batch requests errored or expired; they are not cached: rerun to retry them", self.usage.failed)
            if len(send) < len(todo):
                raise BudgetExceeded(f"--max_cost_usd {self.max_cost_usd} covers {len(send)} of {len(todo)} requests; "
                                     "their answers are cached, rerun with a larger budget to continue")
        finally:
            client.close()

    def _batch_round(self, client: Any, requests: dict[str, list[dict]], desc: str, unit: str) -> dict[str, Any]:
        """Send ``requests`` (custom_id -> messages) as Message Batches, reusing open batches of an
        earlier run; wait for them; return custom_id -> message (None when errored/expired)."""
        log_path = self._batch_log()
        open_batches = {bid: keys for bid, keys in self._open_batches().items() if set(keys) & set(requests)}
        covered = {k for keys in open_batches.values() for k in keys}
        if open_batches:
            log.info("picking up %d Message Batch(es) submitted by an earlier run", len(open_batches))
        new = [k for k in requests if k not in covered]
        for i in range(0, len(new), MAX_BATCH_REQUESTS):
            chunk = new[i : i + MAX_BATCH_REQUESTS]
            self._check_budget()
            b = client.messages.batches.create(requests=[{"custom_id": k, "params": self.params(requests[k])} for k in chunk])
            open_batches[b.id] = chunk
            if log_path:  # written before waiting: a killed run finds its batch again
                append_jsonl(log_path, {"id": b.id, "keys": chunk, "done": False})
        out: dict[str, Any] = {}
        with progress(sum(len(v) for v in open_batches.values()), desc, unit) as bar:
            for bid in open_batches:
                for i in itertools.count():
                    b = client.messages.batches.retrieve(bid)
                    if b.processing_status == "ended":
                        break
                    time.sleep(min(self.poll_interval, 2.0**i))  # 1, 2, 4, ... s: small batches end fast
                for entry in client.messages.batches.results(bid):
                    if entry.custom_id in requests:
                        out[entry.custom_id] = entry.result.message if entry.result.type == "succeeded" else None
                        bar.update()
                if log_path:
                    append_jsonl(log_path, {"id": bid, "done": True})
        return out


def loads_or_none(text: str) -> Any | None:
    """``json.loads`` that answers None instead of raising (replies are untrusted)."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
