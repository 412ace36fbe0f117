"""A real HTTP server on 127.0.0.1 that answers like the Anthropic Messages API, for tests.

Replies are scripted per request: a queue of actions ("429", "500", "529", "slow", "bad_json",
"short", or None for a normal answer). A normal answer grades each step with the rules verifier,
so results are deterministic. Every request body is recorded."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prm.verify.rules import check_step


class FakeAnthropic:
    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.script: list[str | None] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with outer.lock:
                    outer.requests.append(body)
                    outer.headers.append(dict(self.headers))
                    action = outer.script.pop(0) if outer.script else None
                if action in ("429", "500", "529"):
                    self.send_response(int(action))
                    self.send_header("content-type", "application/json")
                    self.send_header("retry-after-ms", "5")
                    self.end_headers()
                    self.wfile.write(json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}).encode())
                    return
                if action == "slow":
                    time.sleep(1.5)
                text = outer.verdict(body, action)
                reply = {"id": f"msg_{len(outer.requests)}", "type": "message", "role": "assistant", "model": body["model"],
                         "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                         "usage": {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 300, "cache_creation_input_tokens": 0}}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def verdict(body: dict, action: str | None) -> str:
        user = body["messages"][0]["content"]
        steps = re.findall(r"^Step \d+: (.*)$", user, flags=re.M)
        if action == "bad_json":
            return "Sure! Step 1 looks fine {"
        verdicts = [check_step(s).verdict is not False for s in steps]
        if action == "short":
            verdicts = verdicts[:-1]
        return json.dumps({"steps": [{"step": i + 1, "correct": v, "reason": "checked"} for i, v in enumerate(verdicts)], "final_answer_correct": True})

    def close(self):
        self.server.shutdown()
        self.server.server_close()
