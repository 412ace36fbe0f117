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


@pytest.mark.gpu
def test_vllm_matches_the_interface():
    pytest.importorskip("vllm")
    from prm.label.generate import VLLMGenerator

    gen = VLLMGenerator("smollm2", max_new_tokens=16)
    out = gen.generate(["What is 2+2?"], n=2)
    assert len(out) == 1 and len(out[0]) == 2 and len(gen.complete(["What is 2+2?"], ["2 + 2 = 4"], n=3)[0]) == 3
