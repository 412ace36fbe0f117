"""A real HTTP server on 127.0.0.1 that answers like the Anthropic Messages API, for tests.

Replies are scripted per request: a queue of actions ("429", "500", "529", "slow", "bad_json",
"short", "errored", "expired", or None for a normal answer). A normal grading answer grades each
step with the rules verifier; a normal generation answer (a request without a JSON schema) writes a
short solution from the problem's first two numbers (their sum on even variants, their product on
odd ones), so results are deterministic and mixed right and wrong. Every request body is recorded.
``billed`` counts the replies the server produced (what the real API charges for, whether or not the
client is still listening); ``delay`` adds seconds to every normal reply; a request whose text
contains ``fail_matching`` always gets a 500 (a solution the API keeps failing on). A critic request
(a solution tagged ``<paragraph_i>`` as in ProcessBench's critic prompt) is answered with the index
of the first paragraph the rules verifier rejects, or -1, in ``\\boxed{}`` ("bad_json": no index).

Every reply reports 20 output tokens. Input usage and prompt caching are modelled as the API
documents them, with ~4 characters a token: the
prefix up to and including the last block marked ``cache_control`` (order: tools, system,
messages) is cached only when it reaches the model's minimum cacheable length (`CACHE_MIN_TOKENS`,
kept apart from the project's price table so a wrong entry there shows in tests). The first request
with such a prefix reports it as ``cache_creation_input_tokens``, later ones as
``cache_read_input_tokens``, and ``input_tokens`` counts only what follows the prefix; a shorter
prefix reports no cache tokens at all. As in the API, the entry exists only once the first reply
is being sent, so requests that arrive before that each write the cache too. Entries do not expire
(the real time-to-live is 5 minutes from last use).

Message Batches: POST /v1/messages/batches stores the requests; the first GET of a batch says
``in_progress``, the next ``ended``; its results (JSONL) answer each request like the Messages
endpoint would, so scripted actions apply to batch requests too ("errored", "expired" only there).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prm.label.verify.rules import check_step

STAMP = "2026-11-23T00:00:00Z"
CHARS_PER_TOKEN = 4
# Minimum cacheable prefix in tokens (Anthropic's prompt-caching documentation, 2026; Sonnet 4.6 as
# observed: 2048). A model not listed here gets DEFAULT_CACHE_MIN.
CACHE_MIN_TOKENS = {"claude-sonnet-4-6": 2048, "claude-sonnet-4-5": 1024, "claude-haiku-4-5": 4096, "claude-opus-4-5": 4096}
DEFAULT_CACHE_MIN = 1024


def _texts(content: object) -> list[tuple[str, bool]]:
    """(text, marked with cache_control) of each block of a system prompt or message content."""
    if isinstance(content, str):
        return [(content, False)]
    return [(b.get("text", "") if b.get("type", "text") == "text" else json.dumps(b), "cache_control" in b) for b in content or []]


def prompt_blocks(body: dict) -> list[tuple[str, bool]]:
    """Every block of a request in prompt order (tools, system, messages) with its cache mark."""
    blocks = [(json.dumps(t), "cache_control" in t) for t in body.get("tools") or []]
    blocks += _texts(body.get("system") or [])
    for m in body["messages"]:
        blocks += _texts(m["content"])
    return blocks


def cached_prefix(body: dict) -> tuple[str, int, int]:
    """(prefix text, prefix tokens, total tokens) of a request: the prefix ends with its last block
    marked ``cache_control`` ("" when none)."""
    blocks = prompt_blocks(body)
    last = max((i for i, (_, marked) in enumerate(blocks) if marked), default=-1)
    prefix = "".join(t for t, _ in blocks[: last + 1])
    total = sum(len(t) for t, _ in blocks) // CHARS_PER_TOKEN
    return prefix, len(prefix) // CHARS_PER_TOKEN, total


class FakeAnthropic:
    def __init__(self):
        self.requests: list[dict] = []  # Messages requests, batch requests included (their params)
        self.headers: list[dict] = []
        self.script: list[str | None] = []
        self.batches: dict[str, dict] = {}
        self.batch_creates = 0
        self.billed = 0
        self.delay = 0.0
        self.fail_matching: str | None = None
        self.prompt_cache: set[tuple[str, int]] = set()  # (model, hash of a cached prefix)
        self.usages: list[dict] = []  # the usage of every reply, in the order they were sent
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def send_json(self, status: int, obj: dict | str, ctype: str = "application/json") -> None:
                data = (obj if isinstance(obj, str) else json.dumps(obj)).encode()
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                if status != 200:
                    self.send_header("retry-after-ms", "5")
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if self.path.startswith("/v1/messages/batches"):
                    return self.send_json(200, outer.create_batch(body))
                with outer.lock:
                    outer.requests.append(body)
                    outer.headers.append(dict(self.headers))
                    action = outer.script.pop(0) if outer.script else None
                    if outer.fail_matching and outer.fail_matching in json.dumps(body["messages"], ensure_ascii=False):
                        action = "500"
                    hit = outer.cache_hit(body)  # looked up on arrival; written when the reply goes out
                if action in ("429", "500", "529"):
                    return self.send_json(int(action), {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
                if action == "slow":
                    time.sleep(1.5)
                time.sleep(outer.delay)
                with outer.lock:
                    reply = outer.message(body, action, len(outer.requests), hit)
                    outer.billed += 1
                try:
                    self.send_json(200, reply)
                except OSError:  # the client gave up (timeout, cancelled): the work is billed all the same
                    pass

            def do_GET(self):
                m = re.match(r"^/v1/messages/batches/([\w-]+)(/results)?", self.path)
                if not m or m.group(1) not in outer.batches:
                    return self.send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})
                batch = outer.batches[m.group(1)]
                if m.group(2):
                    return self.send_json(200, "\n".join(json.dumps(r) for r in batch["results"]) + "\n", "application/binary")
                batch["polls"] += 1
                self.send_json(200, outer.batch_object(m.group(1)))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # --- Messages ------------------------------------------------------------------------------
    def cache_hit(self, body: dict) -> bool:
        prefix, n, _ = cached_prefix(body)
        return n >= CACHE_MIN_TOKENS.get(body["model"], DEFAULT_CACHE_MIN) and (body["model"], hash(prefix)) in self.prompt_cache

    def usage(self, body: dict, hit: bool) -> dict:
        """The reply's usage (see the module docstring); a cacheable prefix is stored on the way out."""
        prefix, n, total = cached_prefix(body)
        out = {"input_tokens": total, "output_tokens": 20, "cache_read_input_tokens": 0,
               "cache_creation_input_tokens": 0}
        if n >= CACHE_MIN_TOKENS.get(body["model"], DEFAULT_CACHE_MIN):
            out["input_tokens"] = total - n
            out["cache_read_input_tokens" if hit else "cache_creation_input_tokens"] = n
            self.prompt_cache.add((body["model"], hash(prefix)))
        self.usages.append(out)
        return out

    def message(self, body: dict, action: str | None, n: int, hit: bool) -> dict:
        user = body["messages"][0]["content"]
        if "output_config" in body:
            text = self.verdict(body, action)
        elif isinstance(user, str) and "<paragraph_0>" in user:
            text = self.critique(user, action)
        else:
            text = self.solution(body)
        return {"id": f"msg_{n}", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": self.usage(body, hit)}

    @staticmethod
    def critique(user: str, action: str | None) -> str:
        """A critic's reply: the first paragraph the rules verifier rejects, or -1, boxed."""
        if action == "bad_json":
            return "Every paragraph needs a closer look; I cannot decide."
        paragraphs = re.findall(r"<paragraph_(\d+)>\n(.*?)\n</paragraph_\1>", user, flags=re.DOTALL)
        first = next((int(i) for i, p in paragraphs if check_step(p).verdict is False), -1)
        why = f"Paragraph {first} contains a wrong computation." if first >= 0 else "Every paragraph is correct."
        return f"{why}\n\nThe earliest error is in paragraph \\boxed{{{first}}}."

    @staticmethod
    def verdict(body: dict, action: str | None) -> str:
        user = body["messages"][0]["content"]
        steps = re.findall(r"^Step \d+: (.*)$", user, flags=re.MULTILINE)
        if action == "bad_json":
            return "Sure! Step 1 looks fine {"
        verdicts = [check_step(s).verdict is not False for s in steps]
        if action == "short":
            verdicts = verdicts[:-1]
        return json.dumps({"steps": [{"step": i + 1, "correct": v, "reason": "checked"} for i, v in enumerate(verdicts)], "final_answer_correct": True})

    @staticmethod
    def solution(body: dict) -> str:
        user = body["messages"][0]["content"]
        variant = int(re.search(r"Approach (\d+)", user).group(1))
        nums = [int(x) for x in re.findall(r"\d+", user.split("Problem:")[-1])][:2] + [1, 1]
        a, b = nums[0], nums[1]
        if variant % 2 == 0:
            return f"The two amounts are {a} and {b}.\n\n{a} + {b} = {a + b}\n\nThe answer is: {a + b}"
        return f"The two amounts are {a} and {b}.\n\n{a} * {b} = {a * b}\n\nThe answer is: {a * b}"

    # --- Message Batches -------------------------------------------------------------------------
    def create_batch(self, body: dict) -> dict:
        with self.lock:
            self.batch_creates += 1
            bid = f"msgbatch_{self.batch_creates:04d}"
            results = []
            for r in body["requests"]:
                self.requests.append(r["params"])
                action = self.script.pop(0) if self.script else None
                if action == "errored":
                    result = {"type": "errored", "error": {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}}
                elif action == "expired":
                    result = {"type": "expired"}
                else:  # requests of a batch run one after another here: the first writes the cache
                    result = {"type": "succeeded", "message": self.message(r["params"], action, len(self.requests), self.cache_hit(r["params"]))}
                    self.billed += 1
                results.append({"custom_id": r["custom_id"], "result": result})
            self.batches[bid] = {"results": results[::-1], "polls": 0}  # out of order on purpose: match by custom_id
        return self.batch_object(bid)

    def batch_object(self, bid: str) -> dict:
        b = self.batches[bid]
        ended = b["polls"] >= 2  # creation answers in_progress, the first retrieve too, then ended
        kinds = [r["result"]["type"] for r in b["results"]]
        return {"id": bid, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "request_counts": {"processing": 0 if ended else len(kinds), "succeeded": kinds.count("succeeded") if ended else 0,
                                   "errored": kinds.count("errored") if ended else 0, "canceled": 0,
                                   "expired": kinds.count("expired") if ended else 0},
                "created_at": STAMP, "expires_at": STAMP, "ended_at": STAMP if ended else None, "archived_at": None,
                "cancel_initiated_at": None, "results_url": f"{self.url}/v1/messages/batches/{bid}/results" if ended else None}

    def close(self):
        self.server.shutdown()
        self.server.server_close()
