"""Records built by hand (no model, no mining)."""

import pytest

from tinykit import make_rec


@pytest.fixture
def rec():
    return make_rec
