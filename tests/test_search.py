"""PRM-guided search: exact picks on a scripted generator/PRM pair, every strategy on tiny real
models, and the prefix-cache generator against recomputing every prefix."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from prm.registry import UnknownName
from prm.search import STRATEGIES, LocalStepGenerator, Partial, SearchSettings, run_search
from prm.search.select import pick, vote

# ---------------------------------------------------------------- scripted generator and PRM


class ScriptedGenerator:
    """Child k of a parent gets the step ``script(depth, k, parent)``; a step holding 'answer is'
    finishes the solution. Records every call so the tests can check what the search expanded."""

    def __init__(self, script):
        self.script, self.calls, self.tokens = script, [], 0

    def expand(self, problem: str, parents: Sequence[Partial], counts: Sequence[int], *, to_end: bool = False) -> list[list[Partial]]:
        self.calls.append(([list(p.steps) for p in parents], list(counts), to_end))
        out = []
        for p, c in zip(parents, counts):
            kids = []
            for k in range(c):
                step = self.script(len(p.steps), k, p)
                self.tokens += 1
                kids.append(Partial(steps=[*p.steps, step], token_ids=[*p.token_ids, k], done=to_end or "answer is" in step, tokens=p.tokens + 1))
            out.append(kids)
        return out


class ScriptedPRM:
    """A step 's=0.7 ...' scores 0.7."""

    def score_candidates(self, problem: str, candidates: Sequence[Sequence[str]], batch_size: int = 16) -> list[list[float]]:
        return [[float(re.match(r"s=([\d.]+)", st).group(1)) for st in c] for c in candidates]


ROUND0 = [0.1, 0.9, 0.5, 0.7, 0.2, 0.3, 0.8, 0.4]


def beam_script(depth: int, k: int, parent: Partial) -> str:
    if depth == 0:
        return f"s={ROUND0[k]} first"
    # second step: the answer; its score and value depend on the parent and k
    first = float(parent.steps[0][2:5])
    return f"s={first * (0.5 if k else 1.0):.3f} The answer is: {int(first * 10) + k}"


def test_beam_keeps_best_last_step_scores_and_picks_best():
    gen = ScriptedGenerator(beam_script)
    res = run_search("beam", "p", gen, ScriptedPRM(), SearchSettings(n=8, beam_width=4, max_steps=5))
    # round 0: one shared root, 8 samples; round 1: the N/M = 2 best first steps (0.9, 0.8), 4 each
    assert gen.calls[0] == ([[]], [8], False)
    assert gen.calls[1] == ([["s=0.9 first"], ["s=0.8 first"]], [4, 4], False)
    assert len(gen.calls) == 2  # every child of round 1 ended with an answer
    assert res.answer == "9" and res.steps == ["s=0.9 first", "s=0.900 The answer is: 9"]
    assert res.prm_calls == 16 and res.tokens == 16 and len(res.candidates) == 8


def test_beam_last_round_generates_to_the_end():
    gen = ScriptedGenerator(lambda d, k, p: f"s=0.{k + 1} step{d}")  # never writes an answer
    res = run_search("beam", "p", gen, ScriptedPRM(), SearchSettings(n=4, beam_width=2, max_steps=3))
    assert [c[2] for c in gen.calls] == [False, False, True]
    assert gen.calls[1][1] == [2, 2] and gen.calls[2][1] == [2, 2]
    assert len(res.steps) == 3 and res.candidates and all(c["score"] is not None for c in res.candidates)


def dvts_script(depth: int, k: int, parent: Partial) -> str:
    if depth == 0:
        return f"s={[0.3, 0.6, 0.2, 0.9][k]} open"
    if depth == 1:
        return f"s={[0.5, 0.4][k]} middle"
    return f"s={[0.2, 0.7][k]} The answer is: {len(parent.steps[0]) + k}"


def test_dvts_is_greedy_within_independent_subtrees():
    gen = ScriptedGenerator(dvts_script)
    res = run_search("dvts", "p", gen, ScriptedPRM(), SearchSettings(n=4, beam_width=2, max_steps=6))
    # round 0: root shared, N samples, split into N/M = 2 subtrees of M = 2; each keeps its best
    assert gen.calls[0] == ([[]], [4], False)
    assert gen.calls[1] == ([["s=0.6 open"], ["s=0.9 open"]], [2, 2], False)
    assert gen.calls[2] == ([["s=0.6 open", "s=0.5 middle"], ["s=0.9 open", "s=0.5 middle"]], [2, 2], False)
    assert len(gen.calls) == 3
    # candidates: the M alternatives of each subtree's last round; pick by last score (0.7)
    assert len(res.candidates) == 4 and res.steps[-1].startswith("s=0.7") and res.steps[0] == "s=0.6 open"


def bon_script(depth: int, k: int, parent: Partial) -> str:
    # answers 7, 5, 5, 7, 9, 7 with scores chosen so that the three pickers disagree
    return f"s={[0.2, 0.9, 0.8, 0.1, 0.95, 0.3][k]} The answer is: {[7, 5, 5, 7, 9, 7][k]}"


@pytest.mark.parametrize(
    "strategy, answer, calls",
    [
        ("majority", "7", 0),  # most frequent answer (three 7s), no PRM call
        ("best_of_n", "9", 6),  # the single highest score (0.95)
        ("weighted_majority", "5", 6),  # 0.9 + 0.8 = 1.7 beats 7's 0.6 and 9's 0.95
    ],
)
def test_sampling_strategies_pick_exactly(strategy, answer, calls):
    gen = ScriptedGenerator(bon_script)
    res = run_search(strategy, "p", gen, ScriptedPRM(), SearchSettings(n=6))
    assert gen.calls == [([[]], [6], True)]  # one call: N complete samples
    assert res.answer == answer and res.prm_calls == calls and len(res.candidates) == 6


@pytest.mark.parametrize(
    "answers, weights, expected",
    [
        (["1", "2", "2"], [1, 1, 1], 1),  # plain majority
        (["1", "2", "2"], [3, 1, 1], 0),  # weight beats count
        ([None, "3", None], [9, 1, 9], 1),  # no answer never wins while some candidate has one
        (["0.5", "1/2", "2"], [1, 1, 1.5], 0),  # equal answers grouped by the one equality check
    ],
)
def test_vote(answers, weights, expected):
    assert vote(answers, weights) == expected


def test_pick_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown selection method"):
        pick([{"answer": "1", "step_scores": [0.5]}], "best")


@pytest.mark.parametrize(
    "settings, match",
    [
        (SearchSettings(n=6, beam_width=4), "multiple of beam_width"),  # N/M must be whole subtrees
        (SearchSettings(n=4, beam_width=2, max_steps=0), "max_steps"),  # at least one round
    ],
)
@pytest.mark.parametrize("strategy", ["beam", "dvts"])
def test_tree_search_settings_are_checked(strategy, settings, match):
    with pytest.raises(ValueError, match=match):
        run_search(strategy, "p", ScriptedGenerator(beam_script), ScriptedPRM(), settings)


def test_unknown_strategy_lists_known():
    with pytest.raises(UnknownName, match="beam, best_of_n, dvts, majority, weighted_majority"):
        STRATEGIES.get("mcts")


# ---------------------------------------------------------------- tiny real models


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama with SmolLM2's tokenizer (generator), and a tiny PRM on the same shape."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from prm.models.backbones import resolve
    from prm.models.prm import PRM, PRMSpec

    tok = AutoTokenizer.from_pretrained(resolve("smollm2"))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, max_position_embeddings=2048)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(cfg).eval()
    d = tmp_path_factory.mktemp("tiny-llama")
    cfg.save_pretrained(d)
    tok.save_pretrained(d)
    torch.manual_seed(1)
    prm = PRM.from_backbone(str(d), PRMSpec(separator="\n"), use_pretrained=False)
    return lm, tok, prm


@pytest.mark.parametrize("strategy", ["majority", "best_of_n", "weighted_majority", "beam", "dvts"])
def test_every_strategy_on_tiny_real_models(tiny, strategy):
    lm, tok, prm = tiny
    gen = LocalStepGenerator(lm, tok, temperature=1.0, max_step_tokens=6, max_tokens=18, seed=3)
    res = run_search(strategy, "Tom has 3 apples and buys 4 more. How many?", gen, prm, SearchSettings(n=4, beam_width=2, max_steps=3))
    assert res.tokens == gen.tokens > 0
    assert res.steps and res.steps in [c["steps"] for c in res.candidates]
    if strategy == "majority":
        assert res.prm_calls == 0
    else:
        assert res.prm_calls >= len(res.candidates) > 0
        scored = [c for c in res.candidates if c["step_scores"]]
        assert all(0.0 <= x <= 1.0 for c in scored for x in c["step_scores"])
        assert all(len(c["step_scores"]) == len(c["steps"]) for c in scored)
    if strategy in ("beam", "dvts"):  # tree searches stop within the step limit (the last round runs to the end)
        assert all(len(c["steps"]) <= 3 * 6 for c in res.candidates)


@pytest.mark.parametrize("temperature", [0.0, 1.0])  # greedy, and sampling with the same seed
def test_prefix_reuse_equals_recomputing(tiny, temperature):
    lm, tok, _ = tiny
    kw = dict(temperature=temperature, max_step_tokens=8, max_tokens=30, seed=7)
    reuse, recompute = LocalStepGenerator(lm, tok, reuse_prefix=True, **kw), LocalStepGenerator(lm, tok, reuse_prefix=False, **kw)
    prob = "What is 2 + 3?"
    a, b = reuse.expand(prob, [Partial()], [3]), recompute.expand(prob, [Partial()], [3])
    assert [c.token_ids for c in a[0]] == [c.token_ids for c in b[0]]
    parents = [a[0][0], a[0][2]]  # prefixes of different lengths share a batch
    a2, b2 = reuse.expand(prob, parents, [2, 1]), recompute.expand(prob, parents, [2, 1])
    assert [[c.token_ids for c in g] for g in a2] == [[c.token_ids for c in g] for g in b2]
    assert [len(g) for g in a2] == [2, 1] and all(c.token_ids[: len(p.token_ids)] == p.token_ids for p, g in zip(parents, a2) for c in g)
    assert reuse.tokens == recompute.tokens == sum(len(c.token_ids) for c in a[0]) + sum(len(c.token_ids) - len(p.token_ids) for p, g in zip(parents, a2) for c in g)
    # parents this generator did not make (no kept keys/values): their tokens after the prompt run first
    fresh = LocalStepGenerator(lm, tok, reuse_prefix=True, **kw)
    fresh._calls = dict(recompute._calls)  # the same random stream position
    deeper = [a2[0][1], a2[1][0], a[0][1]]  # tails of three different lengths
    a3, b3 = fresh.expand(prob, deeper, [1, 2, 1]), recompute.expand(prob, deeper, [1, 2, 1])
    assert [[c.token_ids for c in g] for g in a3] == [[c.token_ids for c in g] for g in b3]


def test_shared_prefix_attention_equals_attention_over_the_whole_sequence():
    # a prefix held once (batch 1) plus per-row tails with padding gives what attention over each
    # row's full sequence gives (grouped-query heads: 4 query heads share each of 2 kv heads)
    import torch.nn.functional as F

    from prm.search.kv import RowCache, shared_prefix_attention

    torch.manual_seed(0)
    B, H, Hkv, P, n, q, d = 3, 8, 2, 5, 6, 2, 16
    kp, vp = torch.randn(1, Hkv, P, d), torch.randn(1, Hkv, P, d)
    k, v, qs = torch.randn(B, Hkv, n, d), torch.randn(B, Hkv, n, d), torch.randn(B, H, q, d)
    cache = RowCache([(kp, vp)], [k], [v], torch.ones(B, n, dtype=torch.bool), n - q)
    cache.valid[1, :2] = False  # row 1 has two padding columns
    mask = cache.mask(q)
    got, _ = shared_prefix_attention(type("M", (), {"layer_idx": 0})(), qs, k, v, mask, scaling=d**-0.5, prm_kv=cache)
    full_k, full_v = torch.cat([kp.expand(B, -1, -1, -1), k], 2), torch.cat([vp.expand(B, -1, -1, -1), v], 2)
    full_mask = torch.cat([torch.ones(B, 1, q, P, dtype=torch.bool), mask], -1)
    ref = F.scaled_dot_product_attention(qs, full_k.repeat_interleave(H // Hkv, 1), full_v.repeat_interleave(H // Hkv, 1), attn_mask=full_mask)
    assert torch.allclose(got, ref.transpose(1, 2), atol=1e-5)


def test_same_seed_repeats_and_other_seed_differs(tiny):
    lm, tok, _ = tiny
    runs = [LocalStepGenerator(lm, tok, temperature=1.0, max_step_tokens=8, seed=s).expand("q", [Partial()], [4])[0] for s in (1, 1, 2)]
    ids = [[c.token_ids for c in r] for r in runs]
    assert ids[0] == ids[1] and ids[0] != ids[2]


def test_generator_loads_where_and_how_asked(tiny_lm):
    # exp/search.py's --device/--dtype reach a generator loaded by path: bf16 weights on the CPU, same interface
    gen = LocalStepGenerator(tiny_lm, temperature=1.0, max_step_tokens=4, max_tokens=8, seed=0, dtype=torch.bfloat16, device="cpu")
    p = next(gen.model.parameters())
    assert p.dtype == torch.bfloat16 and p.device.type == "cpu"
    (kids,) = gen.expand("q", [Partial()], [2])
    assert len(kids) == 2 and all(1 <= len(c.token_ids) <= 4 for c in kids)

@pytest.mark.slow
def test_smollm2_steps_end_at_the_separator():
    """SmolLM2 itself: a step stops at its line break, and prefix reuse gives the same greedy tokens."""
    kw = dict(temperature=0.0, max_step_tokens=48, max_tokens=200)
    reuse = LocalStepGenerator("smollm2", **kw)
    recompute = LocalStepGenerator(reuse.model, reuse.tokenizer, reuse_prefix=False, **kw)
    prob = "A box has 3 rows of 5 eggs. 4 eggs break. How many eggs are left?"
    (a,), (b,) = reuse.expand(prob, [Partial()], [2]), recompute.expand(prob, [Partial()], [2])
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    first = a[0]
    assert len(first.steps) == 1 and "\n" in reuse.tokenizer.decode(first.token_ids[-1:]) and not first.done
    (nxt,) = reuse.expand(prob, [first], [1])
    assert nxt[0].steps[0] == first.steps[0] and len(nxt[0].steps) == 2
    (full,) = reuse.expand(prob, [Partial()], [1], to_end=True)
    assert full[0].done and len(full[0].steps) >= 2


# ---------------------------------------------------------------- exp/search.py and the benchmark


@pytest.fixture(scope="module")
def saved_tiny(tiny, tmp_path_factory):
    """The tiny generator and PRM saved as folders, as the script loads them."""
    lm, tok, prm = tiny
    d = tmp_path_factory.mktemp("saved")
    lm.save_pretrained(d / "gen")
    tok.save_pretrained(d / "gen")
    prm.save(d / "prm")
    return d / "gen", d / "prm"


@pytest.mark.slow
def test_search_script_writes_metrics_and_figures(saved_tiny, tmp_path):
    from exp.search import cli
    from prm.io import REPO_ROOT
    from prm.plots import load_all

    gen, prm = saved_tiny
    metrics = cli(["--problems", str(REPO_ROOT / "data" / "sample_problems.jsonl"), "--limit", "2", "--model", str(gen), "--prm", str(prm),
                                  "--ns", "2", "4", "--beam_width", "2", "--max_steps", "2", "--max_step_tokens", "5", "--max_tokens", "12",
                   "--results_dir", str(tmp_path), "--run_name", "t"])
    run = tmp_path / "search" / "t"
    assert (run / "config.json").is_file() and (run / "predictions.jsonl").is_file()
    rows = {(r["strategy"], r["n"]): r for r in metrics["rows"]}
    assert set(rows) == {(s, n) for s in ("majority", "best_of_n", "weighted_majority", "beam", "dvts") for n in (2, 4)}
    for r in rows.values():
        assert 0.0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1.0 and r["generated_tokens"] > 0 and r["wall_seconds"] > 0
    # the three sampling strategies share their samples, so they are charged the same tokens
    assert rows[("majority", 4)]["generated_tokens"] == rows[("best_of_n", 4)]["generated_tokens"] == rows[("weighted_majority", 4)]["generated_tokens"]
    assert rows[("majority", 4)]["prm_calls"] == 0 and rows[("best_of_n", 4)]["prm_calls"] > 0
    preds = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 * 5 * 2 and all(isinstance(p["correct"], bool) for p in preds)
    made = load_all().get("search")(tmp_path, tmp_path / "figures")
    assert [m.stem.name for m in made] == ["search_t"] and made[0].stem.with_suffix(".png").is_file()


@pytest.mark.slow
def test_search_script_resumes_a_killed_run(saved_tiny, tmp_path, monkeypatch):
    # a run killed after its first (strategy, N) keeps it: the rerun searches only the rest and
    # reports the same table as an uninterrupted run
    import exp.search as script
    from prm.io import REPO_ROOT

    gen, prm = saved_tiny
    argv = ["--problems", str(REPO_ROOT / "data" / "sample_problems.jsonl"), "--limit", "2", "--model", str(gen), "--prm", str(prm),
            "--strategies", "best_of_n", "beam", "--ns", "2", "--beam_width", "2", "--max_steps", "2", "--max_step_tokens", "5",
            "--max_tokens", "12", "--results_dir", str(tmp_path)]
    whole = script.cli([*argv, "--run_name", "whole"])
    real, calls = script.run_search, []

    def killed_after_first_strategy(name, *a, **k):
        calls.append(name)
        if name == "beam":
            raise KeyboardInterrupt
        return real(name, *a, **k)

    monkeypatch.setattr(script, "run_search", killed_after_first_strategy)
    with pytest.raises(KeyboardInterrupt):
        script.cli([*argv, "--run_name", "killed"])
    assert calls == ["best_of_n", "best_of_n", "beam"]
    calls.clear()
    monkeypatch.setattr(script, "run_search", lambda name, *a, **k: (calls.append(name), real(name, *a, **k))[1])
    resumed = script.cli([*argv, "--run_name", "killed"])
    assert calls == ["beam", "beam"]  # best_of_n was not searched again
    strip = [{k: v for k, v in r.items() if k != "wall_seconds"} for r in whole["rows"]]
    assert [{k: v for k, v in r.items() if k != "wall_seconds"} for r in resumed["rows"]] == strip
    assert len((tmp_path / "search" / "killed" / "predictions.jsonl").read_text().splitlines()) == 2 * 2
    calls.clear()
    script.cli([*argv, "--run_name", "killed", "--overwrite"])  # --overwrite starts over
    assert calls == ["best_of_n", "best_of_n", "beam", "beam"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--strategies", "beam,mcts"], "unknown ['mcts']; known:"),  # unknown names list the known ones
        (["--ns", "4", "6", "--strategies", "beam"], "multiple of --beam_width"),  # beam needs whole groups
        (["--ns", "four"], "invalid int value: 'four'"),  # bad number list
        (["--strategies", "best_of_n"], "--prm is required"),  # PRM strategies need a PRM
    ],
)
def test_search_script_bad_flags(flags, message):
    from exp.search import TYPES
    from prm.config import ConfigError, parse

    with pytest.raises((SystemExit, ConfigError), match=re.escape(message)):
        parse(TYPES, flags)


@pytest.mark.slow
def test_search_benchmark_smoke(tmp_path, shared_data):
    from exp.bench import main
    from prm.plots import load_all

    out = json.loads(Path(main(["search", "--smoke", "--results_dir", str(tmp_path), "--work_dir", str(tmp_path / "work")])).read_text())
    assert out["identical_outputs"] == 1.0  # same seed, same tokens with and without prefix reuse
    assert out["generated_tokens"]["reuse"] == out["generated_tokens"]["recompute"] > 0
    assert set(out["solutions_per_s"]) == {"reuse", "recompute"} and out["speedup"]["n"] == 2
    made = load_all().get("bench_search")(tmp_path, tmp_path / "figures")
    assert made and made[0].stem.with_suffix(".png").is_file()


@pytest.mark.parametrize("recipe", ["offline", "tiny"])  # every committed recipe parses and names known strategies
def test_search_recipes_parse(recipe):
    from exp.search import TYPES
    from prm.config import parse
    from prm.io import REPO_ROOT

    # the PRM it names is trained by exp/configs/train_prm/offline.yaml (not committed): a backbone stands in
    _, cfg, _ = parse(TYPES, ["--config", str(REPO_ROOT / "exp" / "configs" / "search" / f"{recipe}.yaml"), "--prm", "minilm"])
    assert cfg.strategies and cfg.ns and (REPO_ROOT / cfg.problems).is_file()


@pytest.mark.api
@pytest.mark.slow
def test_claude_generator_drives_beam_search(fake_api, tiny, tmp_path):
    from prm.search import make_generator

    def make():
        return make_generator("claude", model="claude-sonnet-4-6", api_key="sk-test", base_url=fake_api.url, cache_path=tmp_path / "c.jsonl",
                              temperature=0.8, seed=0)

    prob = "Tom has 3 bags of 4 apples. How many apples?"
    gen = make()
    res = run_search("beam", prob, gen, tiny[2], SearchSettings(n=4, beam_width=2, max_steps=2))
    users = [r["messages"][0]["content"] for r in fake_api.requests]
    # round 1: 4 one-step requests from the bare problem; round 2: 2 survivors x 2, asked to finish
    assert len(users) == 8 and sum("Write the next step only." in u for u in users) == 4 and sum("Finish the solution." in u for u in users) == 4
    assert fake_api.requests[0]["max_tokens"] == 128 and "temperature" not in fake_api.requests[0]
    assert res.tokens == gen.tokens == 8 * 20  # the fake API reports 20 output tokens per reply
    assert res.steps[0] == "The two amounts are 3 and 4." and res.answer in ("7", "12")
    # a rerun of the same search is answered from the request cache
    again = run_search("beam", prob, make(), tiny[2], SearchSettings(n=4, beam_width=2, max_steps=2))
    assert len(fake_api.requests) == 8 and again.steps == res.steps


def test_vllm_generator_says_what_it_needs():
    # without vLLM and a GPU the generator refuses with one clear sentence instead of an import error
    import importlib.util

    from prm.search import make_generator

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM and a GPU are here")
    with pytest.raises(RuntimeError, match="needs vLLM installed and a CUDA GPU"):
        make_generator("vllm", model="smollm2")
