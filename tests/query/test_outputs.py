"""Output files are never clobbered unasked (core/files.py): `export --out`, `serve
--datasette-metadata` and the helper itself. Existing files need --force; symlinks, FIFOs and
devices are refused; a sibling `OUT.part` is not touched; missing folders are made."""

from __future__ import annotations

import os
import stat

import pytest

from autointerp.core.files import atomic_output, check_output, write_output
from autointerp.errors import UsageError






def one_error(r, *words):
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode != 0, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_export_out_refuses_existing_file_without_force(cli, populated, tmp_path):
    out = tmp_path / "x.jsonl"
    out.write_text("precious\n")
    one_error(cli("export", "--out", out, "--store", populated), "exists", "--force")
    assert out.read_text() == "precious\n"
    r = cli("export", "--out", out, "--force", "--store", populated)
    assert r.returncode == 0, r.stderr
    assert out.read_text() != "precious\n" and out.read_text().count("\n") >= 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_export_out_refuses_symlink_fifo_device_even_with_force(cli, populated, tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("keep\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    for p, word in ((link, "symbolic link"), (fifo, "FIFO"), ("/dev/null", "device")):
        for extra in ([], ["--force"]):
            one_error(cli("export", "--out", p, *extra, "--store", populated), word)
    assert link.is_symlink() and target.read_text() == "keep\n"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_export_out_leaves_sibling_part_and_makes_folders(cli, populated, tmp_path):
    part = tmp_path / "x.jsonl.part"
    part.write_text("someone else's\n")
    r = cli("export", "--out", tmp_path / "x.jsonl", "--store", populated)
    assert r.returncode == 0, r.stderr
    assert part.read_text() == "someone else's\n"
    deep = tmp_path / "newdir" / "sub" / "x.jsonl"
    r = cli("export", "--out", deep, "--store", populated)
    assert r.returncode == 0, r.stderr
    assert deep.read_text().count("\n") >= 1
    f = tmp_path / "afile"
    f.write_text("")
    one_error(cli("export", "--out", f / "sub" / "x.jsonl", "--store", populated), "not a folder")


def test_datasette_metadata_never_overwrites_unasked(cli, populated, tmp_path):
    m = tmp_path / "meta.json"
    m.write_text("{}\n")
    one_error(cli("serve", "--datasette-metadata", m, "--store", populated), "exists")
    assert m.read_text() == "{}\n"
    r = cli("serve", "--datasette-metadata", m, "--force", "--store", populated)
    assert r.returncode == 0, r.stderr
    assert '"databases"' in m.read_text()
    link = tmp_path / "l.json"
    link.symlink_to(m)
    one_error(cli("serve", "--datasette-metadata", link, "--force", "--store", populated), "symbolic link")


def test_atomic_output_failure_leaves_target_and_no_temp(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(p, force=True) as f:
            f.write("half")
            raise RuntimeError("killed midway")
    assert p.read_text() == "old" and sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_output_does_not_overwrite_a_file_that_appears_meanwhile(tmp_path):
    p = tmp_path / "b.txt"
    with pytest.raises(UsageError, match="exists"):
        with atomic_output(p) as f:
            f.write("mine")
            p.write_text("theirs")          # another process made it while we wrote
    assert p.read_text() == "theirs" and sorted(x.name for x in tmp_path.iterdir()) == ["b.txt"]


def test_write_output_mode_and_check(tmp_path):
    p = write_output(tmp_path / "c" / "d.bin", b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(os.stat(p).st_mode) & 0o044    # readable by others as a plain open() makes it (umask 022)
    check_output("--out", tmp_path / "new.txt")
    with pytest.raises(UsageError, match="exists"):
        check_output("--out", p)
    check_output("--out", p, force=True)
    with pytest.raises(UsageError, match="a folder"):
        check_output("--out", tmp_path, force=True)
