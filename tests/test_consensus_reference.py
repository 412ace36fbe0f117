"""Consensus filtering of labelers (kept only where they agree on the first error) and the offline
``reference`` verifier (a step is wrong when it computes a quantity outside the reference chain)."""

import pytest

from prm.label.pipeline import grade
from prm.label.verify import ConsensusVerifier, RulesVerifier, VerifierOptions, consensus_summary, make_verifier
from prm.label.verify.reference import ReferenceVerifier, reference_chain

NATALIA = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
           "How many clips did Natalia sell altogether in April and May?")
NATALIA_REF = ["Natalia sold 48/2 = <<48/2=24>>24 clips in May.", "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May."]
BOXES = "A shop has 3 shelves with 4 boxes on each shelf. Each box holds 5 toys. The shop sells 7 toys. How many toys are left?"
BOXES_REF = ["There are 3*4 = <<3*4=12>>12 boxes.", "They hold 12*5 = <<12*5=60>>60 toys.", "60-7 = <<60-7=53>>53 toys are left."]
REFS = {NATALIA: NATALIA_REF, BOXES: BOXES_REF}


@pytest.mark.parametrize("problem, steps, gold, verdicts", [
    # correct, on the reference's path
    (NATALIA, ["In May she sold 48 / 2 = 24 clips.", "Altogether 48 + 24 = 72 clips.", "The answer is: 72"], "72", [True, True, True]),
    # correct along another order: 4 * 5 = 20 toys a shelf is a sub-product of the reference's 3 * 4 * 5
    (BOXES, ["Each shelf holds 4 * 5 = 20 toys.", "All shelves hold 3 * 20 = 60 toys.", "60 - 7 = 53 are left.", "The answer is: 53"], "53",
     [True, True, True, True]),
    # arithmetic slip (what the rules verifier also finds)
    (NATALIA, ["In May she sold 48 / 2 = 24 clips.", "Altogether 48 + 24 = 74 clips.", "The answer is: 74"], "72", [True, False, False]),
    # wrong operation: "half as many" doubled; arithmetic right, so only the answer step is wrong for rules
    (NATALIA, ["In May she sold 48 * 2 = 96 clips.", "Altogether 48 + 96 = 144 clips.", "The answer is: 144"], "72", [False, False, False]),
    # wrong quantity: the boxes count used for the toys per box
    (BOXES, ["There are 3 * 4 = 12 boxes.", "They hold 12 * 4 = 48 toys.", "48 - 7 = 41 are left.", "The answer is: 41"], "53",
     [True, False, False, False]),
    # prose steps are uncheckable: taken as correct (the rules policy)
    (NATALIA, ["Let us find May's sales first.", "In May she sold 48 / 2 = 24 clips.", "Altogether 48 + 24 = 72.", "The answer is: 72"], "72",
     [True, True, True, True]),
])
def test_reference_verifier(problem, steps, gold, verdicts):
    assert ReferenceVerifier(REFS).grade(problem, steps, gold).step_correct == verdicts


def test_reference_catches_what_rules_miss():
    steps = ["In May she sold 48 * 2 = 96 clips.", "Altogether 48 + 96 = 144 clips.", "The answer is: 144"]
    assert RulesVerifier().grade(NATALIA, steps, "72").step_correct == [True, True, False]  # only the final answer
    g = ReferenceVerifier(REFS).grade(NATALIA, steps, "72")
    assert g.step_correct[0] is False and "not in the reference chain" in g.details[0][0] and g.stats == {"reference": True}


def test_reference_chain_and_fallback():
    chain = reference_chain(BOXES, BOXES_REF)
    assert {12, 60, 53, 20, 15, 3, 4, 5, 7} <= chain and 48 not in chain  # sub-products 4*5, 3*5; not 12*4
    assert {24, 72, 48} <= reference_chain(NATALIA, NATALIA_REF) and 96 not in reference_chain(NATALIA, NATALIA_REF)
    # MATH: LaTeX arithmetic in the worked solution is read
    assert {36, 26, 10} <= reference_chain("What is the positive difference between $120\\%$ of 30 and $130\\%$ of 20?",
                                           "One hundred twenty percent of 30 is $120\\cdot30\\cdot\\frac{1}{100}=36$, and $130\\%$ of 20 is "
                                           "$ 130\\cdot 20\\cdot\\frac{1}{100}=26$.  The difference between 36 and 26 is $\\boxed{10}$.")
    # a problem without a reference: arithmetic and the final answer only
    g = ReferenceVerifier({}).grade("What is 2+3?", ["2 * 3 = 6", "The answer is: 6"], "5")
    assert g.step_correct == [True, False] and g.stats == {"reference": False}
    assert make_verifier("reference", references=REFS).grade(*(NATALIA, ["48 * 2 = 96"], "72")).step_correct == [False]


class Fixed:
    """A labeler with fixed verdicts per solution (by its first step)."""

    def __init__(self, name, verdicts):
        self.name, self.verdicts, self.calls = name, verdicts, 0

    def grade_many(self, items, desc="grading"):
        self.calls += 1
        from prm.label.verify import Grade

        return [None if self.verdicts[st[0]] is None else Grade(list(self.verdicts[st[0]]), False) for _, st, _ in items]

    def api_usage(self):
        return None


ITEMS = [("q", ["a", "x", "y"], "1"), ("q", ["b", "x", "y"], "1"), ("q", ["c", "x", "y"], "1"), ("q", ["d", "x", "y"], "1"), ("q", ["e", "x", "y"], "1")]


def test_consensus_keeps_agreement_only():
    one = Fixed("one", {"a": [True, False, True], "b": [True, True, True], "c": [False, True, True], "d": [True, True, True], "e": None})
    two = Fixed("two", {"a": [True, False, False], "b": [True, True, True], "c": [True, False, True], "d": [True, True, False], "e": [True, True, True]})
    g = ConsensusVerifier({"one": one, "two": two}).grade_many(ITEMS)
    assert g[0].step_correct == [True, False, None] and g[0].stats["kept"]  # same first error; what follows is unlabeled
    assert g[1].step_correct == [True, True, True] and g[1].stats["kept"]  # both: no error
    assert g[2].step_correct == [None] * 3 and g[2].stats["reason"] == "different first error"
    assert g[3].step_correct == [None] * 3 and g[3].stats["reason"] == "error vs no error"
    assert g[4] is None  # a labeler failed: no grade this time
    assert g[2].members["one"]["first_error"] == 0 and g[2].members["two"]["first_error"] == 1
    with pytest.raises(ValueError, match="at least two"):
        ConsensusVerifier({"one": one})


def test_consensus_with_claude_and_rules_through_the_pipeline(fake_api, tmp_path):
    # the fake judge checks arithmetic only; on a wrong operation (48 * 2) rules blame the answer step, reference the first
    sols = [{"id": "p1", "prompt": NATALIA, "answer": "72", "solutions": [
        "In May she sold 48 / 2 = 24 clips.\nAltogether 48 + 24 = 72 clips.\nThe answer is: 72",
        "In May she sold 48 * 2 = 96 clips.\nAltogether 48 + 96 = 144 clips.\nThe answer is: 144"]}]
    opts = VerifierOptions(consensus=["claude", "rules", "reference"], references=REFS, model="claude-sonnet-4-6", cache_path=tmp_path / "claude.jsonl",
                           job={"api_key": "fake", "base_url": fake_api.url, "max_retries": 0})
    v = make_verifier("consensus", opts)
    rows = grade(sols, v, tmp_path / "graded.jsonl")
    assert [r["step_correct"] for r in rows] == [[True, True, True], [None, None, None]]
    assert set(rows[1]["verdicts"]) == {"claude", "rules", "reference"} and rows[1]["verdicts"]["rules"]["first_error"] == 2
    s = consensus_summary(rows)
    assert s["solutions"] == 2 and s["kept"] == 1 and s["agreement_rate"] == 0.5 and s["dropped_by_reason"] == {"error vs no error": 1}
    assert s["pairwise_first_error_agreement"] == {"claude~rules": 0.5, "claude~reference": 0.5, "rules~reference": 0.5}
    assert s["dropped_solutions"][0]["first_errors"] == {"claude": None, "rules": 3, "reference": 1}  # 1-based steps
    assert v.api_usage()["requests"] == 2 and v.api_usage()["labeler"] == "claude"
    n = len(fake_api.requests)
    # another rule (rules + claude only): every row is graded again, Claude answers come from its cache
    v2 = make_verifier("consensus", VerifierOptions(**{**opts.__dict__, "consensus": ["rules", "claude"]}))
    rows2 = grade(sols, v2, tmp_path / "graded.jsonl")
    assert len(fake_api.requests) == n and all(r["labeler"] == v2.labeler_id for r in rows2) and set(rows2[0]["verdicts"]) == {"rules", "claude"}
    # the same rule again: nothing is graded
    grade(sols, v2, tmp_path / "graded.jsonl")
    assert len(fake_api.requests) == n


def test_consensus_of_mc_and_rules_with_a_scripted_generator(tmp_path):
    def oracle(problems, prefixes, n):  # reaches 72 unless the prefix holds the slip
        return [["The answer is: " + ("73" if "25" in p else "72")] * n for p in prefixes]

    sols = [{"id": "p1", "prompt": NATALIA, "answer": "72", "solutions": [
        "In May she sold 48 / 2 = 24 clips.\nAltogether 48 + 24 = 72 clips.\nThe answer is: 72",
        "In May she sold 48 / 2 = 25 clips.\nAltogether 48 + 25 = 73 clips.\nThe answer is: 73",
        "In May she sold 48 / 2 = 24 clips.\nShe sold 2 more in June.\nThe answer is: 74"]}]
    v = make_verifier("consensus", VerifierOptions(consensus=["mc", "rules"], completer=oracle, num_completions=2, mc_search="binary"))
    rows = grade(sols, v, tmp_path / "graded.jsonl")
    s = consensus_summary(rows)
    # 1: both no error; 2: both step 1; 3: mc blames step 2 (its prefix leads to 72 no more? it does: so the answer step), rules the answer step
    assert [r["verdicts"]["mc"]["first_error"] for r in rows] == [None, 0, 2] and [r["verdicts"]["rules"]["first_error"] for r in rows] == [None, 0, 2]
    assert s["kept"] == 3 and rows[0]["verdicts"]["mc"]["stats"]["rollouts"] == 0
