"""Normalisation and record formatting."""

from autointerp.core.format import format_record, format_records, highlight, normalise, nonzero_summary, window



def test_normalise_rounds_relative_to_unit_max():
    # 10*a/max: 0, 2.5->3 (halves up), 5, 10, 12->10 (clipped), negative->0
    assert normalise([0.0, 0.5, 1.0, 2.0, 2.4, -1.0], 2.0) == [0, 3, 5, 10, 10, 0]
    assert normalise([0.14, 0.15, 0.16], 1.0) == [1, 2, 2]
    assert normalise([1.0, 2.0], 0.0) == [0, 0]
    assert normalise([1.0, float("nan")], 1.0) == [10, 0]


def test_format_record_is_token_tab_value_lines():
    assert format_record(["a", " b", "\n"], [0, 10, 3]) == "a\t0\n b\t10\n\\n\t3"


def test_format_records_windows_around_peak(rec):
    r = rec(0, [f"t{i}" for i in range(10)], [0, 0, 0, 0, 0, 0, 0, 4, 0, 0])
    assert window(r.tokens, r.acts, 4) == (4, 8)
    text = format_records([r], 4.0, window_size=4)
    assert text.splitlines() == ["<start>", "t4\t0", "t5\t0", "t6\t0", "t7\t10", "<end>"]
    assert nonzero_summary([r], 4.0) == "t7\t10"


def test_highlight_merges_adjacent_marks():
    assert highlight(["The", " cat", " sat", " on"], [1, 2]) == "The <<cat sat>> on"
    assert highlight(["a", "b"], [1]) == "a<<b>>"
