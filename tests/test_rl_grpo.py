"""exp/rl_grpo.py: a few GRPO steps on the CPU with TRL's GRPOTrainer, a tiny Llama policy (with
SmolLM2's tokenizer and chat template) and a tiny PRM, both built from configs."""

import json

import pytest
import torch

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from exp.benchmarks.common import tiny_backbone
    from prm.models.backbones import resolve
    from prm.models.prm import PRM, PRMSpec

    root = tmp_path_factory.mktemp("rl")
    tok = AutoTokenizer.from_pretrained(resolve("smollm2"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(root / "policy")
    tok.save_pretrained(root / "policy")
    prm = PRM.from_backbone(str(tiny_backbone("bert", root / "prm-config")), PRMSpec(label_scheme="binary", max_length=256), use_pretrained=False)
    prm.save(root / "prm")
    return root / "policy", root / "prm"


@pytest.mark.slow
@pytest.mark.parametrize("answer_weight", [0.0, 0.5])
def test_grpo_steps_log_prm_rewards_and_move_the_policy(tiny_models, tmp_path, answer_weight):
    # guards: the PRM reward reaches TRL's logs, the answer reward joins only when weighted, and training changes the policy;
    # the PRM scores in the dtype asked for (bf16 in one case; auto is fp32 on a CPU)
    from safetensors.torch import load_file

    from exp.rl_grpo import cli

    policy, prm = tiny_models
    metrics = cli([
        "--policy", str(policy), "--prm", str(prm), "--data", "data/sample_problems.jsonl", "--limit", "4",
        "--answer_weight", str(answer_weight), "--results_dir", str(tmp_path), "--run_name", "tiny",
        "--max_steps", "2", "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "12",
        "--learning_rate", "1e-2", "--logging_steps", "1", "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no",
        "--gradient_checkpointing", "false", "--seed", "0", "--prm_dtype", "bf16" if answer_weight else "auto",
    ])
    run = tmp_path / "rl_grpo" / "tiny"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rows = [h for h in log if "rewards/prm_min/mean" in h]
    assert len(rows) == 2 and all(0.0 <= h["rewards/prm_min/mean"] <= 1.0 for h in rows)
    assert ("rewards/answer/mean" in rows[0]) == bool(answer_weight)
    assert "prm_min/steps_per_completion" in rows[0]  # the reward's own metrics are logged too
    assert metrics["steps"] == 2 and metrics["params_changed"] > 0
    assert json.loads((run / "config.json").read_text())["config"]["RLConfig"]["prm_dtype"] == ("bf16" if answer_weight else "auto")
    assert metrics["prm_weights"] == ("cpu bfloat16" if answer_weight else "cpu float32")
    before = load_file(policy / "model.safetensors")
    after = load_file(run / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
