"""exp/dreamprm_minif2f.py end to end on a tiny real model, and the offline miniF2F data builder."""

import json
import random

import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, BertConfig

from exp.dreamprm_minif2f import TYPES, main
from prm.config import parse
from prm.data import load
from prm.data.dreamprm_build import (
    ProofBudget,
    build_minif2f_pair,
    clip_middle,
    corrupt_number,
    cot_response,
    fit_steps,
    is_current,
    proof_steps,
    recipe,
    step_text,
)
from prm.models.backbones import minilm_path
from prm.plots.dreamprm import compare_figure, weight_figures


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=2)
    d = tmp_path_factory.mktemp("tiny")
    AutoModelForTokenClassification.from_config(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


def write_rows(path, n, seed, domains=("algebra", "geometry")):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ok = [rng.random() < 0.6 for _ in range(3)]
        steps = [f"we get {rng.randint(1, 9)} which is {'right' if o else 'wrong'}" for o in ok]
        rows.append({"informal_prefix": f"/-- Show that problem {i} holds. -/", "formal_statement": f"theorem p{i} : True := by\n",
                     "cot_response": cot_response(steps), "cot_steps": [{"pi": float(o)} for o in ok], "meta_label": float(all(ok)),
                     "domain": domains[i % len(domains)]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def configs(tmp_path, tiny_model, *flags):
    return parse(TYPES, _argv(tmp_path, tiny_model, *flags))


def _argv(tmp_path, tiny_model, *flags):
    data = {k: write_rows(tmp_path / f"{k}.jsonl", n, s) for k, n, s in (("train", 16, 0), ("meta", 8, 1), ("heldout", 8, 2))}
    return ["--train_json_file", data["train"], "--meta_json_file", data["meta"], "--heldout_json_file", data["heldout"],
            "--model", tiny_model, "--no_lora", "--max_length", "64", "--split_mode", "headers", "--results_dir", str(tmp_path / "results"),
            "--total_steps", "4", "--batch_size", "4", "--meta_batch_size", "4", "--lr", "1e-3", "--log_every", "1", "--save_every", "2", *flags]


@pytest.mark.slow
def test_dry_run_baseline_reweighted_resume_and_figures(tmp_path, tiny_model):
    dry = main(*configs(tmp_path, tiny_model, "--dry_run", "--run_name", "dry"))
    assert dry["dry_run"] and dry["data"]["domains"] == ["algebra", "geometry"]
    assert not (tmp_path / "results").exists()  # a dry run writes nothing under results

    base = main(*configs(tmp_path, tiny_model, "--baseline", "--run_name", "base"))
    assert base["baseline"] and base["final_weights"] is None and base["steps"] == 4

    rw = main(*configs(tmp_path, tiny_model, "--run_name", "rw"))
    run = tmp_path / "results/dreamprm_minif2f/rw"
    for f in ("config.json", "metrics.json", "log.jsonl", "weights.jsonl", "predictions.jsonl"):
        assert (run / f).is_file(), f
    assert rw["final_weights"] != {"algebra": 1.0, "geometry": 1.0}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint_step_2.pt", "checkpoint_step_4.pt"]
    preds = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == rw["heldout"]["n"] and all(0 <= p["score"] <= 1 for p in preds)

    # resume at step 2 and run to 4: the same log as the uninterrupted run
    straight = (run / "log.jsonl").read_text().splitlines()
    again = main(*configs(tmp_path, tiny_model, "--run_name", "rw", "--resume_step", "2"))
    resumed = (run / "log.jsonl").read_text().splitlines()
    def strip(lines):
        return [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"} for x in lines]
    assert strip(resumed) == strip(straight) and again["steps"] == 4

    made = weight_figures(tmp_path / "results", tmp_path / "fig") + compare_figure(tmp_path / "results", tmp_path / "fig")
    names = sorted(m.stem.name for m in made)
    assert names == ["dreamprm_minif2f_compare", "dreamprm_minif2f_rw_weights"]
    assert all(m.stem.with_suffix(".png").is_file() for m in made)


def test_bad_options_are_one_line_errors(tmp_path, tiny_model):
    with pytest.raises(SystemExit, match="error: --dtype fp16 needs a CUDA device"):
        configs(tmp_path, tiny_model, "--dtype", "fp16", "--device", "cpu")
    with pytest.raises(SystemExit, match="error: aggregation: unknown value 'avg'"):
        configs(tmp_path, tiny_model, "--aggregation", "avg")
    # every row dropped by truncation: the dry run says so instead of "valid"
    with pytest.raises(SystemExit, match="error: --max_length 3: every train row is dropped"):
        cli_args = ["--dry_run", "--max_length", "3", "--max_prompt_length", "1"]
        from exp.dreamprm_minif2f import cli

        cli(_argv(tmp_path, tiny_model, *cli_args))


def test_proof_steps_and_corruption():
    steps = proof_steps("We have $x = 12$. Then $2x = 24$.\n\nSo the answer is 24.")
    assert steps == ["We have $x = 12$.", "Then $2x = 24$.", "So the answer is 24."]
    bad, k = corrupt_number(steps, random.Random(0))
    assert [i for i, (a, b) in enumerate(zip(steps, bad)) if a != b] == [k]
    assert corrupt_number(["no numbers here"], random.Random(0)) is None


def test_build_offline_minif2f_pair(shared_data, tmp_path):
    counts = build_minif2f_pair(tmp_path / "a", shared_data)
    build_minif2f_pair(tmp_path / "b", shared_data)
    for name in ("train", "meta", "heldout"):  # deterministic: the same bytes twice
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
    assert set(counts["train"]["domains"]) == {"augmented_gsm8k", "augmented_math", "gsm8k", "math"}
    assert counts["meta"]["domains"] == {"minif2f": counts["meta"]["rows"]} and counts["meta"]["rows"] > 400
    meta = load("dreamprm", tmp_path / "a" / "meta.jsonl", split_mode="headers")
    for r in meta.select(range(40)):
        err = "-err" in r["id"]
        assert r["meta"]["meta_label"] == (0.0 if err else 1.0)
        if err:  # 1 before the changed step, 0 from it on
            k = r["labels"].index(0.0)
            assert r["labels"] == [1.0] * k + [0.0] * (len(r["labels"]) - k)
        else:
            assert set(r["labels"]) == {1.0}


def _words(text):  # a tokenizer stand-in: one token per word
    return len(text.split())


def test_fit_steps_shortens_the_longest_steps_in_place():
    steps = ["a b c", " ".join(f"w{i}" for i in range(40)), "x y", " ".join(f"v{i}" for i in range(30))]
    budget = ProofBudget(40, _words)
    out, n = fit_steps(steps, budget)
    # every step keeps its place; the two long ones are cut in the middle to a common cap, short ones untouched
    assert len(out) == 4 and out[0] == steps[0] and out[2] == steps[2] and n == 2
    assert sum(_words(step_text(k, s)) for k, s in enumerate(out, 1)) <= 40
    assert out[1].startswith("w0 w1") and out[1].endswith("w38 w39") and "..." in out[1]
    # a proof that fits is left alone; one that cannot fit even shortened is refused
    assert fit_steps(steps, ProofBudget(1000, _words)) == (steps, 0)
    assert fit_steps(steps, ProofBudget(5, _words)) is None
    assert clip_middle("one two three four five six", 4, _words) == "one two ... six"


def test_fitted_build_scores_every_row_and_keeps_the_error_visible(shared_data, tmp_path):
    # a budget small enough that many miniF2F proofs must be shortened
    budget = ProofBudget(60, lambda t: _words(t) + 1, tokenizer="words")
    counts = build_minif2f_pair(tmp_path, shared_data, fit=budget)
    assert counts["heldout"]["shortened"] > 50 and counts["recipe"]["fit"] == {"tokens": 60, "tokenizer": "words"}
    assert is_current(tmp_path, recipe(0, (), budget)) and not is_current(tmp_path, recipe(0, ()))  # another budget: stale
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "heldout.jsonl").read_text().splitlines())}
    recs = {r["id"]: r for r in load("dreamprm", tmp_path / "heldout.jsonl", split_mode="headers")}
    checked = 0
    for rid, r in recs.items():
        assert sum(budget.count(s) for s in r["completions"]) <= 60  # every row fits whole
        twin = recs.get(rid.removesuffix("-err"))
        if rid.endswith("-err") and twin and "shortened_steps" in rows[rid]:
            # the corrupted copy is cut from the same shortened proof: the changed number is in the kept text
            k = rows[rid]["injected_at"]
            assert r["completions"][k] != twin["completions"][k] and r["labels"][k] == 0.0
            assert [c for i, c in enumerate(r["completions"]) if i != k] == [c for i, c in enumerate(twin["completions"]) if i != k]
            checked += 1
    assert checked > 20


def test_scoring_with_a_bar_keeps_every_row_in_place(tmp_path, tiny_model):
    # the script's ScoringTrainer scores in chunks under one bar; each row must stay with its example
    from exp.dreamprm_minif2f import ScoringTrainer
    from prm.models.prm import PRM, PRMSpec
    from prm.train.bilevel import BilevelConfig, BilevelTrainer, encode_records

    prm = PRM.from_backbone(tiny_model, PRMSpec(label_scheme="soft", separator="\n", max_length=64))
    ex, domains, _ = encode_records(prm, load("dreamprm", write_rows(tmp_path / "x.jsonl", 40, 3), split_mode="headers"))
    ours = ScoringTrainer(prm, BilevelConfig(weighting="none"), ex, ex, domains).score(ex, batch_size=2)  # 3 chunks of 16
    plain = BilevelTrainer(prm, BilevelConfig(weighting="none"), ex, ex, domains).score(ex, batch_size=2)
    assert [r["id"] for r in ours] == [e.id for e in ex] == [r["id"] for r in plain]
    assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(ours, plain))
