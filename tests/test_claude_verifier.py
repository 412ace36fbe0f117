"""The Claude verifier against a real HTTP server on 127.0.0.1 standing in for the API."""

import pytest

from prm.label.verify.claude import INSTRUCTIONS, ClaudeVerifier, parse_verdict

pytestmark = pytest.mark.api
KEY = "sk-ant-test-SECRET-123"
ITEMS = [
    ("What is 2+3?", ["2 + 3 = 5.", "The answer is 5."], "5"),
    ("What is 4*3?", ["4 * 3 = 13.", "The answer is 13."], "12"),
    ("What is 9-4?", ["9 - 4 = 5.", "The answer is 5."], "5"),
]


def make(fake_api, tmp_path, **kw):
    return ClaudeVerifier("claude-sonnet-4-6", api_key=KEY, base_url=fake_api.url, cache_path=tmp_path / "cache.jsonl", **kw)


def test_happy_path_one_request_per_solution(fake_api, tmp_path):
    v = make(fake_api, tmp_path)
    grades = v.grade_many(ITEMS)
    assert [g.step_correct for g in grades] == [[True, True], [False, True], [True, True]]
    assert len(fake_api.requests) == 3 and v.usage.requests == 3
    req = fake_api.requests[0]
    # grading instructions are a cached system prefix; verdicts are schema-constrained JSON
    assert req["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert req["output_config"]["format"]["type"] == "json_schema"
    assert "temperature" not in req
    assert fake_api.headers[0]["Authorization"] == f"Bearer {KEY}" and "anthropic-version" in fake_api.headers[0]
    # the first request writes the instructions to the prompt cache, the other two read them
    sys_t = len(INSTRUCTIONS) // 4
    u = v.usage
    assert (u.cache_write_tokens, u.cache_read_tokens, u.output_tokens) == (sys_t, 2 * sys_t, 60) and 0 < u.input_tokens < 100
    assert u.cost_usd("claude-sonnet-4-6") == pytest.approx((u.input_tokens * 3 + sys_t * 3.75 + 2 * sys_t * 0.3 + 60 * 15) / 1e6)


@pytest.mark.parametrize("error", ["429", "500", "529"])
def test_retries_then_success(fake_api, tmp_path, error):
    fake_api.script = [error, error]
    g = make(fake_api, tmp_path).grade(*ITEMS[0])
    assert g.step_correct == [True, True] and len(fake_api.requests) == 3


def test_timeout_is_retried(fake_api, tmp_path):
    fake_api.script = ["slow"]
    g = make(fake_api, tmp_path, timeout=0.5).grade(*ITEMS[1])
    assert g.step_correct == [False, True] and len(fake_api.requests) == 2


@pytest.mark.parametrize("bad", ["bad_json", "short"])
def test_malformed_verdict_reasks_once_then_unlabeled(fake_api, tmp_path, bad):
    fake_api.script = [bad]  # the re-ask gets a good answer
    v = make(fake_api, tmp_path)
    assert v.grade(*ITEMS[0]).step_correct == [True, True] and len(fake_api.requests) == 2
    fake_api.script = [bad, bad]  # twice bad: unlabeled, counted, never guessed
    g = v.grade(*ITEMS[2])
    assert g.step_correct == [None, None] and g.solution_correct is None and v.usage.unlabeled == 1


def test_rerun_never_pays_twice(fake_api, tmp_path):
    first = make(fake_api, tmp_path).grade_many(ITEMS[:2])  # "killed" after two solutions
    n = len(fake_api.requests)
    again = make(fake_api, tmp_path)
    grades = again.grade_many(ITEMS)
    assert len(fake_api.requests) == n + 1 and again.usage.cached == 2  # only the new solution
    assert [g.step_correct for g in grades[:2]] == [g.step_correct for g in first]
    assert [g.step_correct for g in grades] == [g.step_correct for g in make(fake_api, tmp_path / "fresh").grade_many(ITEMS)]


def test_api_key_never_written(fake_api, tmp_path):
    make(fake_api, tmp_path).grade_many(ITEMS)
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY not in f.read_text(errors="ignore")


def test_missing_key_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="needs ANTHROPIC_API_KEY"):
        ClaudeVerifier()


def test_parse_verdict():
    assert parse_verdict('{"steps": [{"step": 1, "correct": true, "reason": ""}], "final_answer_correct": false}', 1) == ([True], False)
    assert parse_verdict('{"steps": [], "final_answer_correct": false}', 1) is None
    assert parse_verdict("not json", 1) is None


def test_budget_and_confirmation(fake_api, tmp_path):
    from prm.label.verify.claude import BudgetExceeded, estimate

    est = estimate(ITEMS, "claude-sonnet-4-6")
    assert est["calls"] == 3 and est["usd"] > 0
    seen = []
    v = make(fake_api, tmp_path, confirm=lambda e: seen.append(e) or False)
    with pytest.raises(BudgetExceeded, match="before paid work"):
        v.grade_many(ITEMS)
    assert seen[0]["calls"] == 3 and not fake_api.requests  # nothing was sent
    # a budget smaller than one call: the first request goes, then the run stops, keeping it
    v = make(fake_api, tmp_path, max_cost_usd=1e-9, max_concurrency=1)
    with pytest.raises(BudgetExceeded, match="cached"):
        v.grade_many(ITEMS)
    assert len(fake_api.requests) == 1 and len(make(fake_api, tmp_path).cache) == 1


# --- Message Batches API ------------------------------------------------------------------------


def test_batch_api_matches_online_at_half_price(fake_api, tmp_path):
    online = make(fake_api, tmp_path / "online").grade_many(ITEMS)
    n = len(fake_api.requests)
    v = make(fake_api, tmp_path, batch=True, poll_interval=0.01)
    grades = v.grade_many(ITEMS)
    assert [g.step_correct for g in grades] == [g.step_correct for g in online]  # results come back reversed: matched by custom_id
    assert fake_api.batch_creates == 1 and len(fake_api.requests) == n + 3
    u, sys_t = v.usage, len(INSTRUCTIONS) // 4  # the online run above already wrote the prompt cache
    assert u.batch and u.cache_read_tokens == 3 * sys_t and u.cache_write_tokens == 0
    assert u.cost_usd("claude-sonnet-4-6") == pytest.approx(0.5 * (u.input_tokens * 3 + 3 * sys_t * 0.3 + 60 * 15) / 1e6)
    assert (tmp_path / "cache.batches.jsonl").is_file()
    assert make(fake_api, tmp_path, batch=True).grade_many(ITEMS) and fake_api.batch_creates == 1  # all cached now


def test_batch_reasks_bad_replies_in_a_second_batch(fake_api, tmp_path):
    fake_api.script = ["bad_json", None, None]
    v = make(fake_api, tmp_path, batch=True, poll_interval=0.01)
    grades = v.grade_many(ITEMS)
    assert fake_api.batch_creates == 2 and all(g.step_correct[0] is not None for g in grades)
    assert len(fake_api.requests[-1]["messages"]) == 3  # the re-ask shows the bad reply


def test_batch_errored_and_expired_are_retried_by_a_rerun(fake_api, tmp_path):
    fake_api.script = ["errored", None, "expired"]
    v = make(fake_api, tmp_path, batch=True, poll_interval=0.01)
    grades = v.grade_many(ITEMS)
    assert grades[0] is None and grades[2] is None and grades[1] is not None and v.usage.failed == 2
    again = make(fake_api, tmp_path, batch=True, poll_interval=0.01)
    grades = again.grade_many(ITEMS)
    assert all(g is not None for g in grades) and again.usage.cached == 1 and len(fake_api.requests) == 5


def test_batch_killed_while_waiting_is_picked_up_not_resent(fake_api, tmp_path, monkeypatch):
    import prm.label.claude

    def killed(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(prm.label.claude.time, "sleep", killed)
    with pytest.raises(KeyboardInterrupt):
        make(fake_api, tmp_path, batch=True).grade_many(ITEMS)
    assert fake_api.batch_creates == 1 and len(fake_api.requests) == 3
    monkeypatch.undo()
    grades = make(fake_api, tmp_path, batch=True, poll_interval=0.01).grade_many(ITEMS)
    assert fake_api.batch_creates == 1 and len(fake_api.requests) == 3  # nothing paid twice
    assert [g.step_correct for g in grades] == [[True, True], [False, True], [True, True]]


def test_batch_budget_sends_only_what_fits(fake_api, tmp_path):
    from prm.label.verify.claude import BudgetExceeded, estimate

    one = estimate(ITEMS[:1], "claude-sonnet-4-6", batch=True)["usd"]
    v = make(fake_api, tmp_path, batch=True, poll_interval=0.01, max_cost_usd=one * 1.01)
    with pytest.raises(BudgetExceeded, match="covers 1 of 3"):
        v.grade_many(ITEMS)
    assert len(fake_api.requests) == 1 and len(make(fake_api, tmp_path).cache) == 1
