import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from populate import build_store  # noqa: E402


@pytest.fixture(scope="module")
def populated(tmp_path_factory) -> Path:
    """A populated store file (see populate.py), shared by a module's tests (they only read it)."""
    p = tmp_path_factory.mktemp("store") / "autointerp.db"
    build_store(p).close()
    return p
