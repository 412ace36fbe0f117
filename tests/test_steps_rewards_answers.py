import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prm.answers import answers_equal, extract_answer, is_correct
from prm.eval.aggregate import aggregate
from prm.label.labels import (
    he_reward,
    mc_hard,
    mc_soft,
    reward_to_label,
    se_reward,
    step_rewards,
)
from prm.registry import UnknownName
from prm.steps import detect_mode, join_steps, split_steps, step_spans

# --- steps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, mode, expected",
    [
        # blank lines separate paragraphs, single newlines stay inside a step
        ("a\nb\n\n  c\n\n\n", "paragraphs", ["a\nb", "c"]),
        # one step per non-empty line
        ("a\n\nb\n c ", "lines", ["a", "b", "c"]),
        # markdown headers start steps; the preamble is its own step
        ("Intro.\n## Step 1: x\nmore\n## Step 2: y", "headers", ["Intro.", "## Step 1: x\nmore", "## Step 2: y"]),
        # plain and bold headers
        ("Step 1: a\nStep 2. b\n**Step 3:** c", "headers", ["Step 1: a", "Step 2. b", "**Step 3:** c"]),
        # Math-Shepherd tags end steps and are removed
        ("Step 1: a ки\nStep 2: b ки", "tag", ["Step 1: a", "Step 2: b"]),
        # Qwen PRM tags
        ("a<extra_0>b<extra_0>", "auto", ["a", "b"]),
        # auto picks headers over paragraphs when there are two or more headers
        ("Step 1: a\n\nStep 2: b\nc", "auto", ["Step 1: a", "Step 2: b\nc"]),
        # auto falls back to lines for a single paragraph
        ("a\nb", "auto", ["a", "b"]),
        # a header word inside a line is not a header
        ("We do Step 1: later.\nStep 2: now", "auto", ["We do Step 1: later.", "Step 2: now"]),
    ],
)
def test_split(text, mode, expected):
    assert split_steps(text, mode) == expected


def test_split_unknown_mode():
    with pytest.raises(ValueError, match="unknown split mode 'words'; known: auto, paragraphs"):
        split_steps("a", "words")


_step = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), min_size=1, max_size=20).map(str.strip).filter(bool)


@settings(max_examples=200, deadline=None)
@given(st.lists(_step, min_size=1, max_size=8))
def test_join_split_roundtrip(steps):
    assert split_steps(join_steps(steps, "\n\n"), "paragraphs") == steps
    assert split_steps(join_steps(steps, "\n"), "lines") == steps
    tagged = [s for s in steps if "ки" not in s]
    if tagged:
        assert split_steps(join_steps(tagged, " ки\n") + " ки", "tag") == tagged


def test_step_spans_map_offsets():
    text = "First.\n\n  Second line\nstill.\n\nThird."
    spans = step_spans(text)
    assert [s for _, _, s in spans] == split_steps(text, "paragraphs")
    assert all(text[a:b] == s for a, b, s in spans)
    assert detect_mode(text) == "paragraphs"


# --- rewards ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step_ok, sol_ok, r",
    [(True, True, 1.0), (True, False, -1.0), (False, True, -1.0), (False, False, -1.0)],
)
def test_he(step_ok, sol_ok, r):
    # +1 only when both the step and the whole solution are correct
    assert he_reward(step_ok, sol_ok) == r


def test_se_end_points():
    n = 4
    # 1-based: first step p = 1/n, last step p = 1
    assert se_reward(True, 1, n) == 0.5 + 0.5 / n
    assert se_reward(True, n, n) == 1.0
    assert se_reward(False, 1, n) == -0.5 - 0.5 / n
    assert se_reward(False, n, n) == -1.0
    assert se_reward(True, 1, 1) == 1.0 and se_reward(False, 1, 1) == -1.0
    with pytest.raises(ValueError, match="1-based"):
        se_reward(True, 0, n)
    # SE ignores the final answer; HE does not
    assert step_rewards("SE", [True, False], solution_correct=False) == [0.75, -1.0]
    assert step_rewards("HE", [True, True], solution_correct=False) == [-1.0, -1.0]
    with pytest.raises(ValueError, match="known: HE, SE"):
        step_rewards("XE", [True], True)


def test_reward_to_label_and_mc():
    assert [reward_to_label(r) for r in (-1.0, 0.0, 0.75, 1.0)] == [0.0, 0.5, 0.875, 1.0]
    assert mc_hard([False, False, True]) == 1.0 and mc_hard([False]) == 0.0
    assert mc_soft([True, False, True, False]) == 0.5
    with pytest.raises(ValueError):
        mc_soft([])


@pytest.mark.parametrize(
    "how, expected",
    [("min", 0.5), ("prod", 0.9 * 0.5 * 0.8), ("last", 0.8), ("mean", (0.9 + 0.5 + 0.8) / 3), ("geomean", (0.9 * 0.5 * 0.8) ** (1 / 3))],
)
def test_aggregators(how, expected):
    assert math.isclose(aggregate([0.9, 0.5, 0.8], how), expected)


def test_aggregator_registry_errors():
    with pytest.raises(UnknownName, match="unknown aggregator 'max'; known: geomean, last, mean, min, prod"):
        aggregate([0.5], "max")
    with pytest.raises(ValueError, match="no steps"):
        aggregate([], "min")


# --- answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),  # MATH: last boxed, nested braces
        ("\\boxed{1} then \\boxed{x^{2}}", "x^{2}"),
        ("He has 5 apples.\n#### 1,000", "1,000"),  # GSM8K
        ("Step 2: The answer is: 13520", "13520"),  # Math-Shepherd
        ("So the answer is $42$.", "42"),
        ("That means 29 cents.\n\n# Answer\n\n29", "29"),  # PRM800K
        ("The final answer is: $\\boxed{12}$", "12"),
        ("no answer here", None),
        ("", None),
        ("\\boxed{unclosed", None),
    ],
)
def test_extract(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "pred, gold, eq",
    [
        ("0.5", "\\frac{1}{2}", True),
        ("28,800", "28800", True),
        ("72.0", "72", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
        ("x=5", "5", True),
        ("12", "10", False),
        (None, "1", False),
        ("", "1", False),
    ],
)
def test_answers_equal(pred, gold, eq):
    assert answers_equal(pred, gold) is eq


def test_is_correct():
    assert is_correct("2+2=4.\n#### 4", "4") is True
    assert is_correct("The answer is 5.", "4") is False
    assert is_correct("I am not sure.", "4") is None


def test_answers_equal_off_main_thread():
    # math-verify's timeouts use signals; the checker must still work from worker threads
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as ex:
        assert list(ex.map(lambda p: answers_equal(*p), [("1/2", "0.5"), ("3", "4")])) == [True, False]
