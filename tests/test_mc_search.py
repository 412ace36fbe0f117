"""Monte-Carlo labels by OmegaPRM's binary search for the first error vs the linear scan: the same first
error where rollouts are monotone, fewer rollouts, a rollout cache that never samples a prefix twice."""

import math

import pytest

from prm.label.generate import LocalGenerator
from prm.label.verify import MCVerifier, RolloutCache, VerifierOptions, make_verifier


class Scripted:
    """A generator whose rollouts reach the answer (42) exactly from prefixes without a WRONG step, so
    the first error is known exactly; ``flaky`` prefixes (by step count) fail although correct."""

    def __init__(self, flaky=()):
        self.flaky, self.calls = set(flaky), []

    def __call__(self, problems, prefixes, n):
        self.calls.append((list(prefixes), n))
        out = []
        for pre in prefixes:
            ok = "WRONG" not in pre and len(pre.split("\n")) not in self.flaky
            out.append([f"The answer is: {42 if ok else 7}"] * n)
        return out


def solution(n_steps, first_error):
    """``n_steps`` steps, the 1-based ``first_error`` one WRONG (None: none); the last states the answer."""
    steps = [f"Step {k} is {'WRONG' if k == first_error else 'fine'}." for k in range(1, n_steps)]
    right = first_error is None
    return steps + [f"The answer is: {42 if right else 7}" + (" WRONG" if first_error == n_steps else "")]


@pytest.mark.parametrize("n_steps, err", [
    (8, 1), (8, 2), (8, 5), (8, 7), (8, 8),  # every position, incl. the first and the answer step itself
    (6, 3), (13, 9), (2, 1),  # other lengths
    (8, None),  # a right answer: no error, no rollout
])
def test_binary_search_finds_the_scripted_first_error(n_steps, err):
    item = ("q", solution(n_steps, err), "42")
    lin = MCVerifier(Scripted(), 4, search="linear").grade(*item)
    gen = Scripted()
    bin_ = MCVerifier(gen, 4, search="binary").grade(*item)
    expect = None if err is None else err - 1
    assert lin.stats["first_error"] == bin_.stats["first_error"] == expect
    if err is None:
        assert bin_.step_correct == [True] * n_steps and bin_.stats["rollouts"] == 0 and not gen.calls
    else:
        # the steps before are right, the error wrong, nothing after it decided
        assert bin_.step_correct == [True] * (err - 1) + [False] + [None] * (n_steps - err)
        assert bin_.stats["prefixes"] <= math.ceil(math.log2(n_steps))
        assert bin_.stats["rollouts"] == 4 * bin_.stats["prefixes"] == 4 * len({p for c, _ in gen.calls for p in c})
    assert lin.stats["rollouts"] == 4 * (n_steps - 1)
    # estimates of the prefixes the binary search rolled out equal the linear scan's
    for k, s in enumerate(bin_.estimates["mc_soft"]):
        assert s is None or s == lin.estimates["mc_soft"][k]


def test_binary_search_batches_solutions_in_rounds():
    gen = Scripted()
    items = [("q", solution(8, e), "42") for e in (2, 6, None)]
    grades = MCVerifier(gen, 2, search="binary").grade_many(items)
    assert [g.stats["first_error"] for g in grades] == [1, 5, None]
    assert len(gen.calls) == 3 and all(len(c) == 2 for c, _ in gen.calls)  # one call per round, both wrong solutions in it


def test_soft_rule_searches_with_half_the_rollouts():
    def half(problems, prefixes, n):  # every prefix: 1 of 3 rollouts right
        return [["The answer is: 42"] + ["The answer is: 7"] * (n - 1) for _ in prefixes]

    item = ("q", solution(8, 8), "42")
    assert MCVerifier(half, 3, "hard", search="binary").grade(*item).stats["first_error"] == 7  # MC > 0 everywhere: the last step
    assert MCVerifier(half, 3, "soft", search="binary").grade(*item).stats["first_error"] == 0  # 1/3 < half: the first step


def test_non_monotone_rollouts_make_the_searches_disagree():
    # prefix 2 looks bad by chance although prefixes 3.. look good: linear stops at step 2, binary never rolls it out
    item = ("q", solution(8, 7), "42")
    lin = MCVerifier(Scripted(flaky={2}), 4, search="linear").grade(*item)
    bin_ = MCVerifier(Scripted(flaky={2}), 4, search="binary").grade(*item)
    assert lin.stats["first_error"] == 1 and bin_.stats["first_error"] == 6


def test_rollout_cache_samples_nothing_twice(tmp_path):
    gen = Scripted()
    cache = RolloutCache(tmp_path / "rollouts.jsonl", settings={"model": "scripted", "temperature": 0.7})
    items = [("q", solution(8, 5), "42"), ("q", solution(8, 5), "42")]  # the same solution twice
    lin = MCVerifier(gen, 4, search="linear", cache=cache).grade_many(items)
    assert cache.sampled == 4 * 7 and [g.stats["sampled"] for g in lin] == [28, 0] and [g.stats["rollouts"] for g in lin] == [28, 28]
    # the binary search over the same solutions reads every rollout it needs from the cache
    b = MCVerifier(gen, 4, search="binary", cache=cache).grade_many(items)
    assert cache.sampled == 28 and len(gen.calls) == 1 and b[0].stats["rollouts"] == 12 and b[0].stats["sampled"] == 0
    # on disk: a rerun samples nothing; more rollouts per prefix sample only the missing ones
    again = RolloutCache(tmp_path / "rollouts.jsonl", settings={"model": "scripted", "temperature": 0.7})
    MCVerifier(gen, 4, search="linear", cache=again).grade_many(items)
    assert len(gen.calls) == 1 and again.sampled == 0
    MCVerifier(gen, 6, search="binary", cache=again).grade_many(items[:1])
    assert gen.calls[-1][1] == 2 and again.sampled == 2 * 3
    # other sampling settings are other rollouts
    other = RolloutCache(tmp_path / "rollouts.jsonl", settings={"model": "scripted", "temperature": 1.0})
    MCVerifier(gen, 4, search="binary", cache=other).grade_many(items[:1])
    assert other.sampled == 12


def test_tiny_generator_binary_search_records_its_cost(tiny_lm, tmp_path):
    # a real generator: the random tiny Llama never reaches the answer, so every prefix has MC 0 and
    # the first error is the first step, found by halving: prefixes 3, then 1
    gen = LocalGenerator(tiny_lm, max_new_tokens=5, batch_size=8)
    v = make_verifier("mc", VerifierOptions(completer=gen.complete, num_completions=2, mc_search="binary",
                                            rollout_cache_path=tmp_path / "r.jsonl"))
    steps = ["2 + 3 = 5", "5 + 4 = 9", "9 * 2 = 18", "18 - 1 = 17", "17 + 1 = 18", "The answer is 18."]
    g = v.grade("What is (2+3+4)*2?", steps, "17")
    assert g.step_correct == [False] + [None] * 5 and g.stats["first_error"] == 0
    assert g.stats["prefixes"] == 2 and g.stats["rollouts"] == 4 and g.stats["sampled"] == 4
    assert 0 < g.stats["tokens"] <= 4 * 5 + 4  # re-tokenized continuations of at most 5 new tokens each
    assert v.cache.settings and "max_new_tokens" in v.cache.settings  # keyed by the generator's sampling settings
    assert make_verifier("mc", VerifierOptions(completer=gen.complete, num_completions=2, rollout_cache_path=tmp_path / "r.jsonl")).grade(
        "What is (2+3+4)*2?", steps, "17").stats["sampled"] == 2 * 5 - 4  # linear reuses the 2 prefixes' rollouts


def test_bad_search_name():
    with pytest.raises(ValueError, match="linear, binary"):
        make_verifier("mc", VerifierOptions(completer=Scripted(), mc_search="ternary"))


def test_pipeline_regrades_rows_of_the_other_search_from_the_cache(tmp_path):
    from prm.label.pipeline import grade, graded_rows

    gen = Scripted()
    cache = RolloutCache()
    sols = [{"id": "p", "prompt": "q", "answer": "42", "solutions": ["\n".join(solution(8, 5))]}]
    path = tmp_path / "graded.jsonl"
    lin = grade(sols, MCVerifier(gen, 2, cache=cache), path)
    assert lin[0]["labeler"] == "mc" and lin[0]["label_stats"]["first_error"] == 4 and len(gen.calls) == 1
    b = grade(sols, MCVerifier(gen, 2, search="binary", cache=cache), path)  # another search: graded again, rollouts from the cache
    assert b[0]["labeler"] == "mc-binary" and b[0]["label_stats"]["sampled"] == 0 and len(gen.calls) == 1
    assert graded_rows(path) == b and len(path.read_text().splitlines()) == 2  # the newer row supersedes
    # a row written before labelers were recorded counts as the plain-named (linear) labeler's
    path.write_text(path.read_text().splitlines()[0].replace(', "labeler": "mc"', "") + "\n")
    assert '"labeler"' not in path.read_text()
    assert grade(sols, MCVerifier(gen, 2, cache=cache), path)[0]["label_stats"]["first_error"] == 4 and len(path.read_text().splitlines()) == 1
