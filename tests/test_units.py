import pytest

from autointerp.errors import UnitError
from autointerp.core.units import Unit


def test_parse_and_format():
    assert Unit.parse("L5/N131") == Unit(5, "neuron", 131)
    assert Unit.parse("l9/h9") == Unit(9, "head", 9)
    assert str(Unit.neuron(3, 42)) == "L3/N42"
    assert str(Unit.head(0, 1)) == "L0/H1"
    assert Unit.parse("L3/N42").hook == "blocks.3.mlp.post"
    assert Unit.parse("L9/H1").hook == "blocks.9.attn.z"


@pytest.mark.parametrize("bad", ["L5N131", "5/131", "L/N1", "L1/X2", "", "L-1/N2"])
def test_bad_ids(bad):
    with pytest.raises(UnitError, match="bad unit id"):
        Unit.parse(bad)


def test_range_checks():
    Unit.parse("L1/N15").check(2, 16, 4)
    with pytest.raises(UnitError, match="layer 2 out of range"):
        Unit.parse("L2/N0").check(2, 16, 4)
    with pytest.raises(UnitError, match="neurons 0..15"):
        Unit.parse("L0/N16").check(2, 16, 4)
    with pytest.raises(UnitError, match="heads 0..3"):
        Unit.parse("L0/H4").check(2, 16, 4)
