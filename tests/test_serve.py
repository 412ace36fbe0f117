"""The scoring server: a real uvicorn server on 127.0.0.1 (ephemeral port), a real HTTP client
(urllib), a tiny real PRM built from a config."""

import json
import threading
import urllib.request

import pytest
import torch

from prm.eval.aggregate import aggregate
from prm.models.prm import PRM, PRMSpec
from prm.serve import BackgroundServer, ServeSettings, build_app, post_json, response_of

PROBLEM = "Tom has 3 apples and buys 4 more. How many apples does he have?"
STEPS = ["He has 3 + 4 = 7 apples.", "The answer is: 7"]
CHATML = f"<|im_start|>system\nSolve.<|im_end|>\n<|im_start|>user\n{PROBLEM}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny_prm(tmp_path_factory):
    from exp.benchmarks.common import tiny_backbone

    d = tiny_backbone("llama", tmp_path_factory.mktemp("tiny") / "llama")
    torch.manual_seed(0)
    return PRM.from_backbone(str(d), PRMSpec(label_scheme="binary", separator="\n"), use_pretrained=False)


@pytest.fixture(scope="module")
def server(tiny_prm):
    app = build_app(tiny_prm, ServeSettings(aggregator="min", split_mode="lines", max_wait_ms=50, answer_weight=0.5), model_name="tiny")
    with BackgroundServer(app) as srv:
        yield srv


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, json.loads(r.read())


def test_score_matches_in_process_scores(server, tiny_prm):
    # step scores and aggregates equal score_batch; "solution" is split the server's way (lines)
    status, body = post_json(server.url + "/score", {"items": [
        {"problem": PROBLEM, "steps": STEPS},
        {"problem": PROBLEM, "solution": "\n".join(STEPS)},
        {"problem": PROBLEM, "steps": []},
    ], "aggregator": "prod"})
    assert status == 200 and body["aggregator"] == "prod"
    ref = tiny_prm.score_batch([(PROBLEM, STEPS)])[0]
    a, b, c = body["results"]
    assert a["step_scores"] == pytest.approx(ref, abs=1e-5) and a["score"] == pytest.approx(aggregate(ref, "prod"), abs=1e-5)
    assert b["step_scores"] == pytest.approx(ref, abs=1e-5) and b["n_steps"] == 2
    assert c == {"step_scores": [], "score": None, "n_steps": 0}  # no step: no score, no crash


def test_openrlhf_get_reward(server, tiny_prm):
    # OpenRLHF's remote RM request: query = prompt + response with special tokens, labels = gold answers
    resp = "\n".join(STEPS)
    payload = {"query": [CHATML + resp + "<|im_end|>", CHATML + "It is 8.\nThe answer is: 8<|im_end|>"],
               "prompts": [CHATML, CHATML], "labels": ["7", "7"]}
    status, body = post_json(server.url + "/get_reward", payload)
    assert status == 200 and set(body) == {"rewards", "scores", "extra_logs"}
    prm_score = aggregate(tiny_prm.score_batch([(PROBLEM, STEPS)])[0], "min")
    assert body["extra_logs"]["prm_score"][0] == pytest.approx(prm_score, abs=1e-5)
    assert body["extra_logs"]["answer_correct"] == [1.0, 0.0]
    # reward = prm_weight * PRM + answer_weight * correct
    assert body["rewards"][0] == pytest.approx(prm_score + 0.5, abs=1e-5) and body["rewards"] == body["scores"]
    assert body["extra_logs"]["prm_steps"] == [2, 2]


@pytest.mark.parametrize("query,prompt,expected", [
    # the query starts with the prompt: the rest, end markers removed
    (CHATML + "a\nb<|im_end|>", CHATML, "a\nb"),
    # the decoded prompt differs from the sent one (e.g. a BOS token): cut at the assistant marker
    ("<s>" + CHATML + "a<|im_end|>", CHATML, "a"),
])
def test_response_of(query, prompt, expected):
    assert response_of(query, prompt) == expected


@pytest.mark.parametrize("path,payload,status,message", [
    ("/score", b"{not json", 400, "malformed JSON"),  # broken JSON body
    ("/score", {"items": []}, 422, "items"),  # no items
    ("/score", {"items": [{"steps": ["a"]}]}, 422, "items.0.problem"),  # missing field, named
    ("/score", {"items": [{"problem": "p", "steps": "a"}]}, 422, "items.0.steps"),  # steps must be a list
    ("/score", {"items": [{"problem": "p"}]}, 400, "exactly one of 'steps'"),  # neither steps nor solution
    ("/score", {"items": [{"problem": "p", "steps": ["a", " "]}]}, 400, "items.0.steps.1: empty step"),  # empty step
    ("/score", {"items": [{"problem": "p", "steps": ["a"]}], "aggregator": "median"}, 400, "known: geomean, last"),  # unknown aggregator
    ("/score", {"items": [{"problem": "p", "steps": ["a"], "extra": 1}]}, 422, "items.0.extra"),  # unknown field
    ("/score", {"items": [{"problem": "p", "steps": ["a"]}] * 1025}, 413, "at most 1024"),  # too many items
    ("/get_reward", {"query": ["x"], "prompts": ["a", "b"]}, 400, "prompts: 2 values for 1 queries"),  # lengths differ
    ("/get_reward", {"query": ["no prompt here"], "prompts": ["the prompt"]}, 400, "query.0"),  # prompt not in query
    ("/get_reward", {"prompts": ["p"]}, 422, "query"),  # no query
])
def test_bad_requests_get_4xx_and_server_survives(server, path, payload, status, message):
    got, body = post_json(server.url + path, payload)
    assert got == status and message in body["error"], body
    assert _get(server.url + "/health")[1]["status"] == "ok"


def test_concurrent_requests_are_batched(server, tiny_prm):
    # 12 concurrent clients: each gets its own scores, and the server needed fewer score_batch calls than requests
    before = _get(server.url + "/health")[1]["batching"]
    results, errors = {}, []

    def client(i):
        steps = [f"Step {i}: {i} + 1 = {i + 1}.", f"The answer is: {i + 1}"]
        try:
            results[i] = (steps, post_json(server.url + "/score", {"items": [{"problem": PROBLEM, "steps": steps}]}))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    for steps, (status, body) in results.values():
        assert status == 200
        assert body["results"][0]["step_scores"] == pytest.approx(tiny_prm.score_batch([(PROBLEM, steps)])[0], abs=1e-5)
    after = _get(server.url + "/health")[1]["batching"]
    assert after["requests"] - before["requests"] == 12 and after["items_scored"] - before["items_scored"] == 12
    assert after["score_calls"] - before["score_calls"] < 12


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_script_end_to_end(tiny_prm, tmp_path):
    # the script itself: loads a saved PRM, listens on loopback, answers /score like the library
    import os
    import subprocess
    import sys
    import time

    tiny_prm.save(tmp_path / "prm")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "exp/serve_prm.py", "--model", str(tmp_path / "prm"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url, t0 = f"http://127.0.0.1:{port}", time.monotonic()
        while True:
            try:
                if _get(url + "/health")[1]["status"] == "ok":
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() - t0 < 120, proc.stdout.read() if proc.poll() is not None else "timeout"
                time.sleep(0.3)
        status, body = post_json(url + "/score", {"items": [{"problem": PROBLEM, "steps": STEPS}]})
        assert status == 200
        assert body["results"][0]["step_scores"] == pytest.approx(PRM.load(tmp_path / "prm").score_batch([(PROBLEM, STEPS)])[0], abs=1e-5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("flags,message", [
    (["--model", "no/such/dir"], "error: --model no/such/dir: no such"),  # missing model directory
    (["--model", ".", "--aggregator", "median"], "error: --aggregator unknown 'median'; known:"),  # unknown aggregator
    (["--model", ".", "--split_mode", "words"], "error: --split_mode unknown 'words'; known:"),  # unknown split mode
])
def test_serve_script_bad_flags(flags, message):
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "exp/serve_prm.py", *flags], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("lengths, batch_size, max_padding, expected", [
    ([1, 2, 3, 4, 5], 2, None, [(0, 2), (2, 4), (4, 5)]),  # no padding limit: fixed-size batches
    ([100, 101, 102, 150, 151, 200], 16, 0.1, [(0, 3), (3, 5), (5, 6)]),  # cut where padding would pass 10%
    ([100, 100, 100, 100], 3, 0.1, [(0, 3), (3, 4)]),  # equal lengths: only the batch size cuts
    ([], 4, 0.1, []),
])
def test_length_batches(lengths, batch_size, max_padding, expected):
    # the batched server's passes over requests of different lengths (PRM.score_batch on a CPU)
    from prm.models.prm import length_batches

    assert length_batches(lengths, batch_size, max_padding) == expected
