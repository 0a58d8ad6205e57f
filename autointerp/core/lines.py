"""Bounded line reading: a file's lines one at a time, each at most `max_bytes` long, so a huge
line is refused (with its line number) without ever being read whole. The one reader behind the
JSONL corpora (corpus.sources) and the pair-item imports (tasks.io)."""

from __future__ import annotations

from typing import Any, BinaryIO, Callable, Iterable, Iterator

from ..errors import DatasetError


def bounded_lines(f: BinaryIO, max_bytes: int, too_long: Callable[[int], Exception]) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, raw line) of an open binary file, from its current position;
    raises too_long(line number) for a line over max_bytes."""
    lineno, pos = 0, f.tell() if f.seekable() else 0
    while True:
        raw = f.readline(max_bytes + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > max_bytes:
            raise too_long(lineno)
        yield lineno, pos, raw
        pos += len(raw)


def decode_utf8(raw: bytes, where: str) -> str:
    """A line as text; bytes that are not UTF-8 are one clear DatasetError naming `where`."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def json_lines(lines: Iterable[tuple[int, str]], where: Callable[[int], str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of the non-empty lines; a line that is not JSON is one clear
    DatasetError naming where(line number)."""
    import json

    for n, line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where(n)}: not valid JSON ({e.msg} at column {e.colno})") from None
        del line                  # a long line is not kept alive while the caller works on its value
        yield n, obj
