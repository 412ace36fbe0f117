"""The prm_exp pipeline stages with a scripted sampler (the real generator is tested elsewhere)."""

import pytest

from prm.label.pipeline import (
    MiningConfig,
    grade,
    mine,
    rollouts,
    split_questions,
    to_records,
)
from prm.label.verify import RulesVerifier

PROBLEMS = [
    {"id": f"q{i}", "prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(1, 7)
]


class Sampler:
    """Answers right on odd calls for even questions, always wrong on odd questions; counts calls."""

    def __init__(self):
        self.prompts = []

    def __call__(self, prompts, n):
        out = []
        for p in prompts:
            self.prompts.append(p)
            i = int(p.split()[2])
            right = f"{i} + {i} = {2 * i}.\nThe answer is {2 * i}."
            wrong = f"{i} + {i} = {2 * i + 1}.\nThe answer is {2 * i + 1}."
            out.append([right if (i % 2 == 0 and k % 2 == 0) else wrong for k in range(n)])
        return out


def test_mine_keeps_the_solve_band_and_resumes(tmp_path):
    s = Sampler()
    cfg = MiningConfig(mine_samples=4, solve_low=0.3, solve_high=0.8, num_samples=10, max_questions=4)
    kept = mine(PROBLEMS, s, cfg, tmp_path / "mining.jsonl", batch=2)
    # even questions are solved half the time (kept), odd ones never (dropped); only 4 examined
    assert [k["id"] for k in kept] == ["q2", "q4"] and len(s.prompts) == 4
    # a rerun examines nothing again, and continues past the limit when it is raised
    again = mine(PROBLEMS, s, MiningConfig(4, 0.3, 0.8, 10, 6), tmp_path / "mining.jsonl", batch=2)
    assert [k["id"] for k in again] == ["q2", "q4", "q6"] and len(s.prompts) == 6


@pytest.mark.parametrize("right, kept", [
    (1, False),  # solved 1 in 4 (fails 75%): below the 30-80% solve band (the old fail band kept it)
    (2, True),   # solved half the time
    (3, True),   # solved 3 in 4
    (4, False),  # always solved: no wrong rollouts to learn from
])
def test_mine_band_is_the_solve_rate(tmp_path, right, kept):
    def sample(prompts, n):
        return [["The answer is 2."] * right + ["The answer is 3."] * (n - right) for _ in prompts]

    out = mine([{"id": "q", "prompt": "1 + 1?", "answer": "2"}], sample, MiningConfig(4, 0.3, 0.8, 10), tmp_path / "m.jsonl")
    assert bool(out) == kept


def test_rollouts_reuse_mining_samples(tmp_path):
    s = Sampler()
    kept = mine(PROBLEMS[:2], s, MiningConfig(2, 0.0, 1.0, 10), tmp_path / "m.jsonl")
    n_before = len(s.prompts)
    sols = rollouts(kept, 3, s, tmp_path / "s.jsonl")
    assert all(len(q["solutions"]) == 3 for q in sols) and len(s.prompts) == n_before + 2  # one extra each
    assert rollouts(kept, 3, s, tmp_path / "s.jsonl") == sols and len(s.prompts) == n_before + 2  # resumed


@pytest.mark.parametrize(
    "reward, expected",
    [
        # HE: +1 only when the step and the whole solution are right -> labels 1 / 0
        ("HE", {"right": [1.0, 1.0], "wrong": [0.0, 0.0]}),
        # SE: by position, 1-based: right steps 0.5+0.5k/n -> (r+1)/2 = 0.875, 1.0; wrong -0.75, -1 -> 0.125, 0
        ("SE", {"right": [0.875, 1.0], "wrong": [0.125, 0.0]}),
    ],
)
def test_grade_and_rewards(tmp_path, reward, expected):
    sols = [{"id": "q2", "prompt": "What is 2 + 2?", "answer": "4",
             "solutions": ["2 + 2 = 4.\nThe answer is 4.", "2 + 2 = 5.\nThe answer is 5."]}]
    graded = grade(sols, RulesVerifier(), tmp_path / "g.jsonl")
    assert [g["step_correct"] for g in graded] == [[True, True], [False, False]]
    records, prefix = to_records(graded, reward)
    assert records[0]["labels"] == expected["right"] and records[1]["labels"] == expected["wrong"]
    assert records[0]["label_scheme"] == "soft"
    assert prefix[0]["target_text"] == "CORRECT (+1)" and prefix[-1]["target_text"] == "INCORRECT (-1)"
    assert prefix[0]["input_text"].startswith("### Question:\n") and prefix[0]["input_text"].endswith("### Evaluate this step:\n")
    assert "reward_value" in prefix[0]
    # grading is resumable: nothing is graded twice
    assert grade(sols, RulesVerifier(), tmp_path / "g.jsonl") == graded


def test_split_questions_keeps_solutions_together():
    recs = [{"meta": {"question_id": f"q{i // 3}"}, "id": i} for i in range(30)]
    train, test = split_questions(recs, 0.2, seed=0)
    assert len(test) == 6 and not {r["meta"]["question_id"] for r in train} & {r["meta"]["question_id"] for r in test}


def test_rollouts_without_reusing_mining_samples(tmp_path):
    kept = [{"id": "q2", "prompt": "What is 2 + 2?", "answer": "4", "samples": ["old one", "old two"]}]
    s = Sampler()
    rows = rollouts(kept, 3, s, tmp_path / "sols.jsonl", reuse_samples=False)
    assert len(rows[0]["solutions"]) == 3 and "old one" not in rows[0]["solutions"] and len(s.prompts) == 1
    assert rollouts(kept, 3, s, tmp_path / "other.jsonl")[0]["solutions"][:2] == ["old one", "old two"]
