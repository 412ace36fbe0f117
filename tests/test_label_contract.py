"""The labelling package's contracts: every verifier built by `make_verifier` grades through the same
interface; one progress bar per stage; first-error labels; one price table; one-class warnings."""

import io
import logging

import numpy as np
import pytest

import prm.label.progress as progress_mod
from prm.eval.metrics import step_metrics
from prm.label.claude import Usage
from prm.label.generate import LocalGenerator
from prm.label.labels import first_error_labels
from prm.label.pipeline import MiningConfig, grade, mine, rollouts
from prm.label.prices import PRICES, cost_usd
from prm.label.verify import VERIFIERS, Grade, VerifierBase, VerifierOptions, make_verifier, resolve_name

ITEMS = [
    ("What is 2+3+4?", ["2 + 3 = 5", "5 + 4 = 9", "The answer is 9."], "9"),
    ("What is 2+3+4?", ["2 + 3 = 6", "6 + 4 = 10", "The answer is 10."], "9"),
    ("What is 6*7?", ["6 * 7 = 42", "The answer is 42."], "42"),
]


class Bars:
    """Records every tqdm bar the labelling code opens: (desc, total, unit) and its final count."""

    def __init__(self, monkeypatch):
        self.made = []
        real = progress_mod.tqdm
        outer = self

        class Recording(real):
            def __init__(self, *a, **kw):
                super().__init__(*a, **{**kw, "file": io.StringIO()})  # a live bar (a disabled one counts nothing), kept out of the test output
                self.rec = {"desc": kw.get("desc"), "total": kw.get("total"), "unit": kw.get("unit"), "n": 0}
                outer.made.append(self.rec)

            def update(self, n=1):
                self.rec["n"] += n
                return super().update(n)

        monkeypatch.setattr(progress_mod, "tqdm", Recording)


def _options(name, fake_api, tiny_lm, tmp_path):
    if name == "claude":
        return VerifierOptions(model="claude-sonnet-4-6", cache_path=tmp_path / "cache.jsonl", job={"api_key": "fake", "base_url": fake_api.url, "max_retries": 0})
    if name == "mc":
        return VerifierOptions(completer=LocalGenerator(tiny_lm, max_new_tokens=6, batch_size=8).complete, num_completions=2)
    if name == "consensus":
        return VerifierOptions(consensus=["rules", "reference"], references={"What is 2+3+4?": ["2 + 3 = <<2+3=5>>5", "5 + 4 = <<5+4=9>>9"]})
    return VerifierOptions()


@pytest.mark.parametrize("name, paid", [
    ("rules", False),  # offline arithmetic: no API usage
    ("claude", True),  # loopback fake Messages API: usage and cost reported
    ("mc", False),  # Monte-Carlo rollouts with a real tiny generator
    ("reference", False),  # offline reference chain (no reference given: arithmetic and answer only)
    ("consensus", False),  # rules + reference must agree on the first error
])
def test_every_verifier_keeps_the_contract(name, paid, fake_api, tiny_lm, tmp_path, monkeypatch):
    bars = Bars(monkeypatch)
    v = make_verifier(name, _options(name, fake_api, tiny_lm, tmp_path))
    assert isinstance(v, VerifierBase) and v.name == name
    grades = v.grade_many(ITEMS, desc="grading")
    assert len(grades) == len(ITEMS) and all(isinstance(g, Grade) for g in grades)
    for g, (_, steps, _) in zip(grades, ITEMS):
        assert len(g.step_correct) == len(steps) and all(c in (True, False, None) for c in g.step_correct)
    # the final answer is checked against the gold answer by every verifier except the fake judge, which says "correct"
    if name != "claude":
        assert [g.solution_correct for g in grades] == [True, False, True]
    # one bar for the call, counting solutions (a consensus counts each labeler's)
    k = 2 if name == "consensus" else 1
    assert [(b["total"], b["unit"], b["n"]) for b in bars.made] == [(3 * k, "solution", 3 * k)]
    one = v.grade(*ITEMS[2])
    assert isinstance(one, Grade) and len(one.step_correct) == 2
    usage = v.api_usage()
    assert (usage is not None) == paid
    if paid:
        assert usage["requests"] == 3 and usage["cached"] == 1 and usage["cost_usd"] > 0  # grade() of a graded item is a cache hit


def test_unknown_verifier_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown verifier 'judge'; known: claude, consensus, mc, reference, rules"):
        make_verifier("judge")
    assert VERIFIERS.names() == ["claude", "consensus", "mc", "reference", "rules"]


@pytest.mark.parametrize("options, error", [
    (VerifierOptions(), "needs a completer"),  # mc without a generator
    (VerifierOptions(completer=lambda p, x, n: [], mc_label="median"), "hard' or 'soft"),  # bad MC label
])
def test_mc_options_are_checked(options, error):
    with pytest.raises(ValueError, match=error):
        make_verifier("mc", options)


def test_auto_is_claude_only_with_a_key(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert resolve_name("auto") == "rules" and make_verifier("auto").name == "rules"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    assert resolve_name("auto") == "claude" and resolve_name("mc") == "mc"


def test_each_stage_has_one_bar_counting_solutions(tiny_lm, tmp_path, monkeypatch):
    bars = Bars(monkeypatch)
    gen = LocalGenerator(tiny_lm, max_new_tokens=6, batch_size=3)
    problems = [{"id": f"p{i}", "prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(5)]
    cfg = MiningConfig(mine_samples=2, solve_low=0.0, solve_high=1.0, num_samples=5)
    kept = mine(problems, gen.generate, cfg, tmp_path / "mining.jsonl", batch=2)  # 3 generation calls
    sols = rollouts(kept, 3, gen.generate, tmp_path / "solutions.jsonl", batch=2)  # the 2 mining samples + 1 new each
    grade(sols, make_verifier("mc", completer=gen.complete, num_completions=2), tmp_path / "graded.jsonl")
    stages = [(b["desc"], b["total"], b["unit"], b["n"]) for b in bars.made]
    assert stages[:2] == [("mining", 10, "solution", 10), ("generating", 5, "solution", 5)]
    assert stages[2][1:] == (15, "solution", 15) and len(stages) == 3  # the MC rollouts' continuations do not get a bar


def test_a_sampler_that_does_not_count_is_counted_by_the_stage(tmp_path, monkeypatch):
    bars = Bars(monkeypatch)
    problems = [{"id": f"p{i}", "prompt": f"q{i}", "answer": "1"} for i in range(3)]
    mine(problems, lambda prompts, n: [["The answer is 1."] * n for _ in prompts], MiningConfig(mine_samples=2, num_samples=3), tmp_path / "m.jsonl", batch=2)
    assert [(b["total"], b["n"]) for b in bars.made] == [(6, 6)]


@pytest.mark.parametrize("verdicts, labels", [
    ([True, True, False, True, False], [1.0, 1.0, 0.0, None, None]),  # nothing after the first error is labeled
    ([True, None, True], [1.0, None, 1.0]),  # a step without a verdict stays unlabeled, and is no error
    ([True, True], [1.0, 1.0]),  # no error: every step right
    ([False], [0.0]),  # the first step is the error
    ([], []),  # no steps
])
def test_first_error_labels(verdicts, labels):
    assert first_error_labels(verdicts) == labels


def test_one_price_table_prices_usage_and_estimates():
    u = Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=3000, cache_write_tokens=100)
    expected = (1000 * 3 + 200 * 15 + 3000 * 3 * 0.1 + 100 * 3 * 1.25) / 1e6
    assert u.cost_usd("claude-sonnet-4-6") == pytest.approx(expected) == cost_usd("claude-sonnet-4-6", 1000, 200, 3000, 100)
    assert cost_usd("claude-sonnet-4-6", 1000, 200, 3000, 100, batch=True) == pytest.approx(expected / 2)
    assert cost_usd("claude-unknown-9", 1, 1) is None and "claude-unknown-9" not in PRICES  # never guessed


@pytest.mark.parametrize("labels, scheme, single", [
    ([0.0, 0.0, 0.0], "soft", "incorrect"),  # an embedded HE run whose held-out steps are all wrong
    ([1, 1], "binary", "correct"),
    ([2, 2], "ternary", "positive"),
    ([1, 0], "binary", None),  # both classes: AUROC defined, no warning
])
def test_one_class_labels_are_flagged(labels, scheme, single, caplog):
    probs = np.eye(3)[[int(v) for v in labels]] if scheme == "ternary" else np.linspace(0.2, 0.8, len(labels))
    with caplog.at_level(logging.WARNING, logger="prm.eval.metrics"):
        m = step_metrics(labels, probs, scheme)
    assert m["single_class"] == single and (m["auroc"] is None) == (single is not None)
    assert ("one class only" in caplog.text) == (single is not None)


def test_nested_bars_forward_or_hide(monkeypatch):
    bars = Bars(monkeypatch)
    with progress_mod.progress(5, "stage") as outer:
        with progress_mod.progress(3, "generation") as same:  # same unit: counts into the stage's bar
            same.update(3)
            same.set_postfix(kept=1)
        with progress_mod.progress(9, "continuations", unit="continuation") as other:  # another unit: hidden
            other.update(9)
        outer.update(2)
    assert [(b["desc"], b["total"], b["n"]) for b in bars.made] == [("stage", 5, 5)]
