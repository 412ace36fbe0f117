import pytest
from transformers import AutoModelForCausalLM

from prm.label.generate import LocalGenerator


def test_generate_shapes_and_seeding(tiny_lm):
    gen = LocalGenerator(tiny_lm, max_new_tokens=8, batch_size=3, seed=1)
    out = gen.generate(["What is 2+2?", "What is 3+3?"], n=2)
    assert len(out) == 2 and all(len(s) == 2 for s in out)
    assert gen.generate(["What is 2+2?", "What is 3+3?"], n=2) == out  # same seed, same samples
    assert LocalGenerator(tiny_lm, max_new_tokens=8, batch_size=3, seed=2).generate(["What is 2+2?", "What is 3+3?"], n=2) != out


def test_adapter_directory(tiny_lm, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft.save_pretrained(tmp_path / "adapter")
    gen = LocalGenerator(str(tmp_path / "adapter"), max_new_tokens=4)
    from peft import PeftModel

    assert isinstance(gen.model, PeftModel)
    assert len(gen.generate(["q?"], n=1)[0]) == 1


def test_bad_model_path_is_one_line_error():
    with pytest.raises(FileNotFoundError, match="--sft_model nonexistent_dir: no such directory"):
        LocalGenerator("nonexistent_dir")


@pytest.mark.slow
def test_smollm2_writes_a_solution():
    gen = LocalGenerator("smollm2", max_new_tokens=48, temperature=0.0)
    (sol,) = gen.generate(["Tom has 3 apples and buys 2 more. How many apples does he have?"], n=1)
    assert len(sol[0]) > 10


def test_complete_continues_a_prefix(tiny_lm):
    gen = LocalGenerator(tiny_lm, max_new_tokens=6, batch_size=4, seed=0)
    out = gen.complete(["What is 2+2?", "What is 3+3?"], ["2 + 2 = 4", "3 + 3 = 7\n"], n=3)
    assert len(out) == 2 and all(len(c) == 3 for c in out)
    # the prompt of a completion is the problem's prompt with the prefix as the start of the answer
    assert gen.complete(["What is 2+2?"], ["2 + 2 = 4"], n=3)[0] == gen._sample([gen.prompt("What is 2+2?") + "2 + 2 = 4\n"], 3, "x")[0]


def test_make_generator_without_vllm(tiny_lm):
    from prm.label.generate import make_generator

    assert isinstance(make_generator(tiny_lm, "auto", max_new_tokens=2), LocalGenerator)  # no vLLM/GPU here: transformers
    with pytest.raises(ValueError, match="auto, yes or no"):
        make_generator(tiny_lm, "maybe")


def test_generator_placement(tiny_lm, monkeypatch):
    import torch

    from prm.label.generate.local import placement

    # asked for: kept; the weights are where and how asked, and it still samples
    gen = LocalGenerator(tiny_lm, max_new_tokens=4, dtype=torch.bfloat16, device="cpu")
    p = next(gen.model.parameters())
    assert p.dtype == torch.bfloat16 and p.device.type == "cpu" and len(gen.generate(["q?"], n=2)[0]) == 2
    assert placement("cpu", None) == ("cpu", None)
    assert placement(None, None) == (None, None)  # no GPU here: where it loads, the loader's dtype
    # unset on a GPU machine: the current GPU in bf16 (prm_exp's SFT sampler ran on the CPU there without vLLM)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert placement(None, None) == (torch.device("cuda", 1), torch.bfloat16)
    assert placement(None, torch.float32) == (torch.device("cuda", 1), torch.float32)
    assert placement("cpu", None) == ("cpu", None)  # --use_cpu


@pytest.mark.gpu
def test_vllm_matches_the_interface():
    pytest.importorskip("vllm")
    from prm.label.generate import VLLMGenerator

    gen = VLLMGenerator("smollm2", max_new_tokens=16)
    out = gen.generate(["What is 2+2?"], n=2)
    assert len(out) == 1 and len(out[0]) == 2 and len(gen.complete(["What is 2+2?"], ["2 + 2 = 4"], n=3)[0]) == 3
