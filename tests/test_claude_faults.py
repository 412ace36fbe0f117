"""Faults on the Claude path, against a real HTTP server on 127.0.0.1: no reply is paid for twice
(``FakeAnthropic.billed`` counts what the API would charge), and an API that fails for good ends
in one line that says the work so far is kept."""

import json
import threading
import time
from dataclasses import dataclass

import pytest

from prm.label.claude import ClaudeAPIError, request_timeout
from prm.label.verify.claude import ClaudeVerifier

pytestmark = pytest.mark.api
KEY = "sk-ant-test-SECRET-123"
ITEMS = [
    ("What is 2+3?", ["2 + 3 = 5.", "The answer is 5."], "5"),
    ("What is 4*3?", ["4 * 3 = 13.", "The answer is 13."], "12"),
    ("What is 9-4?", ["9 - 4 = 5.", "The answer is 5."], "5"),
]
CLEAN = [[True, True], [False, True], [True, True]]


def make(fake_api, tmp_path, **kw):
    return ClaudeVerifier("claude-sonnet-4-6", api_key=KEY, base_url=fake_api.url, cache_path=tmp_path / "cache.jsonl", **kw)


def cache_rows(tmp_path):
    return [json.loads(x) for x in (tmp_path / "cache.jsonl").read_text().splitlines()]


def test_timeout_is_sized_from_max_tokens(fake_api, tmp_path):
    # the documented rule: max_tokens at half the SDK's planning speed (~36 tokens/s) plus a margin
    assert request_timeout(2048) >= 60 + 2048 / 36 * 2 - 1
    v = make(fake_api, tmp_path)
    assert v._client_options()["timeout"] == request_timeout(v.max_tokens)
    fake_api.delay = 1.0  # a slow but normal reply is waited for, not abandoned and bought again
    assert v.grade(*ITEMS[0]).step_correct == [True, True]
    assert fake_api.billed == v.usage.requests == 1


def test_a_too_short_timeout_pays_twice(fake_api, tmp_path):
    """What the sizing prevents: a timeout under the reply time abandons replies the API bills."""
    fake_api.delay = 0.6
    v = make(fake_api, tmp_path, timeout=0.2, max_retries=1)
    with pytest.raises(ClaudeAPIError, match="APITimeoutError"):
        v.grade(*ITEMS[0])
    time.sleep(0.8)
    assert fake_api.billed == 2 and v.usage.requests == 0


def test_retries_exhausted_keep_the_replies_in_flight(fake_api, tmp_path):
    fake_api.fail_matching = "What is 4*3?"  # this solution always gets a 500
    fake_api.delay = 0.4  # the other two are still in flight when its retries run out
    v = make(fake_api, tmp_path, max_retries=2)
    with pytest.raises(ClaudeAPIError) as e:
        v.grade_many(ITEMS)
    msg = str(e.value)
    assert "\n" not in msg and "after 2 retries" in msg and "HTTP 500" in msg
    assert "kept in" in msg and "rerun the same command to continue" in msg
    # the two replies in flight were awaited and kept, not cancelled and paid again
    assert fake_api.billed == 2 and len([r for r in cache_rows(tmp_path) if "value" in r]) == 2
    fake_api.fail_matching, fake_api.delay = None, 0.0
    again = make(fake_api, tmp_path)
    assert [g.step_correct for g in again.grade_many(ITEMS)] == CLEAN
    assert fake_api.billed == 3 and again.usage.cached == 2


def test_api_failure_is_one_error_line_from_a_script(fake_api, tmp_path):
    from prm.config import run

    @dataclass
    class Cfg:
        n: int = 1

    fake_api.fail_matching = "What is"

    def main(cfg):
        make(fake_api, tmp_path, max_retries=0).grade_many(ITEMS)

    with pytest.raises(SystemExit) as e:
        run(main, Cfg, argv=[])
    assert str(e.value.code).startswith("error: the Claude API failed") and "\n" not in str(e.value.code)


def test_a_reply_is_kept_before_its_reask_is_sent(fake_api, tmp_path):
    fake_api.script = ["bad_json", "slow"]  # the re-ask takes 1.5 s
    v = make(fake_api, tmp_path)
    t = threading.Thread(target=v.grade, args=ITEMS[0])
    t.start()
    while len(fake_api.requests) < 2:
        time.sleep(0.01)
    # a kill now would lose nothing already paid for: the unusable first reply is on disk
    assert [r.get("reply") for r in cache_rows(tmp_path)] == ["Sure! Step 1 looks fine {"]
    t.join()
    assert make(fake_api, tmp_path).grade(*ITEMS[0]).step_correct == [True, True] and fake_api.billed == 2


def test_rerun_after_a_lost_reask_pays_only_the_reask(fake_api, tmp_path):
    fake_api.script = ["bad_json", "500", "500"]  # the first reply is unusable, then the API fails
    with pytest.raises(ClaudeAPIError):
        make(fake_api, tmp_path, max_retries=1).grade(*ITEMS[0])
    assert fake_api.billed == 1
    again = make(fake_api, tmp_path)
    assert again.grade(*ITEMS[0]).step_correct == [True, True]
    assert fake_api.billed == 2 and again.usage.requests == 1  # the re-ask only
    assert fake_api.requests[-1]["messages"][1]["content"] == "Sure! Step 1 looks fine {"  # it shows the kept reply


def test_unlabeled_count_survives_a_rerun(fake_api, tmp_path):
    fake_api.script = ["bad_json", "bad_json"]
    v = make(fake_api, tmp_path)
    assert v.grade(*ITEMS[0]).step_correct == [None, None] and v.usage.unlabeled == 1
    again = make(fake_api, tmp_path)
    assert again.grade(*ITEMS[0]).step_correct == [None, None]
    assert again.usage.unlabeled == 1 and again.usage.requests == 0 and fake_api.billed == 2


def test_torn_cache_line_costs_one_request(fake_api, tmp_path, caplog):
    make(fake_api, tmp_path).grade_many(ITEMS)
    p = tmp_path / "cache.jsonl"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 30])  # killed while appending the third verdict
    again = make(fake_api, tmp_path)
    assert "dropped 1 unreadable line" in caplog.text
    assert [g.step_correct for g in again.grade_many(ITEMS)] == CLEAN
    assert again.usage.requests == 1 and fake_api.billed == 4
    assert len(make(fake_api, tmp_path).cache) == 3  # the repaired file reads whole


def test_batch_killed_after_reading_results_is_read_again_not_resent(fake_api, tmp_path, monkeypatch):
    v = make(fake_api, tmp_path, batch=True, poll_interval=0.01)

    def killed(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(v, "_received", killed)  # a kill right after the results came back
    with pytest.raises(KeyboardInterrupt):
        v.grade_many(ITEMS)
    grades = make(fake_api, tmp_path, batch=True, poll_interval=0.01).grade_many(ITEMS)
    assert [g.step_correct for g in grades] == CLEAN
    assert fake_api.batch_creates == 1 and len(fake_api.requests) == 3
