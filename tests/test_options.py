"""Every numeric option refuses nan and inf, every integer option is bounded and written in ASCII
digits (the CLI's shared option types, cli/common.py HardenedGroup), and unit ids take ASCII
digits of a sane length only (core/units.py)."""

from __future__ import annotations

import click
import pytest

from autointerp.core.units import UNIT_IN_TEXT_RE, Unit
from autointerp.errors import UnitError




@pytest.fixture
def store(tmp_path):
    from autointerp.store import Store

    p = tmp_path / "s.db"
    Store(p).close()
    return p


def one_error(res, *words):
    code, _out, err = res
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code not in (0, None) and len(lines) == 1 and lines[0].startswith("error:"), (code, err)
    assert "Traceback" not in err and "IntegrityError" not in err and "ValueError" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("args,word", [
    (["query", "--min-score", "nan"], "finite"),
    (["query", "--min-score", "inf"], "finite"),
    (["query", "--min-score", "-inf"], "finite"),
    (["query", "--min-margin", "nan"], "finite"),
    (["query", "--dataset", "d", "--min-effect", "nan"], "finite"),
    (["query", "--limit", "10000000000000000000"], "out of range"),
    (["query", "--limit", "٣"], "ASCII"),
    (["show", "--records", "-1", "L0/N1"], "range"),
    (["llm", "check", "--llm-timeout", "nan"], "finite"),
    (["llm", "check", "--llm-timeout", "inf"], "finite"),
    (["llm", "serve", "--latency", "nan"], "finite"),
    (["batch", "--limit", "99999999999999999999"], "out of range"),
    (["mine", "--tokens", "1e400"], "integer"),
])
def test_bad_numbers_are_one_line(cli, store, args, word):
    extra = [] if args[:2] == ["llm", "serve"] else ["--store", store]
    one_error(cli(*args, *extra), word)


@pytest.mark.parametrize("unit", ["L2/N٣", "L٢/N3", "L2/N" + "7" * 5000, "L" + "1" * 40 + "/H1"])
def test_show_bad_unit_ids(cli, store, unit):
    one_error(cli("show", unit, "--store", store), "bad unit id")


def test_every_numeric_option_is_checked():
    """No command has a numeric option without the shared checks (a new one gets them too)."""
    from autointerp.cli import _load_commands, cli
    from autointerp.cli.common import _BoundedInt, _FiniteFloat

    _load_commands()
    seen = 0

    def walk(cmd, path):
        nonlocal seen
        for p in cmd.params:
            if isinstance(p.type, click.types.FloatParamType):
                assert isinstance(p.type, _FiniteFloat), (path, p.name)
                seen += 1
            if isinstance(p.type, click.types.IntParamType):
                assert isinstance(p.type, _BoundedInt), (path, p.name)
                seen += 1
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(cli, "autointerp")
    assert seen > 50


def test_unit_ids_ascii_and_sane_size():
    with pytest.raises(UnitError, match="bad unit id"):
        Unit.parse("L2/N٣")
    m = UNIT_IN_TEXT_RE.search("see L2/N" + "9" * 5000 + " here")
    assert m is not None
    with pytest.raises(UnitError, match="digits"):
        Unit.from_match(m)
    with pytest.raises(UnitError):
        Unit.parse("L2/N" + "9" * 5000)
    assert not Unit.is_id("L2/N٣")
    assert list(Unit.find_all("L2/N٣ and L1/H2")) == [Unit.head(1, 2)]
    assert Unit.parse("L2/N000000000003") == Unit.neuron(2, 3)   # leading zeros are not size
