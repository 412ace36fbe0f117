import pytest

from prm.arith import evaluate, matches
from prm.label.verify import RulesVerifier, check_step


@pytest.mark.parametrize(
    "step, verdict",
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.", True),  # GSM8K annotation, right
        ("Natalia sold 48/2 = <<48/2=25>>25 clips in May.", False),  # annotation, wrong
        ("She has 3 x 4 + 1 = 13 apples.", True),  # plain equation with 'x'
        ("12 * 0.5 = 6.5", False),
        ("So 1/3 = 0.33 of the cake.", True),  # rounded to the digits shown
        ("So 1/3 = 0.4 of the cake.", False),
        ("Half of them, 50% x 8 = 4, stay.", True),  # percent as /100
        ("We divide 100/4 = 25%.", True),  # a number written with a % sign
        ("3+4=7=7", True),  # chains check each '='
        ("He walks 2 miles every day.", None),  # nothing to check
        ("Let x = 5.", None),  # an assignment is not a computation
        ("There are 60 students x 2/3 = 40 students.", None),  # expression interrupted by words
        ("The sun sets at 6:00+48=6:48 PM", None),  # clock times are not arithmetic
        ("Total: $1,200 + $300 = $1,500.", True),  # currency and thousands separators
    ],
)
def test_check_step(step, verdict):
    assert check_step(step).verdict is verdict


def test_arith():
    assert evaluate("2 x (3 + 4) ÷ 7") == 2 and evaluate("1,000 - $1") == 999
    assert evaluate("import os") is None and evaluate("2**100") is None and evaluate("1/0") is None
    assert matches(evaluate("10/3"), "3.33") and not matches(evaluate("10/3"), "3.4")
    assert matches(evaluate("4"), "4.00") and not matches(evaluate("4"), "5")


@pytest.mark.parametrize(
    "uncheckable, expected",
    # step 1 is wrong arithmetic, steps 2 and 3 have nothing to check
    [("correct", [False, True, True]), ("previous", [False, False, False]), ("unlabeled", [False, None, None])],
)
def test_grade_policies(uncheckable, expected):
    g = RulesVerifier(uncheckable).grade("q", ["2 + 3 = 6.", "Then we think hard.", "The answer is 6."], "6")
    assert g.step_correct == expected and g.solution_correct is True


def test_wrong_final_answer_marks_its_step():
    g = RulesVerifier().grade("What is 2+3?", ["2 + 3 = 5.", "Then we think hard.", "The answer is 6."], "5")
    assert g.solution_correct is False and g.step_correct == [True, True, False]
    assert RulesVerifier().grade("q", ["2 + 3 = 5."], "5").solution_correct is None  # no stated answer


def test_unknown_policy():
    with pytest.raises(ValueError, match="uncheckable must be one of"):
        RulesVerifier("maybe")


def test_rules_on_real_gsm8k(shared_data):
    from prm.data import load

    ref = load("gsm8k", shared_data / "gsm8k/train.jsonl", limit=2000)
    verdicts = [check_step(s).verdict for r in ref for s in r["completions"]]
    checked = [v for v in verdicts if v is not None]
    # reference steps pass (the few failures are real slips in GSM8K's text, e.g. "8*3 = 240")
    assert sum(checked) / len(checked) > 0.998 and len(checked) / len(verdicts) > 0.85
    # injected calculation errors are caught at their step; propagation errors are consistent
    # arithmetic and pass the rules (that is what they are for)
    err = load("gsm8k_errors", shared_data / "gsm8k/train.jsonl", limit=1000, strip_calculator=False)
    by_kind = {"calculation": [], "propagation": []}
    for r in err:
        kind = r["meta"].get("error_kind")
        if kind:
            by_kind[kind].append(check_step(r["completions"][r["meta"]["injected_at"]]).verdict is False)
    assert sum(by_kind["calculation"]) / len(by_kind["calculation"]) > 0.97
    assert sum(by_kind["propagation"]) / len(by_kind["propagation"]) < 0.05
