import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public data copies (``$PRM_DATA_DIR`` or ``../shared/data``); skip when absent."""
    from prm.io import data_dir

    d = data_dir()
    if d is None or not d.is_dir():
        pytest.skip("no local data folder (set PRM_DATA_DIR)")
    return d

# exp/ scripts are imported by the script tests as `exp.<script>`; a script's own helpers beside it
# (exp/benchmarks/) are imported the way the script sees them when run: from exp/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "exp"))


@pytest.fixture
def fake_api():
    """A loopback fake of the Anthropic Messages API (`prm.testing.fake_anthropic`), closed after the test."""
    from prm.testing.fake_anthropic import FakeAnthropic

    s = FakeAnthropic()
    yield s
    s.close()


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> str:
    """A tiny random Llama causal LM with MiniLM's tokenizer, saved as a folder (a real generator in seconds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from prm.models.backbones import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id)
    d = tmp_path_factory.mktemp("lm")
    AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)
