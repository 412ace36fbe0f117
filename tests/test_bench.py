"""The benchmarks' --smoke runs (tiny real models, real files) and the shared-prefix scorer."""

import json
from pathlib import Path

import pytest
import torch

from prm.io import REPO_ROOT


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from exp.benchmarks.common import tiny_backbone
    from prm.models.prm import PRM, PRMSpec

    d = tiny_backbone("llama", tmp_path_factory.mktemp("tiny") / "llama")
    torch.manual_seed(0)
    return PRM.from_backbone(str(d), PRMSpec(label_scheme="binary"), use_pretrained=False)


def test_shared_prefix_scores_equal_full_sequences(tiny_llama):
    # the KV-cache path must give the single-pass scores: same tokens, causal attention
    cands = [["2+2 = 4.", "The answer is 4."], ["2+2 = 5.", "So 5 it is.", "The answer is 5."], ["4"]]
    full = tiny_llama.score_batch([("What is 2+2?", c) for c in cands])
    shared = tiny_llama.score_candidates("What is 2+2?", cands, batch_size=2)
    assert [len(s) for s in shared] == [2, 3, 1]
    assert max(abs(a - b) for u, v in zip(full, shared) for a, b in zip(u, v)) < 1e-5


def _bench(name, tmp_path, *extra):
    from exp.bench import main
    from prm.plots import load_all

    out = main([name, "--smoke", "--results_dir", str(tmp_path), "--work_dir", str(tmp_path / "work"), *extra])
    # its figure is drawn from the file just written
    made = load_all().get(f"bench_{name}")(tmp_path, tmp_path / "figures")
    assert made and all(m.stem.with_suffix(".png").is_file() for m in made)
    return json.loads(Path(out).read_text())


def test_label_cost_smoke(tmp_path, shared_data):
    r = _bench("label_cost", tmp_path)
    s, m = r["schemes"], "claude-sonnet-4-6"
    # one request per solution vs one per step; the batch row was really sent as a Message Batch
    assert s["per_solution"]["requests"] == 1.0 and s["per_step"]["requests"] == r["steps"] / r["solutions"] > 1
    assert s["batch"]["requests"] == 1.0 and s["batch"]["batch"]
    # the fake API reports cache reads of the instructions on every priced model (Haiku/Opus 4.5 from 4096
    # tokens), none without the mark, and none for the short v1 rules (below every minimum)
    assert all(s["per_solution"]["by_model"][x]["cache_read_tokens"] > 0 for x in s["per_solution"]["by_model"])
    assert s["per_solution_uncached"]["cache_read_tokens"] == 0 and s["per_solution_v1_rules"]["cache_read_tokens"] == 0
    assert len(r["caching"]["cached_on"]) == 4
    usd = {k: v["usd_per_1000_solutions"][m] for k, v in s.items()}
    # (in a smoke run of 6 solutions the one cache write weighs more than at scale)
    assert usd["per_step"] > usd["per_solution"] > usd["batch"] and usd["per_solution_uncached"] > 1.5 * usd["per_solution"]
    # the estimate printed before paid work is the measured cost up to the output-token estimate
    assert s["per_solution"]["estimate_usd_per_1000_solutions"] == pytest.approx(usd["per_solution"], rel=0.05)


def test_score_smoke(tmp_path, shared_data):
    # every kind: PRM lab's path scores as its model card's usage does
    r = _bench("score", tmp_path)
    assert set(r["kinds"]) == {"Qwen2-0.5B-Reward-Math-Sheperd", "math-shepherd-mistral-7b-prm", "Llama3.1-8B-PRM-Deepseek-Data",
                               "Qwen2.5-Math-PRM-7B", "Skywork-o1-Open-PRM-Qwen-2.5-1.5B", "Mistral-7b-PRM-Math-Shepherd"}
    assert all(k["max_abs_score_diff_fp32"] < 1e-4 and k["speedup"]["n"] == 1 for k in r["kinds"].values())


def test_score_best_of_n_smoke(tmp_path, shared_data):
    r = _bench("score", tmp_path, "--kinds", "false")
    res = r["by_n"]["4"]
    assert res["max_abs_score_diff_fp32"] < 1e-4
    assert res["tokens"]["prefix_cache_padded"] < res["tokens"]["naive_padded"]
    assert set(res["solutions_per_s"]) == {"naive_fp32", "prefix_cache_fp32", "naive_bf16", "prefix_cache_bf16"}


def test_prefix_smoke(tmp_path, shared_data):
    r = _bench("prefix", tmp_path)
    assert r["scores_equal"] and r["kind"] == "causal"
    assert r["per_prefix"]["rows"] == r["steps"] and r["per_prefix"]["tokens"] > r["single"]["tokens"]


def test_efficiency_smoke(tmp_path, shared_data):
    r = _bench("efficiency", tmp_path)
    for run in r["runs"].values():
        assert 0 < run["mfu"] < 1 and run["model_flops"] > 0


@pytest.mark.slow  # two processes (ours, TRL), each importing torch/transformers
def test_train_smoke(tmp_path, shared_data):
    # ours always; TRL too when its isolated environment exists (a smoke run never installs it)
    r = _bench("train", tmp_path)
    (b,) = r["backbones"].values()
    ours = b["runs"]["ours"][0]
    assert ours["steps"] == 3 and 0 <= ours["padding_fraction"] < 1 and ours["peak_rss_mb"] > 0
    assert 0 <= ours["step_accuracy"] <= 1
    assert 0 < ours["mfu"] < 1 and b["matmul_peak_flops_per_s"]  # model FLOP/s over the peak measured around the rounds
    from prm.device import bf16_default

    assert ours["bf16"] == bf16_default()  # precision auto: bf16 only where this machine computes it fast
    if (REPO_ROOT / ".bench" / "trl-venv" / "bin" / "python").is_file():
        trl = b["runs"]["trl_best"][0]
        assert trl["system"] == "trl" and trl["bf16"] == ours["bf16"] and not trl["gradient_checkpointing"] and trl["steps"] == 3
        assert trl["train_sampling_strategy"] == "group_by_length"  # the length-grouped batches ours uses too
        assert 0 < trl["mfu"] < 1
        assert b["ratios"]["ours_vs_trl_best"]["examples_per_s"]["n"] == 1


def test_model_flops_counts_rows_not_embeddings(tmp_path):
    from transformers import AutoConfig, AutoModelForTokenClassification

    from exp.benchmarks.common import tiny_backbone
    from exp.benchmarks.measure import model_flops

    model = AutoModelForTokenClassification.from_config(AutoConfig.from_pretrained(tiny_backbone("bert", tmp_path / "bert")))
    cfg = model.config
    # by hand: every parameter but the three embedding tables (their LayerNorm computes)
    tables = ("word_embeddings", "position_embeddings", "token_type_embeddings")
    n = sum(p.numel() for name, p in model.named_parameters() if not any(t + "." in name for t in tables))
    rows = [5, 9]  # two rows: 14 tokens, 25 + 81 squared
    assert model_flops(model, sum(rows), sum(r * r for r in rows)) == 6 * n * 14 + 12 * cfg.num_hidden_layers * cfg.hidden_size * 106


def test_train_bench_precision_candidates(monkeypatch):
    import prm.device
    from exp.benchmarks.train import TrainBench, trl_variants

    monkeypatch.setattr(prm.device, "cpu_bf16_fast", lambda: False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    auto = trl_variants(TrainBench())  # no bf16 instructions: TRL's best candidates run in fp32
    assert auto == {"trl_eager_fp32": ("eager", "group_by_length", False), "trl_sdpa_fp32": ("sdpa", "group_by_length", False)}
    both = trl_variants(TrainBench(trl_precision="bf16,fp32,auto", trl_attention=["eager"]))
    assert both == {"trl_eager": ("eager", "group_by_length", True), "trl_eager_fp32": ("eager", "group_by_length", False)}
    with pytest.raises(ValueError, match="trl_precision"):
        TrainBench(trl_precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        TrainBench(precision="half")


def test_bench_rejects_unknown_command():
    from exp.bench import main

    with pytest.raises(SystemExit, match="usage"):
        main(["nope"])


def test_bench_rows_are_trl_shaped_and_split_by_problem(shared_data):
    from exp.benchmarks.common import gsm8k_rows

    train, held = gsm8k_rows(str(shared_data / "gsm8k" / "train.jsonl"), 40, 10)
    assert len(train) == 40 and len(held) == 10
    # every step labeled (TRL cannot express unlabeled steps), wrong steps only last
    for r in train + held:
        assert len(r["labels"]) == len(r["completions"]) and all(isinstance(v, bool) for v in r["labels"])
        assert all(r["labels"][:-1])
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}


def test_spread_and_throughput_skip_warmup():
    from exp.benchmarks.common import spread
    from exp.benchmarks.measure import CountingCollator, throughput

    s = spread([2.0, 1.0, 4.0])
    assert s["median"] == 2.0 and s["rel_spread"] == 1.5
    c = CountingCollator(lambda rows: {"input_ids": torch.zeros(len(rows), max(len(r["input_ids"]) for r in rows))})
    c([{"input_ids": [1] * 10}, {"input_ids": [1] * 5}])  # warm-up step: not in the rate
    c([{"input_ids": [1] * 4}, {"input_ids": [1] * 4}])
    m = throughput([0.0, 5.0, 7.0], c, warmup=1)
    assert m["examples_per_s"] == 1.0 and m["tokens_per_s"] == 4.0 and m["padding_fraction"] == pytest.approx(1 - 23 / 28)
    assert m["positions_per_token"] == pytest.approx(28 / 23)


@pytest.mark.slow
def test_serve_smoke(tmp_path, shared_data):
    # a real server process on loopback, real HTTP clients; its scores equal the in-process ones
    r = _bench("serve", tmp_path)
    assert set(r["schemes"]) == {"in_process", "server_batched", "server_unbatched"}
    assert all(s["cpu_ms_per_request"]["median"] > 0 for s in r["schemes"].values())
    assert r["max_abs_score_diff"] < 1e-4
    assert all(s["requests_done"] == [16] for s in r["schemes"].values())
    assert r["items_per_score_call"]["server_unbatched"] == 1.0 and r["ratios"]["server_batched_vs_in_process"]["requests_per_s"]["median"] > 0


def test_mc_search_smoke(tmp_path):
    # binary vs linear first-error search on the same solutions and rollouts (tiny random Llama generator)
    r = _bench("mc_search", tmp_path)
    assert r["solutions"] == len(r["per_solution"]) > 0
    for s in ("linear", "binary"):
        assert r["all"][s]["rollouts"]["n"] == r["solutions"]
    # the binary search never rolls out more prefixes than the linear scan, and reads them all from the cache
    assert all(x["binary"]["rollouts"] <= max(x["linear"]["rollouts"], 2 * 3) for x in r["per_solution"])
    assert r["sampled"]["binary_new"] == 0 and r["sampled"]["linear"] > 0
    assert 0.0 <= r["all"]["disagreement_rate"] <= 1.0 and r["load_average_1min"]["before"] >= 0
