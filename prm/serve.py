"""A PRM behind HTTP (FastAPI + uvicorn), batching the solutions of concurrent requests.

Endpoints:

- ``GET /health``: the model, settings and batching counters.
- ``POST /score``: ``{"items": [{"problem": str, "steps": [str, ...]}, ...], "aggregator": "min"}``
  (an item may give ``"solution": str`` instead of ``steps``; it is split into steps the server's way)
  -> ``{"aggregator": "min", "results": [{"step_scores": [...], "score": float | null, "n_steps": int}]}``.
  ``step_scores[i]`` is P(step i correct); ``score`` aggregates them (null for a solution with no
  scored step); steps cut by the PRM's truncation get no score (``len(step_scores) < n_steps``).
- ``POST /get_reward``: OpenRLHF's remote reward model protocol (``--reward.remote_url
  http://host:port/get_reward``). OpenRLHF posts ``{"query": [prompt + response, decoded with special
  tokens], "prompts": [prompt], "labels": [label]}`` and reads ``rewards`` (advantages), ``scores``
  (dynamic filtering) and ``extra_logs`` (logged) from the reply, each a list with one value per
  query. The response is the query after its prompt (special tokens such as ``<|im_end|>`` removed),
  split into steps; the problem is the prompt's last user turn (`prm.rl.problem_from_chat`). With
  ``answer_weight > 0`` and labels (``--data.label_key answer``), reward = ``prm_weight * PRM score +
  answer_weight * [answer correct]`` (`prm.rl.mixed_reward`).

Batching: every request's solutions go onto one queue; a single worker takes what is queued, waits up
to ``max_wait_ms`` for more (until ``max_batch_items`` solutions), and scores them with ONE
`PRM.score_batch` call in a worker thread (the event loop keeps accepting requests meanwhile, so
requests arriving during a forward pass form the next batch). `PRM.score_batch` sorts them by
length and, on a CPU, cuts a batch where padding would pass 10% of its tokens: on a compute-bound
CPU a padded token costs what a real one does, so one padded pass over requests of different
lengths is slower than scoring them one by one.

Bad input (malformed JSON, missing or mistyped fields, an unknown aggregator, too many items, a
query that does not contain its prompt) gets a 4xx with ``{"error": "..."}`` naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prm.answers import is_correct
from prm.eval.aggregate import AGGREGATORS, aggregate
from prm.rl import PRMReward, mixed_reward, problem_from_chat

log = logging.getLogger(__name__)

# End-of-turn/sequence markers a policy's decoded text may carry (OpenRLHF decodes with them).
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "</s>", "<eos>", "<end_of_turn>", "<|end|>")
# Where the assistant's turn starts in a rendered prompt, when the query does not start with the prompt verbatim.
_ASSISTANT_START = ("<|im_start|>assistant\n", "<|start_header_id|>assistant<|end_header_id|>\n\n", "[/INST]")


@dataclass
class ServeSettings:
    aggregator: str = "min"
    split_mode: str = "auto"
    batch_size: int = 16  # solutions per forward pass inside one score_batch call
    max_wait_ms: float = 5.0  # how long the worker waits for more requests before scoring
    max_batch_items: int = 64  # solutions per score_batch call (a single larger request still goes whole)
    max_items_per_request: int = 1024
    empty_reward: float = 0.0  # OpenRLHF reward of a response with no step
    prm_weight: float = 1.0
    answer_weight: float = 0.0


class RequestError(ValueError):
    """A client's mistake: answered with a 4xx and this message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Batcher:
    """Collects (problem, steps) items from concurrent requests and scores them together."""

    def __init__(self, score_fn: Callable[[list[tuple[str, list[str]]]], list[list[float]]], max_wait_ms: float = 5.0, max_items: int = 64):
        self.score_fn, self.max_wait, self.max_items = score_fn, max_wait_ms / 1000.0, max_items
        self.calls = self.items = self.requests = 0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prm-score")  # one model, one caller

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=True)

    async def submit(self, items: list[tuple[str, list[str]]]) -> list[list[float]]:
        if not items:
            return []
        fut = asyncio.get_running_loop().create_future()
        self.requests += 1
        await self._queue.put((items, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            n = len(jobs[0][0])
            deadline = loop.time() + self.max_wait
            while n < self.max_items:
                try:  # what is already queued is taken at once; then wait out the rest of the window
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), left)
                    except TimeoutError:
                        break
                jobs.append(job)
                n += len(job[0])
            flat = [it for items, _ in jobs for it in items]
            try:
                scores = await loop.run_in_executor(self._pool, self.score_fn, flat)
            except Exception as e:  # a model failure fails these requests (500), not the server
                log.exception("scoring %d items failed", len(flat))
                for _, fut in jobs:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.calls += 1
            self.items += len(flat)
            i = 0
            for items, fut in jobs:
                if not fut.done():
                    fut.set_result(scores[i : i + len(items)])
                i += len(items)


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    problem: str
    steps: list[str] | None = None
    solution: str | None = None

class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Item] = Field(min_length=1)
    aggregator: str | None = None

class RewardRequest(BaseModel):  # OpenRLHF; extra fields it may add later are ignored
    query: list[str] = Field(min_length=1)
    prompts: list[str] | None = None
    labels: list[Any] | None = None  # gold answers (strings or numbers) or null


def response_of(query: str, prompt: str) -> str:
    """The policy's response inside an OpenRLHF query (prompt + response, decoded with special tokens)."""
    if query.startswith(prompt):
        resp = query[len(prompt) :]
    else:
        cut = max((query.rfind(m) + len(m) if m in query else -1) for m in _ASSISTANT_START)
        if cut < 0:
            raise RequestError("the query does not start with its prompt and has no assistant-turn marker to find the response by")
        resp = query[cut:]
    for m in END_MARKERS:
        resp = resp.replace(m, "")
    return resp


def _field_errors(exc: Any) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def build_app(prm: Any, settings: ServeSettings | None = None, model_name: str = "") -> Any:
    """The FastAPI app serving ``prm`` (anything with ``score_batch``)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    s = settings or ServeSettings()
    AGGREGATORS.get(s.aggregator)
    splitter = PRMReward(prm, s.aggregator, s.split_mode, s.batch_size, s.empty_reward)
    batcher = Batcher(lambda items: prm.score_batch(items, batch_size=s.batch_size), s.max_wait_ms, s.max_batch_items)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="PRM lab scoring server", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        json_error = any(e.get("type") == "json_invalid" for e in exc.errors())
        return JSONResponse({"error": ("malformed JSON: " if json_error else "bad request: ") + _field_errors(exc)}, status_code=400 if json_error else 422)

    @app.exception_handler(RequestError)
    async def _bad(request: Request, exc: RequestError):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    def _check_size(n: int) -> None:
        if n > s.max_items_per_request:
            raise RequestError(f"{n} items in one request; this server takes at most {s.max_items_per_request} (--max_items_per_request)", 413)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, "settings": asdict(s),
                "batching": {"requests": batcher.requests, "score_calls": batcher.calls, "items_scored": batcher.items}}

    @app.post("/score")
    async def score(req: ScoreRequest) -> dict:
        how = req.aggregator or s.aggregator
        if how not in AGGREGATORS:
            raise RequestError(f"aggregator: unknown '{how}'; known: {', '.join(AGGREGATORS.names())}")
        _check_size(len(req.items))
        items = []
        for i, it in enumerate(req.items):
            if (it.steps is None) == (it.solution is None):
                raise RequestError(f"items.{i}: give exactly one of 'steps' (a list of strings) or 'solution' (a string)")
            if it.steps is not None:
                empty = [j for j, x in enumerate(it.steps) if not x.strip()]
                if empty:
                    raise RequestError(f"items.{i}.steps.{empty[0]}: empty step; send only steps with text")
            items.append((it.problem, list(it.steps) if it.steps is not None else splitter.split(it.solution)))
        scores = await _score(items)
        return {"aggregator": how, "results": [{"step_scores": sc, "score": aggregate(sc, how) if sc else None, "n_steps": len(st)}
                                               for (_, st), sc in zip(items, scores)]}

    @app.post("/get_reward")
    async def get_reward(req: RewardRequest) -> dict:
        n = len(req.query)
        _check_size(n)
        for name in ("prompts", "labels"):
            got = getattr(req, name)
            if got is not None and len(got) != n:
                raise RequestError(f"{name}: {len(got)} values for {n} queries; send one per query")
        prompts = req.prompts or [""] * n
        items, texts = [], []
        for i, (q, p) in enumerate(zip(req.query, prompts)):
            try:
                resp = response_of(q, p) if p else q
            except RequestError as e:
                raise RequestError(f"query.{i}: {e}") from None
            texts.append(resp)
            items.append((problem_from_chat(p) if p else "", splitter.split(resp)))
        scores = await _score(items)
        prm_scores = [aggregate(sc, s.aggregator) if sc else s.empty_reward for sc in scores]
        labels = req.labels or [None] * n
        correct = [g is not None and str(g).strip() != "" and bool(is_correct(t, str(g))) for t, g in zip(texts, labels)] if s.answer_weight else [False] * n
        rewards = [mixed_reward(p, c, s.prm_weight, s.answer_weight) for p, c in zip(prm_scores, correct)]
        extra = {"prm_score": prm_scores, "prm_steps": [len(st) for _, st in items]}
        if s.answer_weight:
            extra["answer_correct"] = [float(c) for c in correct]
        return {"rewards": rewards, "scores": rewards, "extra_logs": extra}

    async def _score(items: list[tuple[str, list[str]]]) -> list[list[float]]:
        keep = [i for i, (_, st) in enumerate(items) if st]
        got = await batcher.submit([items[i] for i in keep])
        out: list[list[float]] = [[] for _ in items]
        for i, sc in zip(keep, got):
            out[i] = [float(x) for x in sc]
        return out

    return app


class BackgroundServer:
    """Run an app with uvicorn in a thread (tests, benchmarks): ``with BackgroundServer(app) as srv: srv.url``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on"))
        self.host = host
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() - t0 > 30:
                raise RuntimeError("the scoring server did not start")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)


def post_json(url: str, payload: Any, timeout: float = 60.0) -> tuple[int, Any]:
    """POST JSON with the standard library; (status, decoded JSON body) for 2xx and 4xx/5xx alike."""
    import json
    import urllib.error
    import urllib.request

    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, body.decode(errors="replace")


__all__ = ["ServeSettings", "Batcher", "build_app", "BackgroundServer", "post_json", "response_of", "RequestError"]
