"""The QLoRA memory benchmark's --smoke run: a tiny Llama checkpoint trained with LoRA and with
QLoRA, each in its own process (real files, real bitsandbytes NF4 on the CPU)."""

import json
from pathlib import Path

import pytest

pytest.importorskip("bitsandbytes")


@pytest.mark.slow  # two child processes, each importing torch/transformers
def test_qlora_smoke(tmp_path, shared_data):
    from exp.bench import main
    from prm.plots import load_all

    out = main(["qlora", "--smoke", "--results_dir", str(tmp_path), "--work_dir", str(tmp_path / "work")])
    r = json.loads(Path(out).read_text())
    lora, qlora = r["runs"]["lora"][0], r["runs"]["qlora"][0]
    assert not lora["four_bit"] and qlora["four_bit"]
    # the same LoRA adapters and head train on both bases, for the same steps
    assert lora["trainable_params"] == qlora["trainable_params"] > 0 and lora["steps"] == qlora["steps"] == 3
    # training moved every adapter and head tensor, with activation checkpointing (the default) on
    assert lora["activation_checkpointing"] and all(r["trainable_tensors_changed"] == r["trainable_tensors"] for r in (lora, qlora))
    # 4-bit weights are smaller, even where the (unquantized) embedding dominates a tiny model
    assert qlora["weight_mb"] < lora["weight_mb"]
    assert r["ratios_qlora_vs_lora"]["weight_mb"]["median"] < 1
    for run in (lora, qlora):
        assert run["train_peak_rss_mb"] > run["base_rss_mb"] > 0 and run["rss_after_load_mb"] > run["base_rss_mb"] and run["steps_per_s"] > 0
        assert run["eval_loss"] > 0 and len(run["train_losses"]) == 3
    assert len(r["load_avg"]) == 2 and r["machine"]["cpu_count"]
    # its figure is drawn from the file just written
    made = load_all().get("bench_qlora")(tmp_path, tmp_path / "figures")
    assert made and all(m.stem.with_suffix(".png").is_file() for m in made)
