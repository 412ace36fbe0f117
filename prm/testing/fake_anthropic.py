"""A real HTTP server on 127.0.0.1 that answers like the Anthropic Messages API, for tests.

Replies are scripted per request: a queue of actions ("429", "500", "529", "slow", "bad_json",
"short", "errored", "expired", or None for a normal answer). A normal grading answer grades each
step with the rules verifier; a normal generation answer (a request without a JSON schema) writes a
short solution from the problem's first two numbers (their sum on even variants, their product on
odd ones), so results are deterministic and mixed right and wrong. Every request body is recorded.
``billed`` counts the replies the server produced (what the real API charges for, whether or not the
client is still listening); ``delay`` adds seconds to every normal reply; a request whose text
contains ``fail_matching`` always gets a 500 (a solution the API keeps failing on).

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
                if action in ("429", "500", "529"):
                    return self.send_json(int(action), {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
                if action == "slow":
                    time.sleep(1.5)
                time.sleep(outer.delay)
                reply = outer.message(body, action, len(outer.requests))
                with outer.lock:
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
    def message(self, body: dict, action: str | None, n: int) -> dict:
        text = self.verdict(body, action) if "output_config" in body else self.solution(body)
        return {"id": f"msg_{n}", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 300, "cache_creation_input_tokens": 0}}

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
                else:
                    result = {"type": "succeeded", "message": self.message(r["params"], action, len(self.requests))}
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
