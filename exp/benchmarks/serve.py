"""The scoring server under concurrent load vs the scorer called in-process one request at a time.

Each request is one solution (problem + steps), the way an RL worker asks for one reward (OpenRLHF
sends one query per request). Schemes, alternated round by round on the same requests:

- ``in_process``: ``PRM.score_batch([item])`` per request, one after another (no HTTP).
- ``server_batched``: the FastAPI server (`prm.serve`) in its own process on 127.0.0.1, ``clients``
  threads sending requests over keep-alive connections; the server scores what arrives together
  (up to ``max_wait_ms`` of waiting, ``clients`` solutions per call).
  `PRM.score_batch` sorts them by length and, on a CPU, cuts a batch where padding would pass 10% of
  its tokens (a padded batch of 16 costs more than 16 single passes on a compute-bound CPU).
- ``server_unbatched``: the same server with batching off (one solution per call), which isolates
  what batching across requests buys from the cost of HTTP.

Reported per scheme: requests/s (requests / wall time of the round), p50/p95 latency (from
sending a request to its reply; in-process: the call), and CPU milliseconds per request (the
scoring process's user + system CPU time over the round: the server process, not the clients;
in-process: this process), which a machine shared with other jobs distorts far less than wall time. The server's scores are compared with the
in-process ones (they must agree). Each round is bounded in requests and seconds.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import multiprocessing as mp
import os
import statistics
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .common import spread

log = logging.getLogger(__name__)


def _serve(prm_dir: str, settings: dict, threads: int, port_q: Any, stop: Any) -> None:
    """Server process: load the PRM, listen on an ephemeral loopback port, report it, run until told to stop."""
    torch.set_num_threads(threads)
    from prm.models.prm import PRM
    from prm.serve import BackgroundServer, ServeSettings, build_app

    app = build_app(PRM.load(prm_dir), ServeSettings(**settings))
    with BackgroundServer(app) as srv:
        port_q.put(srv.port)
        stop.wait()


class ServerProcess:
    def __init__(self, prm_dir: Path, settings: Any, threads: int):
        ctx = mp.get_context("spawn")
        self._q, self._stop = ctx.Queue(), ctx.Event()
        self._proc = ctx.Process(target=_serve, args=(str(prm_dir), asdict(settings), threads, self._q, self._stop), daemon=True)

    def __enter__(self) -> ServerProcess:
        self._proc.start()
        self.port = self._q.get(timeout=300)
        return self

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self._proc.pid)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.terminate()


def _cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (all its threads); this one when ``pid`` is None."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime in clock ticks


def _percentile(v: list[float], q: float) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _summary(latencies: list[float], wall: float) -> dict:
    return {"requests": len(latencies), "requests_per_s": len(latencies) / wall, "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * _percentile(latencies, 0.95), "wall_s": wall}


def run_in_process(prm: Any, items: list, max_seconds: float) -> tuple[dict, list]:
    lat, scores = [], []
    t0, c0 = time.perf_counter(), _cpu_seconds()
    for it in items:
        t = time.perf_counter()
        scores.append(prm.score_batch([it])[0])
        lat.append(time.perf_counter() - t)
        if time.perf_counter() - t0 > max_seconds:
            break
    return _summary(lat, time.perf_counter() - t0) | {"cpu_ms_per_request": 1000 * (_cpu_seconds() - c0) / len(lat)}, scores


def run_clients(port: int, items: list, clients: int, max_seconds: float) -> tuple[dict, list]:
    """``clients`` threads, each with its own keep-alive connection, take the next request until all
    are sent or ``max_seconds`` passed."""
    bodies = [json.dumps({"items": [{"problem": p, "steps": st}]}).encode() for p, st in items]
    nxt, lock = iter(range(len(bodies))), threading.Lock()
    lat: list[float] = []
    scores: dict[int, list[float]] = {}
    errors: list[str] = []
    t0 = time.perf_counter()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while time.perf_counter() - t0 < max_seconds:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                t = time.perf_counter()
                conn.request("POST", "/score", body=bodies[i], headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                dt = time.perf_counter() - t
                if resp.status != 200:
                    errors.append(f"HTTP {resp.status}: {data[:200]!r}")
                    return
                with lock:
                    lat.append(dt)
                    scores[i] = json.loads(data)["results"][0]["step_scores"]
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"the server answered errors: {errors[:3]}")
    return _summary(lat, wall), [scores.get(i) for i in range(len(items))]


def _health(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/health")
    out = json.loads(conn.getresponse().read())
    conn.close()
    return out


def serve_benchmark(model: str, rows: list[dict], work: Path, clients: int = 16, requests: int = 256, rounds: int = 3, max_seconds: float = 60.0,
                    max_wait_ms: float = 5.0, random_init: bool = False, max_length: int = 256, seed: int = 0) -> dict:
    from prm.models.prm import PRM, PRMSpec
    from prm.serve import ServeSettings

    torch.manual_seed(seed)
    prm = PRM.from_backbone(model, PRMSpec(label_scheme="binary", max_length=max_length), use_pretrained=not random_init)
    prm.model.eval()
    prm_dir = work / "serve-prm"
    prm.save(prm_dir)
    prm = PRM.load(prm_dir)  # the very weights the server loads
    items = [(r["prompt"], r["completions"]) for r in rows][:requests]
    threads = torch.get_num_threads()
    # what arrives together in length-sorted forward passes (cut where padding would pass 10%); batching off
    servers = {"server_batched": ServeSettings(batch_size=clients, max_batch_items=clients, max_wait_ms=max_wait_ms),
               "server_unbatched": ServeSettings(batch_size=1, max_batch_items=1, max_wait_ms=0.0)}
    load_before = os.getloadavg()
    out: dict[str, Any] = {"model": model, "random_init": random_init, "clients": clients, "requests_per_round": len(items), "rounds": rounds,
                           "max_seconds_per_round": max_seconds, "torch_threads_per_process": threads,
                           "settings": {k: asdict(v) for k, v in servers.items()},
                           "steps_per_request": statistics.fmean(len(st) for _, st in items),
                           "tokens_per_request": statistics.fmean(len(prm.encode(p, st).input_ids) for p, st in items)}
    per: dict[str, list[dict]] = {"in_process": [], **{k: [] for k in servers}}
    diffs: list[float] = []
    with contextlib.ExitStack() as stack:
        procs = {k: stack.enter_context(ServerProcess(prm_dir, s, threads)) for k, s in servers.items()}
        # warm-up: first calls pay for allocation and lazy initialization
        run_in_process(prm, items[: min(4, len(items))], max_seconds)
        for srv in procs.values():
            run_clients(srv.port, items[: min(2 * clients, len(items))], clients, max_seconds)
        calls0 = {k: _health(srv.port)["batching"] for k, srv in procs.items()}
        for r in range(rounds):
            res, ref = run_in_process(prm, items, max_seconds)
            per["in_process"].append(res)
            for name, srv in procs.items():
                c0 = srv.cpu_seconds()
                res, got = run_clients(srv.port, items, clients, max_seconds)
                res["cpu_ms_per_request"] = 1000 * (srv.cpu_seconds() - c0) / res["requests"]
                per[name].append(res)
                diffs += [abs(a - b) for u, v in zip(ref, got) if u is not None and v is not None for a, b in zip(u, v)]
            log.info("round %d: %s", r + 1, {k: round(v[-1]["requests_per_s"], 1) for k, v in per.items()})
        calls1 = {k: _health(srv.port)["batching"] for k, srv in procs.items()}
    out["schemes"] = {k: {m: spread([x[m] for x in v]) for m in ("requests_per_s", "p50_ms", "p95_ms", "cpu_ms_per_request")} | {"requests_done": [x["requests"] for x in v]}
                      for k, v in per.items()}
    out["ratios"] = {}
    for name in servers:
        out["ratios"][f"{name}_vs_in_process"] = {
            "requests_per_s": spread([a["requests_per_s"] / b["requests_per_s"] for a, b in zip(per[name], per["in_process"])]),
            "p95_latency": spread([a["p95_ms"] / b["p95_ms"] for a, b in zip(per[name], per["in_process"])]),
            "cpu_per_request": spread([a["cpu_ms_per_request"] / b["cpu_ms_per_request"] for a, b in zip(per[name], per["in_process"])]),
        }
    for name in ("server_batched",):
        out["ratios"][f"{name}_vs_server_unbatched"] = {
            "requests_per_s": spread([a["requests_per_s"] / b["requests_per_s"] for a, b in zip(per[name], per["server_unbatched"])])}
    out["items_per_score_call"] = {k: (calls1[k]["items_scored"] - calls0[k]["items_scored"]) / max(1, calls1[k]["score_calls"] - calls0[k]["score_calls"])
                                   for k in servers}
    out["max_abs_score_diff"] = max(diffs) if diffs else None
    out["load_avg_1m"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    return out
