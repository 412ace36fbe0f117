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
