"""Prompt caching of the Claude grading instructions: long enough to be cached, modelled honestly by
the loopback fake API (no cache below the model's minimum, one write then reads), and shown in the
estimate printed before paid work."""

import threading

import anthropic
import pytest

from prm.label.claude import confirm_spend
from prm.label.prices import CACHE_MIN_TOKENS, CHARS_PER_TOKEN, cacheable
from prm.label.verify.claude import INSTRUCTIONS, ClaudeVerifier, estimate, parse_verdict, user_message
from prm.label.verify.claude_examples import EXAMPLES
from prm.testing import fake_anthropic

pytestmark = pytest.mark.api
KEY = "sk-ant-test"
SONNET = "claude-sonnet-4-6"
ITEMS = [(f"What is {a}+{b}?", [f"{a} + {b} = {a + b + (a % 2)}.", f"The answer is {a + b}."], str(a + b)) for a, b in [(2, 3), (4, 4), (5, 1), (7, 2), (8, 3)]]


def test_instructions_pass_the_cacheable_minimum_with_worked_examples():
    sys_t = len(INSTRUCTIONS) // CHARS_PER_TOKEN
    # past every priced model's minimum (4,096 for Haiku/Opus 4.5) with room for a tokenizer that counts differently
    assert sys_t >= 1.1 * max(CACHE_MIN_TOKENS.values()) and all(cacheable(m, sys_t) for m in CACHE_MIN_TOKENS)
    for ex in EXAMPLES:
        # each example is rendered like a live request, and its expected reply parses as a live reply would
        assert user_message(ex["problem"], ex["steps"], ex["gold"]) in INSTRUCTIONS
        i = INSTRUCTIONS.index(user_message(ex["problem"], ex["steps"], ex["gold"]))
        reply = INSTRUCTIONS[i:].split("Expected reply:\n", 1)[1].split("\n", 1)[0]
        assert parse_verdict(reply, len(ex["steps"])) == ([c for c, _ in ex["verdicts"]], ex["final"])
    assert any(not c for ex in EXAMPLES for c, _ in ex["verdicts"]) and any(all(c for c, _ in ex["verdicts"]) for ex in EXAMPLES)


def _ask(fake_api, model: str, system_text: str, marked: bool = True, client=None, barrier=None) -> dict:
    client = client or anthropic.Anthropic(api_key=KEY, base_url=fake_api.url, max_retries=0)
    block = {"type": "text", "text": system_text, **({"cache_control": {"type": "ephemeral"}} if marked else {})}
    if barrier is not None:
        barrier.wait()
    msg = client.messages.create(model=model, max_tokens=64, system=[block], messages=[{"role": "user", "content": "Approach 0.\n\nProblem:\nWhat is 2+2?"}])
    return msg.usage.model_dump()


@pytest.mark.parametrize(
    "model, chars, marked, cached",
    [
        (SONNET, 2100 * 4, True, True),  # past 2048 tokens: one write, then reads
        (SONNET, 1500 * 4, True, False),  # too short: never cached, no cache tokens at all
        ("claude-haiku-4-5", 2100 * 4, True, False),  # Haiku 4.5 caches only from 4096 tokens
        ("claude-sonnet-4-5", 1500 * 4, True, True),  # Sonnet 4.5 from 1024
        (SONNET, 2100 * 4, False, False),  # no cache_control mark: nothing cached
    ],
)
def test_fake_api_caches_only_long_enough_marked_prefixes(fake_api, model, chars, marked, cached):
    text = ("Grade every step. " * (chars // 18 + 1))[:chars]
    first, second = _ask(fake_api, model, text, marked), _ask(fake_api, model, text, marked)
    n = chars // 4
    if cached:
        assert (first["cache_creation_input_tokens"], first["cache_read_input_tokens"]) == (n, 0)
        assert (second["cache_creation_input_tokens"], second["cache_read_input_tokens"]) == (0, n)
        assert second["input_tokens"] < 20  # only what follows the cached prefix
    else:
        assert first["cache_read_input_tokens"] == second["cache_read_input_tokens"] == 0
        assert first["cache_creation_input_tokens"] == second["cache_creation_input_tokens"] == 0
        assert second["input_tokens"] >= n


def test_concurrent_first_requests_each_write_but_the_verifier_warms_the_cache_first(fake_api, tmp_path):
    # the API makes a cache entry only once the first reply is sent: requests racing it write too
    fake_api.delay = 2.0  # replies take 2 s: the three requests, sent at once, all arrive before the first reply
    text = "x" * (2100 * 4)
    clients, barrier = [anthropic.Anthropic(api_key=KEY, base_url=fake_api.url, max_retries=0) for _ in range(3)], threading.Barrier(3)
    threads = [threading.Thread(target=_ask, args=(fake_api, SONNET, text, True, c, barrier)) for c in clients]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(u["cache_creation_input_tokens"] > 0 for u in fake_api.usages) == 3
    # the verifier sends its first request alone, then the rest concurrently: one write, then reads
    # (sent all at once, replies taking 0.3 s, each would write)
    fake_api.delay = 0.3
    v = ClaudeVerifier(SONNET, api_key=KEY, base_url=fake_api.url, cache_path=tmp_path / "c.jsonl", max_concurrency=8)
    v.grade_many(ITEMS)
    sys_t = len(INSTRUCTIONS) // 4
    assert v.usage.cache_write_tokens == sys_t and v.usage.cache_read_tokens == (len(ITEMS) - 1) * sys_t


@pytest.mark.parametrize("model", [SONNET, "claude-haiku-4-5"])
def test_estimate_matches_what_the_api_reports_and_is_printed(fake_api, tmp_path, capsys, model):
    v = ClaudeVerifier(model, api_key=KEY, base_url=fake_api.url, cache_path=tmp_path / "c.jsonl", confirm=lambda e: confirm_spend(e, True))
    est = v.estimate(ITEMS)
    v.grade_many(ITEMS)
    u = v.usage
    # prompt-cache reads and writes are predicted exactly; all input within rounding
    assert (est["cache_read_tokens"], est["cache_write_tokens"]) == (u.cache_read_tokens, u.cache_write_tokens)
    assert est["input_tokens"] == pytest.approx(u.input_tokens + u.cache_read_tokens + u.cache_write_tokens, abs=len(ITEMS))
    out = capsys.readouterr().out
    assert u.cache_read_tokens > 0 and f"~{est['cache_read_tokens']:,} prompt-cache reads at 0.1x" in out


def test_caching_cuts_the_cost_of_the_same_instructions(fake_api, tmp_path):
    on = ClaudeVerifier(SONNET, api_key=KEY, base_url=fake_api.url, cache_path=tmp_path / "on.jsonl")
    off = ClaudeVerifier(SONNET, api_key=KEY, base_url=fake_api.url, cache_path=tmp_path / "off.jsonl", prompt_cache=False)
    assert [g.step_correct for g in on.grade_many(ITEMS)] == [g.step_correct for g in off.grade_many(ITEMS)]
    assert "cache_control" not in fake_api.requests[-1]["system"][0] and off.usage.cache_read_tokens == 0
    assert off.estimate(ITEMS)["usd"] == pytest.approx(off.usage.cost_usd(SONNET), rel=0.5)  # output tokens are estimated, not the fake's 20
    assert on.usage.cost_usd(SONNET) < 0.6 * off.usage.cost_usd(SONNET)


def test_estimate_of_a_prompt_below_the_minimum_pays_it_in_full(capsys):
    # the same items on a model whose minimum the instructions would miss: every call pays them
    from prm.label.claude import estimate_usage

    est = estimate_usage([(100, 50)] * 3, 3000, "claude-haiku-4-5")  # 3,000 < 4,096
    assert est["cache_read_tokens"] == 0 and est["input_tokens"] == 3 * 3100
    confirm_spend(est, True)
    assert "the ~3,000-token instructions are paid by every call: not cached" in capsys.readouterr().out
    assert estimate(ITEMS, SONNET)["cache_read_tokens"] == (len(ITEMS) - 1) * (len(INSTRUCTIONS) // CHARS_PER_TOKEN)


def test_fake_minimums_agree_with_the_price_table():
    # two copies of the documented minimums: the fake's (the "API") and the project's estimate
    assert fake_anthropic.CACHE_MIN_TOKENS == CACHE_MIN_TOKENS
