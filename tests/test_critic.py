"""The LLM critic PRM (``claude:<model id>``) against the loopback fake API: ProcessBench's critic
prompt and reading, step scores, no repaid call on a rerun, the estimate printed and confirmed
first, a reply without an index, and the critic as the PRM of evaluate.py and search.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import pytest

from prm.config import ConfigError, parse
from prm.eval.processbench import first_error
from prm.models.critic import ClaudeCritic, critic_prompt, index_scores, parse_index
from prm.models.kinds import PRMLoadError
from prm.models.prm import load_prm

pytestmark = pytest.mark.api
KEY = "sk-ant-test"
MODEL = "claude-sonnet-4-6"
# (problem, steps, first wrong step): the fake critic finds arithmetic slips (the rules verifier)
ITEMS = [
    ("Ann has 30 apples and gives half away. How many are left?", ["5 * 6 = 30.", "30 / 2 = 16.", "The answer is 16."], 1),
    ("What is 5+6?", ["5 + 6 = 11.", "The answer is 11."], -1),
    ("What is (2+2)*3-5?", ["2 + 2 = 4.", "4 * 3 = 12.", "12 - 5 = 8."], 2),
]
PB_ROWS = [{"id": f"gsm8k-{i}", "generator": "m", "problem": p, "steps": st, "final_answer_correct": k == -1, "label": k}
           for i, (p, st, k) in enumerate(ITEMS)]
# a reasoning error the arithmetic check cannot see: the fake critic answers -1, a wrong prediction
PB_ROWS.append({"id": "gsm8k-3", "generator": "m", "problem": "Tom has 12 pens and loses 4. How many are left?",
                "steps": ["He gains 4 pens: 12 + 4 = 16.", "The answer is 16."], "final_answer_correct": False, "label": 0})


def make(fake_api, tmp_path, **kw) -> ClaudeCritic:
    return ClaudeCritic(MODEL, api_key=KEY, base_url=fake_api.url, cache_path=tmp_path / "critic.jsonl", yes=True, **kw)


def test_prompt_is_processbench_critic_template():
    p = critic_prompt("What is 1+1?", ["1 + 1 = 2.", "The answer is 2."])
    assert p.startswith("The following is a math problem and a solution (split into paragraphs, enclosed with tags and indexed from 0):")
    assert "[Math Problem]\n\nWhat is 1+1?\n\n[Solution]\n\n<paragraph_0>\n1 + 1 = 2.\n</paragraph_0>\n\n<paragraph_1>\nThe answer is 2.\n</paragraph_1>" in p
    assert p.endswith('return the index of -1 (which typically denotes "not found").\n\nPlease put your final answer (i.e., the index) in \\boxed{}.')


@pytest.mark.parametrize(
    "text, n, expected",
    [
        ("The error is in \\boxed{2}.", 4, 2),
        ("No error: \\boxed{-1}", 4, -1),
        ("First \\boxed{0}, on reflection \\boxed{ 3 }", 4, 3),  # the last box is the answer
        ("\\boxed{4}", 4, None),  # no paragraph 4 in a 4-paragraph solution
        ("\\boxed{-2}", 4, None),
        ("Paragraph 1 is wrong.", 4, None),  # no boxed index at all
        ("\\boxed{one}", 4, None),
    ],
)
def test_parse_index(text, n, expected):
    assert parse_index(text, n) == expected


@pytest.mark.parametrize(
    "indices, n, expected",
    [
        ([1], 3, [1.0, 0.0, 0.0]),  # one reply: steps before the error 1, from it on 0
        ([-1], 2, [1.0, 1.0]),
        ([0], 2, [0.0, 0.0]),
        ([2, -1, 0, 2], 3, [0.75, 0.75, 0.25]),  # votes: share of replies whose error lies after the step
    ],
)
def test_index_scores(indices, n, expected):
    assert index_scores(indices, n) == pytest.approx(expected)


def test_scores_and_rerun_pays_nothing(fake_api, tmp_path):
    critic = make(fake_api, tmp_path)
    scores = critic.score_batch([(p, st) for p, st, _ in ITEMS])
    assert scores == [[1.0, 0.0, 0.0], [1.0, 1.0], [1.0, 1.0, 0.0]]
    assert [first_error(s, 0.5) for s in scores] == [k for _, _, k in ITEMS]  # any threshold in (0, 1] reads the index back
    req = fake_api.requests[0]
    assert "<paragraph_0>" in req["messages"][0]["content"] and "system" not in req and "temperature" not in req
    assert critic.api_usage()["requests"] == 3 and critic.api_usage()["cost_usd"] > 0
    # a new critic on the same cache (a rerun) answers from disk: no request, same scores
    again = make(fake_api, tmp_path)
    assert again.score_batch([(p, st) for p, st, _ in ITEMS]) == scores and len(fake_api.requests) == 3
    assert again.api_usage()["requests"] == 0 and again.api_usage()["cached"] == 3


def test_samples_give_vote_shares(fake_api, tmp_path):
    critic = make(fake_api, tmp_path, samples=3)
    assert critic.score_steps(*ITEMS[0][:2]) == [1.0, 0.0, 0.0]  # the fake answers alike every time
    assert len(fake_api.requests) == 3 and len({r["messages"][0]["content"] for r in fake_api.requests}) == 1


def test_bad_reply_is_reasked_then_left_unscored_with_a_warning(fake_api, tmp_path, caplog):
    fake_api.script = ["bad_json"]  # the re-ask gets an index
    critic = make(fake_api, tmp_path)
    assert critic.score_steps(*ITEMS[0][:2]) == [1.0, 0.0, 0.0] and len(fake_api.requests) == 2
    assert "\\boxed{}" in fake_api.requests[1]["messages"][-1]["content"]
    fake_api.script = ["bad_json", "bad_json"]
    with caplog.at_level(logging.WARNING):
        assert critic.score_steps(*ITEMS[1][:2]) == []
    assert "1 of 1 solutions got no valid \\boxed{index}" in caplog.text and "count as wrong predictions" in caplog.text
    assert first_error([], 0.5) not in (-1, 0, 1)  # no score: never equal to a ProcessBench label
    assert critic.api_usage()["unlabeled"] == 1
    # kept as unusable: a rerun does not ask again
    assert make(fake_api, tmp_path).score_steps(*ITEMS[1][:2]) == [] and len(fake_api.requests) == 4


def test_estimate_is_printed_and_paid_work_needs_confirmation(fake_api, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    critic = ClaudeCritic(MODEL, api_key=KEY, base_url=fake_api.url, cache_path=tmp_path / "c.jsonl")  # no yes
    with pytest.raises(SystemExit, match="pass --yes"):
        critic.score_batch([(p, st) for p, st, _ in ITEMS])
    assert fake_api.requests == []  # nothing was sent
    assert "Claude critic (claude-sonnet-4-6): 3 calls, ~" in capsys.readouterr().out
    # declined at the prompt: stops before paid work
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda _: "n")
    from prm.label.claude import BudgetExceeded

    with pytest.raises(BudgetExceeded, match="before paid work"):
        ClaudeCritic(MODEL, api_key=KEY, base_url=fake_api.url).score_batch([(p, st) for p, st, _ in ITEMS])
    assert fake_api.requests == []
    # confirmed once, later calls of the same critic go on (search scores as it goes)
    monkeypatch.setattr("builtins.input", lambda _: "y")
    critic = ClaudeCritic(MODEL, api_key=KEY, base_url=fake_api.url)
    critic.score_batch([ITEMS[0][:2]])
    monkeypatch.setattr("builtins.input", lambda _: pytest.fail("asked twice"))
    critic.score_batch([ITEMS[1][:2]])
    assert len(fake_api.requests) == 2


def test_load_prm_names_the_critic(fake_api, tmp_path, monkeypatch):
    critic = load_prm(f"claude:{MODEL}", critic={"api_key": KEY, "base_url": fake_api.url, "yes": True})
    assert isinstance(critic, ClaudeCritic) and critic.spec.prm_kind == "critic" and critic.spec.backbone == f"claude:{MODEL}"
    with pytest.raises(PRMLoadError, match="give a Claude model id"):
        load_prm("claude:", critic={"api_key": KEY})
    with pytest.raises(PRMLoadError, match="--kind token_cls does not apply"):
        load_prm(f"claude:{MODEL}", "token_cls")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    with pytest.raises(PRMLoadError, match="needs ANTHROPIC_API_KEY"):
        load_prm(f"claude:{MODEL}")
    with pytest.raises(TypeError, match="no weights"):
        critic.save(tmp_path / "x")


@pytest.fixture
def api_env(fake_api, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_api.url)
    return fake_api


def test_evaluate_processbench_with_the_critic(api_env, tmp_path, capsys):
    from exp.evaluate import TYPES, main

    data = tmp_path / "pb.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PB_ROWS))
    argv = ["--model", f"claude:{MODEL}", "--task", "processbench", "--data", str(data), "--results_dir", str(tmp_path), "--run_name", "critic", "--yes"]
    m = main(*parse(TYPES, argv))
    assert "Claude critic (claude-sonnet-4-6): 4 calls" in capsys.readouterr().out  # printed once, before the paid work
    t = m["test"]["subsets"]["gsm8k"]
    # 2 of 3 first errors found (the reasoning error is missed), the correct solution kept
    assert (t["acc_error"], t["acc_correct"]) == (pytest.approx(2 / 3), 1.0) and m["test"]["threshold"] == 0.5
    assert m["api_usage"]["requests"] == 4 and len(api_env.requests) == 4
    preds = [json.loads(x) for x in (tmp_path / "evaluate" / "critic" / "predictions.jsonl").read_text().splitlines()]
    assert [p["predicted_first_error"] for p in preds] == [1, -1, 2, -1]
    # the same command again is answered from the run's cache: no request repaid, same metrics
    again = main(*parse(TYPES, argv))
    assert len(api_env.requests) == 4 and again["test"] == m["test"] and again["api_usage"]["requests"] == 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "claude:", "--task", "steps", "--data", "x.jsonl"], "needs a model id"),
        (["--model", f"claude:{MODEL}", "--kind", "token_cls", "--task", "steps", "--data", "x.jsonl"], "does not apply to an LLM critic"),
        (["--model", f"claude:{MODEL}", "--critic_samples", "0", "--task", "steps", "--data", "x.jsonl"], "critic_samples"),
    ],
)
def test_evaluate_critic_bad_flags(flags, message):
    from exp.evaluate import TYPES

    with pytest.raises((ConfigError, SystemExit), match=message):
        parse(TYPES, flags)


class _TwoCandidates:
    """A generator that writes N complete solutions, alternately right and with a slip."""

    tokens = 0

    def reset(self) -> None:
        pass

    def expand(self, problem: str, parents: Sequence, counts: Sequence[int], *, to_end: bool = False) -> list:
        from prm.search import Partial

        good, bad = ["7 * 6 = 42.", "The answer is: 42"], ["7 * 6 = 48.", "The answer is: 48"]
        return [[Partial(steps=[*bad] if k % 2 == 0 else [*good], done=True, tokens=2) for k in range(c)] for c in counts]


def test_critic_is_the_prm_of_a_search(fake_api, tmp_path):
    from prm.search import SearchSettings, run_search

    critic = make(fake_api, tmp_path)
    res = run_search("best_of_n", "What is 7 * 6?", _TwoCandidates(), critic, SearchSettings(n=4))
    # the critic flags the slip in every other sample: best-of-N picks a right one; identical
    # candidates are asked about once
    assert res.answer == "42" and res.prm_calls == 4 and len(fake_api.requests) == 2
    assert sorted(c["score"] for c in res.candidates) == [0.0, 0.0, 1.0, 1.0]


def test_search_script_parses_a_critic_prm():
    from exp.search import TYPES

    _, cfg, _ = parse(TYPES, ["--prm", f"claude:{MODEL}", "--strategies", "best_of_n", "--ns", "2", "--yes", "--max_cost_usd", "1"])
    assert cfg.prm == f"claude:{MODEL}" and cfg.yes and cfg.max_cost_usd == 1.0


def test_search_script_with_a_critic_prm(api_env, tmp_path, fixtures, capsys):
    from exp.search import TYPES, main

    argv = ["--problems", str(fixtures / "gsm8k.jsonl"), "--generator", "claude", "--model", MODEL, "--prm", f"claude:{MODEL}",
            "--strategies", "best_of_n", "--ns", "2", "--limit", "1", "--n_boot", "10", "--yes", "--results_dir", str(tmp_path)]
    m = main(*parse(TYPES, argv))
    critic_calls = [r for r in api_env.requests if "<paragraph_0>" in r["messages"][0]["content"]]
    assert m["rows"][0]["prm_calls"] == 2 and len(critic_calls) == 2 and "Claude critic (claude-sonnet-4-6)" in capsys.readouterr().out
    assert (tmp_path / "search" / "default" / "claude_critic.jsonl").is_file()
    n = len(api_env.requests)
    assert main(*parse(TYPES, argv))["rows"][0]["prm_calls"] == 2 and len(api_env.requests) == n  # a rerun repays nothing
