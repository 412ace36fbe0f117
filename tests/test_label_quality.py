"""The label quality report: agreement with human labels and between labelers, consensus kept share
and cost per labeled solution on hand-made inputs with known answers; the script end to end on
CHAMP rows (rules, reference, Claude through the loopback fake server) and with Monte-Carlo
labelers driven by a scripted generator whose first errors are exact."""

import json

import pytest

from prm.label.quality import (
    consensus_records,
    consensus_shares,
    first_error_index,
    first_error_scores,
    human_agreement,
    labeled_records,
    labeler_cost,
    pairwise_agreement,
    quality_report,
)
from prm.label.verify import Grade

HUMAN = [-1, 2, 0, 1, None]
A = [-1, 2, 1, -1, 0]
B = [-1, 2, 1, 1, None]
C = [-1, 3, 1, 1, 0]
STEPS = [3, 4, 2, 3, 2]


def test_first_error_index_and_scores():
    assert first_error_index(Grade([True, False, None], False)) == 1
    assert first_error_index(Grade([True, None, True], True)) == -1
    assert first_error_index(None) is None
    assert first_error_scores(1, 3) == [1.0, 0.0, 1.0] and first_error_scores(-1, 2) == [1.0, 1.0]


def test_human_agreement_known_answers():
    got = human_agreement(A, HUMAN, STEPS)
    # solutions 0-3 have both: (-1,-1) (2,2) (1 vs 0) (-1 vs 1)
    assert got["n"] == 4 and got["exact"] == 0.5
    assert got["error_vs_no_error"] == 0.75  # only solution 3 (no error vs error) disagrees
    # ProcessBench with the human label as truth: 1 of 3 errors found exactly, the 1 correct one kept
    sub = got["processbench_subsets"]["all"]
    assert sub["acc_error"] == pytest.approx(1 / 3) and sub["acc_correct"] == 1.0
    assert got["processbench_f1"] == pytest.approx(0.5)
    assert got["predicted_error_share"] == 0.5
    # steps the human labels judge: sol 0 (3 right, a: right), sol 1 (2 right + wrong, a: same),
    # sol 2 (step 0 wrong, a: right), sol 3 (step 0 right, step 1 wrong, a: both right)
    st = got["steps"]
    assert st["n_steps"] == 3 + 3 + 1 + 2 and st["accuracy"] == pytest.approx(7 / 9)
    assert st["incorrect_recall"] == pytest.approx(1 / 3) and st["incorrect_precision"] == 1.0


def test_pairwise_table_known_answers():
    t = pairwise_agreement({"a": A, "b": B, "human": HUMAN})
    assert t["exact"]["a"]["b"] == t["exact"]["b"]["a"] == 0.75 and t["n"]["a"]["b"] == 4
    assert t["error_vs_no_error"]["a"]["b"] == 0.75
    assert t["exact"]["b"]["human"] == 0.75  # (-1,-1) (2,2) (1 vs 0) (1,1)
    assert t["exact"]["a"]["a"] == 1.0 and t["n"]["b"]["b"] == 4  # b did not grade solution 4


def test_consensus_shares_known_answers():
    rows = {tuple(r["labelers"]): r for r in consensus_shares({"a": A, "b": B, "c": C}, HUMAN)}
    assert set(rows) == {("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c")}
    ab = rows[("a", "b")]
    assert (ab["graded"], ab["kept"], ab["kept_share"]) == (4, 3, 0.75)
    assert ab["kept_human_exact"] == pytest.approx(2 / 3)  # kept 0, 1, 2: human agrees on 0 and 1
    assert rows[("a", "c")]["graded"] == 5 and rows[("a", "c")]["kept"] == 3  # 0, 2 and 4
    assert rows[("a", "c")]["kept_with_human"] == 2  # solution 4 has no human label
    assert rows[("a", "b", "c")]["kept_share"] == 0.5  # 0 (no error) and 2 (step 1)


def test_labeler_cost_per_solution():
    grades = [Grade([True], True, stats={"rollouts": 8, "tokens": 100}), Grade([False], False, stats={"rollouts": 4, "tokens": 60}), None]
    usage = {"requests": 2, "input_tokens": 100, "output_tokens": 40, "cache_read_tokens": 1000, "cache_write_tokens": 0,
             "cost_usd": 0.01, "model": "m", "cached": 0}
    c = labeler_cost(grades, usage, seconds=4.0)
    assert (c["solutions"], c["ungraded"]) == (2, 1)
    assert c["rollouts_per_solution"] == 6 and c["generated_tokens_per_solution"] == 80
    assert c["api_requests_per_solution"] == 1 and c["api_input_tokens_per_solution"] == 550 and c["api_output_tokens_per_solution"] == 20
    assert c["usd_per_solution"] == pytest.approx(0.005) and c["usd_per_1000_solutions"] == pytest.approx(5.0)
    assert c["seconds_per_solution"] == 2.0
    # a generator that cannot count tokens: unknown, not zero; an offline labeler costs nothing
    assert labeler_cost([Grade([True], True, stats={"rollouts": 4, "tokens": None})])["generated_tokens_per_solution"] is None
    free = labeler_cost([Grade([True], True)])
    assert free["usd_per_solution"] == 0 and free["rollouts_per_solution"] == 0 and free["api_requests_per_solution"] == 0


def test_report_has_baselines_and_human_in_the_table():
    m = quality_report({"a": A, "b": B}, STEPS, HUMAN)
    assert m["pairwise"]["labelers"] == ["a", "b", "human"]
    assert m["baselines"]["always_no_error"]["exact"] == 0.25  # 1 of the 4 human-labeled solutions has no error
    assert m["human"] == {"solutions": 4, "no_error_share": 0.25}
    assert m["per_labeler"]["a"]["human"]["exact"] == 0.5 and m["consensus"][0]["kept"] == 3
    # no human labels at all: no human column, no baselines
    assert "human" not in quality_report({"a": A, "b": B}, STEPS, [None] * 5)["pairwise"]["labelers"]


def test_labeled_records_are_first_error_labels():
    recs = [{"prompt": "p", "completions": ["s1", "s2", "s3"], "answer": "1", "id": "x", "source": "t"}] * 3
    out = labeled_records(recs, [Grade([True, False, True], False), None, Grade([None, None, None], None)], "rules")
    assert len(out) == 1 and out[0]["labels"] == [1.0, 0.0, None] and out[0]["label_scheme"] == "binary"
    # the solution-level truth is the gold-answer check, not the labeler's steps
    assert out[0]["meta"]["meta_label"] == 0.0
    no_answer = labeled_records(recs[:1], [Grade([True, True, True], None)], "rules")
    assert no_answer[0]["labels"] == [1.0, 1.0, 1.0] and "meta_label" not in no_answer[0]["meta"]
    # consensus: kept where every labeler graded and agrees (solution 0: step 2; solution 2: no error)
    g = {"a": [Grade([True, False, None], False), Grade([False], False), Grade([True, True, True], True)],
         "b": [Grade([True, False, False], False), None, Grade([True, None, True], True)]}
    kept = consensus_records(recs, g)
    assert [r["labels"] for r in kept] == [[1.0, 0.0, None], [1.0, 1.0, 1.0]] and kept[0]["meta"]["labeler"] == "consensus(a,b)"
    assert [r["meta"]["meta_label"] for r in kept] == [0.0, 1.0]


# --- the script end to end ----------------------------------------------------------------------


@pytest.mark.api
def test_script_on_champ_with_claude_through_the_fake_server(fake_api, tmp_path, monkeypatch, capsys):
    from exp.label_quality import cli

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-SECRET-lq")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_api.url)
    argv = ["--labelers", "rules", "reference", "claude", "--limit", "4", "--yes", "--results_dir", str(tmp_path / "r"), "--run_name", "t",
            "--labels_dir", str(tmp_path / "labels")]
    m = cli(argv)
    run = tmp_path / "r" / "label_quality" / "t"
    assert json.loads((run / "metrics.json").read_text()) == json.loads(json.dumps(m))
    assert json.loads((run / "config.json").read_text())["complete"] is True
    assert len(fake_api.requests) == 4  # one request per solution
    assert m["data"] == {"format": "champ_fws", "solutions": 4, "with_human_label": 4, "with_reference": 4}
    assert m["pairwise"]["labelers"] == ["rules", "reference", "claude", "human"]
    cost = m["per_labeler"]["claude"]["cost"]
    assert cost["api_requests_per_solution"] == 1 and cost["usd_per_solution"] > 0 and cost["api_cache_read_tokens_per_solution"] > 0
    assert m["per_labeler"]["rules"]["cost"]["usd_per_solution"] == 0
    assert {tuple(r["labelers"]) for r in m["consensus"]} == {("rules", "reference"), ("rules", "claude"), ("reference", "claude"),
                                                              ("rules", "reference", "claude")}
    preds = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and set(preds[0]["first_errors"]) == {"rules", "reference", "claude"}
    # the report's numbers are the predictions' numbers
    exact = sum(p["first_errors"]["claude"] == p["human"] for p in preds) / 4
    assert m["per_labeler"]["claude"]["human"]["exact"] == exact
    assert len((tmp_path / "labels" / "claude.jsonl").read_text().splitlines()) <= 4
    kept = (tmp_path / "labels" / "consensus.jsonl").read_text().splitlines()
    assert len(kept) == min(r["kept"] for r in m["consensus"] if len(r["labelers"]) == 3)
    assert (run / "cache" / "claude_answers.jsonl").is_file()  # answers kept apart from the committed files
    assert "sk-ant-test-SECRET-lq" not in "".join(p.read_text() for p in run.rglob("*") if p.is_file())
    # its figure (heat map + cost bars) from the run's files alone
    from prm.plots.label_quality import label_quality_figures

    made = label_quality_figures(tmp_path / "r", tmp_path / "fig")
    assert [m.stem.name for m in made] == ["label_quality_t"] and (tmp_path / "fig" / "label_quality_t.png").is_file()
    # a rerun with the same settings pays nothing twice (the answers are cached in the run directory)
    cli(argv)
    assert len(fake_api.requests) == 4


def test_script_needs_a_key_or_server_for_claude(tmp_path, monkeypatch):
    from exp.label_quality import cli

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"^error: --labelers claude needs ANTHROPIC_API_KEY"):
        cli(["--labelers", "rules", "claude", "--results_dir", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


class Scripted:
    """Rollouts reach the answer (42) exactly from prefixes without a WRONG step (tests/test_mc_search.py)."""

    def __init__(self):
        self.calls = 0

    def complete(self, problems, prefixes, n=1, desc=""):
        self.calls += 1
        return [[f"The answer is: {7 if 'WRONG' in p else 42}"] * n for p in prefixes]

    def count_tokens(self, text):
        return len(text.split())

    def settings(self):
        return {"scripted": True}


def test_script_with_scripted_mc_labelers(tmp_path, monkeypatch):
    import prm.label.generate as generate
    from exp.label_quality import cli

    firsts = [None, 2, 5, 7, 1]  # 1-based WRONG step of 7-step solutions (None: right)
    rows = []
    for i, err in enumerate(firsts):
        steps = [f"Step {k} is {'WRONG' if k == err else 'fine'}." for k in range(1, 7)] + [f"The answer is: {42 if err is None else 7}"]
        labels = [1.0] * 7 if err is None else [1.0] * (err - 1) + [0.0] + [None] * (7 - err)
        rows.append({"prompt": f"q{i}", "completions": steps, "labels": labels, "answer": "42", "id": f"s{i}", "source": "t", "label_scheme": "binary", "meta": {}})
    data = tmp_path / "sols.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gen = Scripted()
    monkeypatch.setattr(generate, "make_generator", lambda *a, **k: gen)
    m = cli(["--data", str(data), "--format", "stepwise", "--labelers", "rules", "mc-linear", "mc-binary", "--mc_completions", "2",
             "--results_dir", str(tmp_path / "r"), "--run_name", "mc"])
    for name in ("mc-linear", "mc-binary"):  # both searches find the scripted first error exactly
        assert m["per_labeler"][name]["human"]["exact"] == 1.0
    assert m["pairwise"]["exact"]["mc-linear"]["mc-binary"] == 1.0
    lin, bin_ = m["per_labeler"]["mc-linear"]["cost"], m["per_labeler"]["mc-binary"]["cost"]
    assert lin["rollouts_per_solution"] == 2 * 6  # every prefix but the last, 2 rollouts each
    # binary: no rollout for the right solution, at most ceil(log2(7)) = 3 prefixes for a wrong one
    assert 0 < bin_["rollouts_per_solution"] <= 2 * 3 * 4 / 5
    assert lin["generated_tokens_per_solution"] == lin["rollouts_per_solution"] * 4  # "The answer is: N"
    # rules sees no arithmetic, only the final answer: it flags the answer step of every wrong solution, so it
    # gets the error-vs-no-error call right everywhere but the first error only where it is the last step
    assert m["per_labeler"]["rules"]["human"]["exact"] == 2 / 5 and m["per_labeler"]["rules"]["human"]["error_vs_no_error"] == 1.0
    kept = {tuple(r["labelers"]): r["kept_share"] for r in m["consensus"]}
    assert kept[("mc-linear", "mc-binary")] == 1.0 and kept[("rules", "mc-binary")] == 2 / 5


def test_graded_format_reads_the_main_jobs_graded_rows(tmp_path):
    from prm.data import load
    from prm.schema import DataError

    row = {"id": "q1#0", "question_id": "q1", "prompt": "What is 2+3?", "answer": "5", "steps": ["2 + 3 = 6.", "The answer is 6."],
           "step_correct": [False, False], "solution_correct": False, "labeler": "rules"}
    f = tmp_path / "graded.jsonl"
    f.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": "q1#1", "steps": "not a list"}) + "\n")
    with pytest.raises(DataError, match="steps"):
        load("graded", str(f))
    f.write_text(json.dumps(row) + "\n")
    rec = load("graded", str(f))[0]
    # the labeler's verdicts are kept apart: they are no human labels
    assert rec["completions"] == row["steps"] and rec["labels"] == [None, None] and rec["label_scheme"] == "none"
    assert rec["meta"]["step_correct"] == [False, False] and rec["meta"]["labeler"] == "rules" and rec["id"] == "q1#0"


def test_offline_labelers_grade_an_answer_read_only_across_steps():
    # CHAMP solutions whose final answer is read from the joined text but from no single step used
    # to crash rules and reference (StopIteration); the answer-stating step is then the last one
    from prm.answers import extract_answer
    from prm.data import load
    from prm.label.verify import make_verifier

    recs = [r for r in load("champ_fws", None, limit=400)
            if extract_answer("\n".join(r["completions"])) is not None and all(extract_answer(s) is None for s in r["completions"])]
    assert recs
    for name in ("rules", "reference"):
        for r in recs[:3]:
            g = make_verifier(name).grade(r["prompt"], r["completions"], r["answer"])
            assert g.solution_correct is not False or g.step_correct[-1] is False
