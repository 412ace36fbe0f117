"""What every Claude job shares: the API key, prices, usage and cost, an on-disk answer cache, a
budget, concurrency with retries, and the Message Batches API.

A job (`ClaudeJob`) maps items to requests: each item has a cache key, first messages, a parser
for the reply and, optionally, one re-ask when the reply does not parse. The grading verifier
(`prm.label.verify.claude`) and the solution generator (`prm.label.generate.claude`) are jobs.

- Requests run concurrently (``max_concurrency``); the SDK retries 408/409/429/5xx/529 and
  connection errors with backoff, honouring ``retry-after``.
- Every reply is appended to the on-disk cache as soon as it arrives, before anything else is done
  with it (a reply that needs a re-ask too, as a pending row), so a rerun — after a crash, a kill,
  Ctrl+C, ``max_cost_usd`` or an API outage — never pays twice. When one request fails for good
  (retries exhausted) or the budget runs out, no new request starts but the ones in flight are
  awaited and kept, then `ClaudeAPIError` (one line: the work so far is kept, rerun to continue)
  or `BudgetExceeded` is raised.
- The client's timeout is sized from ``max_tokens`` (`request_timeout`), so a normal reply is never
  abandoned and paid again.
- Prompt caching: a job whose system prompt is long enough for the model's prompt cache
  (`warms_cache`) sends its first request alone, since a cache entry exists only once its first
  reply has begun; the rest then read it at 0.1x. `estimate_usage` counts those reads and the one
  write, and `confirm_spend` prints them before paid work.
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
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prm.io import append_jsonl, read_appended, secret
from prm.label.prices import PRICES, cacheable, cost_usd
from prm.label.progress import progress

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-4-6"
MAX_BATCH_REQUESTS = 10_000  # per Message Batch (the API allows up to 100,000 or 256 MB)

# Client timeout. A request without streaming receives nothing until the whole reply is written,
# so the read timeout must cover the slowest normal reply: max_tokens output tokens at a slow
# generation speed, plus time to queue and read the prompt. A timeout shorter than that is the
# costly mistake: the API finishes and bills the abandoned request and the SDK's retry pays again
# (up to 1 + max_retries times for one slow reply). The SDK itself plans with 128,000 output
# tokens an hour (~36 tokens/s) when it decides a request is too long to send without streaming;
# we assume half that (busy hours) and a 60 s margin: grading (max_tokens 2048) gets 60 + 2048/18
# = 174 s, generation (1024) 117 s. Real grading replies are ~40 tokens a step (a few seconds).
SLOW_OUTPUT_TOKENS_PER_S = 18.0
TIMEOUT_MARGIN_S = 60.0


def request_timeout(max_tokens: int) -> float:
    """Seconds a client waits for one reply of at most ``max_tokens`` tokens (see above)."""
    return TIMEOUT_MARGIN_S + max_tokens / SLOW_OUTPUT_TOKENS_PER_S


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


class ClaudeAPIError(RuntimeError):
    """The API failed for good (retries exhausted, key refused, unknown model, no connection). Every
    answer received so far is in the cache; a rerun of the same command continues from there."""


def estimate_usage(tokens: Sequence[tuple[int, int]], system_tokens: int, model: str, batch: bool = False, prompt_cache: bool = True) -> dict:
    """Expected calls, tokens and USD for requests of (input, output) ``tokens`` sharing a system
    prompt of ``system_tokens``: with ``prompt_cache`` (a ``cache_control`` mark on it) written to
    the prompt cache once and read by every later request when it is long enough to be cached
    (`prm.label.prices.CACHE_MIN_TOKENS`), else paid in full by every request. In a Message Batch
    cache hits are best effort, so there the reads are what caching can save at most."""
    inp, out = sum(t[0] for t in tokens), sum(t[1] for t in tokens)
    cached = prompt_cache and cacheable(model, system_tokens) and bool(tokens)
    if cached:
        u = Usage(requests=len(tokens), input_tokens=inp, output_tokens=out, cache_read_tokens=(len(tokens) - 1) * system_tokens,
                  cache_write_tokens=system_tokens, batch=batch)
    else:
        u = Usage(requests=len(tokens), input_tokens=inp + len(tokens) * system_tokens, output_tokens=out, batch=batch)
    return {"calls": len(tokens), "input_tokens": u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
            "output_tokens": u.output_tokens, "cache_read_tokens": u.cache_read_tokens, "cache_write_tokens": u.cache_write_tokens,
            "system_tokens": system_tokens, "usd": u.cost_usd(model), "batch": batch}


def confirm_spend(est: dict, yes: bool, what: str = "grading") -> bool:
    """Print the estimate of paid work (`estimate_usage`); go on with ``yes`` or a 'y' typed at the
    prompt. Without a terminal and without ``yes`` it stops with one line asking for --yes."""
    usd = "unknown (model not in the price table)" if est["usd"] is None else f"${est['usd']:.2f}"
    usd += " (Message Batches: half price)" if est.get("batch") else ""
    cache = ""
    if est.get("cache_read_tokens"):
        cache = f" (of which ~{est['cache_read_tokens']:,} prompt-cache reads at 0.1x and ~{est['cache_write_tokens']:,} written at 1.25x)"
    elif est.get("system_tokens"):
        cache = f" (the ~{est['system_tokens']:,}-token instructions are paid by every call: not cached)"
    print(f"Claude {what}: {est['calls']} calls, ~{est['input_tokens']:,} input{cache} and ~{est['output_tokens']:,} output tokens, about {usd}")
    if yes:
        return True
    if not sys.stdin.isatty():
        raise SystemExit("error: paid API work needs confirmation: pass --yes")
    return input("Proceed? [y/N] ").strip().lower() in ("y", "yes")


def reply_text(msg: Any) -> str:
    return "".join(getattr(b, "text", "") for b in msg.content)


class ClaudeJob:
    """Base of Claude jobs (see the module docstring). Subclasses define the hooks below."""

    prompt_version = "v1"
    unit = "request"  # what the progress bar counts: one request per item
    prompt_cache = True  # its system prompt carries a cache_control mark (`estimate` counts cache reads where it is long enough)

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        cache_path: str | Path | None = None,
        max_concurrency: int = 8,
        max_retries: int = 4,
        timeout: float | None = None,
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
        # timeout=None: sized from the subclass's max_tokens when a client is made (`request_timeout`).
        self._client_kw = dict(api_key=key, base_url=base_url, max_retries=max_retries)
        self.timeout, self.max_retries = timeout, max_retries
        self.model, self.max_concurrency = model, max_concurrency
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache: dict[str, dict] = {}  # key -> final row (the parsed reply, or None: unlabeled)
        self.pending: dict[str, str] = {}  # key -> a first reply that did not parse (its re-ask is due)
        for row in read_appended(self.cache_path) if self.cache_path else []:
            if not isinstance(row, dict) or "key" not in row:
                continue
            if "value" in row:
                self.cache[row["key"]] = row
            elif isinstance(row.get("reply"), str) and row["key"] not in self.cache:
                self.pending[row["key"]] = row["reply"]
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
        return estimate_usage([self.estimate_one(it) for it in items], self.system_tokens(), self.model, self.batch, self.prompt_cache)

    def warms_cache(self) -> bool:
        """Whether requests share a cached prefix: then the first is sent alone, because a cache
        entry exists only once its first response has begun (concurrent first requests would each
        pay the 1.25x write)."""
        return self.prompt_cache and cacheable(self.model, self.system_tokens())

    def run(self, items: Sequence[Any], desc: str = "claude") -> list[Any]:
        """Results for ``items`` in input order: cached answers first, the rest asked (online or as
        a batch). A batch request that errored or expired gives None and is not cached."""
        keys = [self.key(it) for it in items]
        todo = {}
        for k, it in zip(keys, items):
            if k in self.cache:
                self.usage.cached += 1
                if self.cache[k]["value"] is None:  # unlabeled in an earlier run: still counted
                    self.usage.unlabeled += 1
            else:
                todo.setdefault(k, it)
        if todo and self.confirm is not None and not self.confirm(self.estimate(list(todo.values()))):
            raise BudgetExceeded("stopped before paid work")
        with progress(len(items), desc, self.unit) as bar:  # cached items count as done
            bar.update(len(items) - sum(1 for k in keys if k in todo))
            if todo:
                try:
                    if self.batch:
                        self._run_batch(todo, desc)
                    else:
                        asyncio.run(self._run_online(todo, desc))
                except self._anthropic.APIError as e:
                    raise ClaudeAPIError(self._failure(e)) from None
        return [self.result(self.cache[k], it) if k in self.cache else None for k, it in zip(keys, items)]

    def _client_options(self) -> dict:
        max_tokens = getattr(self, "max_tokens", 4096)
        return {**self._client_kw, "timeout": self.timeout if self.timeout is not None else request_timeout(max_tokens)}

    def _failure(self, e: Exception) -> str:
        """One line for an API failure: what failed, and that the work so far is kept."""
        status = getattr(e, "status_code", None)
        body = getattr(e, "body", None)
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and err.get("message"):
            detail = f"{err.get('type', 'error')}: {err['message']}"
        else:
            detail = str(getattr(e, "message", "") or e)
        detail = " ".join(detail.split())[:200]
        what = f"HTTP {status}" if status else type(e).__name__
        retried = f" after {self.max_retries} retries" if status is None or status in (408, 409, 429) or status >= 500 else ""
        kept = (f"every answer received so far is kept in {self.cache_path}; rerun the same command to continue"
                if self.cache_path else "no cache_path was set, so answers so far are not kept")
        hint = {401: " (check ANTHROPIC_API_KEY)", 403: " (check the key's permissions)", 404: " (check the model id)"}.get(status or 0, "")
        return f"the Claude API failed{retried}: {what}: {detail}{hint}; {kept}"

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
        self.pending.pop(key, None)
        if self.cache_path:
            append_jsonl(self.cache_path, row)

    def _next(self, item: Any, messages: list[dict], text: str, attempt: int) -> tuple[Any, list[dict] | None]:
        """Parse a reply; on a bad first reply, the messages of the re-ask (else None)."""
        value = self.parse(text, item)
        if value is None and attempt == 0:
            return None, self.reask(item, messages, text)
        return value, None

    def _received(self, key: str, item: Any, messages: list[dict], text: str, attempt: int) -> list[dict] | None:
        """Handle a reply the moment it arrives: persist it first (the final row, or the unparsable
        first reply as a pending row), so that no reply is ever paid for twice; then return the
        re-ask's messages, or None when the item is done."""
        value, retry = self._next(item, messages, text, attempt)
        if retry is None:
            self._store(key, item, value)
        else:
            self.pending[key] = text
            if self.cache_path:
                append_jsonl(self.cache_path, {"key": key, "model": self.model, "prompt_version": self.prompt_version, "reply": text})
        return retry

    def _first(self, key: str, item: Any) -> tuple[list[dict] | None, int]:
        """The messages to send for an item and their attempt number: the re-ask when an earlier
        run already received (and kept) an unusable first reply."""
        messages = self.messages(item)
        if key in self.pending:
            return self.reask(item, messages, self.pending[key]), 1
        return messages, 0

    async def _run_online(self, todo: dict[str, Any], desc: str) -> None:
        sem = asyncio.Semaphore(self.max_concurrency)
        client = self._anthropic.AsyncAnthropic(**self._client_options())
        stop: list[Exception] = []  # the first failure for good (API error or budget): no new requests

        async def one(key: str, item: Any) -> None:
            messages, attempt = self._first(key, item)
            if messages is None:  # a pending reply with no re-ask: nothing more to ask
                self._store(key, item, None)
            while messages is not None:
                async with sem:
                    if stop:
                        return
                    try:
                        self._check_budget()
                        msg = await client.messages.create(**self.params(messages))
                    except (self._anthropic.APIError, BudgetExceeded) as e:
                        # Cancelling the requests in flight would throw away replies already paid
                        # for: let them finish (and be kept), start no new ones, raise after.
                        stop.append(e)
                        return
                messages = self._received(key, item, messages, reply_text(msg), attempt)
                self.usage.add(msg.usage)
                attempt += 1
            bar.update()

        try:
            with progress(len(todo), desc, self.unit) as bar:
                items = list(todo.items())
                if self.warms_cache() and len(items) > 1:
                    await one(*items[0])  # writes the prompt cache; the rest read it
                    items = items[1:]
                await asyncio.gather(*(one(k, it) for k, it in items))
        finally:
            await client.close()
        if stop:
            raise stop[0]

    # --- Message Batches ---------------------------------------------------------------------
    def _batch_log(self) -> Path | None:
        return self.cache_path.with_name(self.cache_path.stem + ".batches.jsonl") if self.cache_path else None

    def _open_batches(self) -> dict[str, list[str]]:
        """Batches an earlier run submitted and did not finish reading: id -> custom_ids."""
        path, state = self._batch_log(), {}
        if path:
            for row in read_appended(path):
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
        client = self._anthropic.Anthropic(**self._client_options())
        try:
            send = self._affordable(todo)
            pending = {}
            for k, it in send.items():
                messages, attempt = self._first(k, it)
                if messages is None:
                    self._store(k, it, None)
                else:
                    pending[k] = (it, messages, attempt)
            while pending:
                replies, read = self._batch_round(client, {k: m for k, (_, m, _) in pending.items()}, f"{desc} (batch)",
                                                  self.unit if all(a == 0 for _, _, a in pending.values()) else "re-ask")
                again = {}
                for key, msg in replies.items():
                    item, messages, attempt = pending[key]
                    if msg is None:
                        self.usage.failed += 1
                        continue
                    retry = self._received(key, item, messages, reply_text(msg), attempt)
                    self.usage.add(msg.usage)
                    if retry is not None:
                        again[key] = (item, retry, attempt + 1)
                self._batches_done(read)  # only now: a kill before this re-reads the batch, never re-sends it
                pending = again
            if self.usage.failed:
                log.warning("%d batch requests errored or expired; they are not cached: rerun to retry them", self.usage.failed)
            if len(send) < len(todo):
                raise BudgetExceeded(f"--max_cost_usd {self.max_cost_usd} covers {len(send)} of {len(todo)} requests; "
                                     "their answers are cached, rerun with a larger budget to continue")
        finally:
            client.close()

    def _batches_done(self, ids: list[str]) -> None:
        log_path = self._batch_log()
        for bid in ids if log_path else []:
            append_jsonl(log_path, {"id": bid, "done": True})

    def _batch_round(self, client: Any, requests: dict[str, list[dict]], desc: str, unit: str) -> tuple[dict[str, Any], list[str]]:
        """Send ``requests`` (custom_id -> messages) as Message Batches, reusing open batches of an
        earlier run; wait for them; return custom_id -> message (None when errored/expired) and the
        ids of the batches read (the caller marks them done once their replies are stored)."""
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
        return out, list(open_batches)


def loads_or_none(text: str) -> Any | None:
    """``json.loads`` that answers None instead of raising (replies are untrusted)."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
