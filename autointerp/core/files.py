"""Output files written safely: the one helper behind every option that writes a file
(`export --out`, `serve --datasette-metadata`, `pairs --out`, `circuit --export`, `--plot`...).

- An existing file is never replaced unasked: `force=True` (the CLI's `--force`) to overwrite.
- A symlink, FIFO, device, socket or folder at the path is refused, force or not.
- The data goes to a unique temporary file in the target's folder, then takes the target's name
  in one step: without force by a hard link (which fails if the name appeared meanwhile), with
  force by os.replace. A failed or interrupted write leaves the target as it was and no
  temporary file behind (a kill -9 can leave a hidden `.NAME.*.part`, never a half file at NAME).
- Missing folders are created at write time; `check_output` says up front (before any work)
  whether they can be.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

from ..errors import UsageError


def probe_writable(folder: Path) -> str | None:
    """Why files cannot be made in `folder` (its nearest existing ancestor is probed), or None."""
    p = Path(folder)
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if p.exists() and not p.is_dir():
        return f"{p} is a file, not a folder"
    try:
        fd, name = tempfile.mkstemp(prefix=".autointerp-probe-", dir=p)
    except OSError as e:
        return f"cannot write in {p} ({e.strerror or e})"
    os.close(fd)
    os.unlink(name)
    return None


def _refusal(path: Path, force: bool) -> str | None:
    """Why `path` may not be written as an output file now, or None."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None                               # not there (a path above that is a file: probe_writable says so)
    except OSError as e:
        return f"cannot inspect it ({e.strerror or e})"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link (refused: write to the real path)"
    if stat.S_ISDIR(st.st_mode):
        return "a folder, not a file"
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        return f"{kind} (refused: only regular files are written)"
    if not force:
        return "exists (add --force to overwrite it)"
    return None


def check_output(option: str, path: str | Path | None, *, force: bool = False) -> None:
    """Refuse (UsageError, one line naming the option) an output path that cannot or may not be
    written: an existing file without force, a symlink/FIFO/device/folder, a folder that cannot
    be made. Nothing is created here."""
    if path is None or str(path) == "-":
        return
    path = Path(path).expanduser()
    why = _refusal(path, force)
    if why is None:
        why = probe_writable(path.parent)
    if why:
        raise UsageError(f"{option} {path}: {why}")


@contextlib.contextmanager
def atomic_output(path: str | Path, *, force: bool = False, binary: bool = False, option: str = "output",
                  newline: str | None = None) -> Iterator[IO]:
    """A file object whose contents become `path` when the block ends without an error (see the
    module docstring); on an error the target is untouched and the temporary file removed."""
    path = Path(path).expanduser()
    why = _refusal(path, force)
    if why:
        raise UsageError(f"{option} {path}: {why}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot create its folder ({e.strerror or e})") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)                 # the mode a plain open() would give, not mkstemp's 0600
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline=newline)) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, path, force, option)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _commit(tmp: str, path: Path, force: bool, option: str) -> None:
    why = _refusal(path, force)                   # what is there now (it may have changed meanwhile)
    if why:
        raise UsageError(f"{option} {path}: {why}")
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)                        # fails if the name appeared: never a silent overwrite
    except FileExistsError:
        raise UsageError(f"{option} {path}: exists (add --force to overwrite it)") from None
    except OSError:                               # a filesystem without hard links: checked just above
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def write_output(path: str | Path, data: str | bytes, *, force: bool = False, option: str = "output") -> Path:
    """Write all of `data` to `path` through atomic_output."""
    with atomic_output(path, force=force, binary=isinstance(data, bytes), option=option) as f:
        f.write(data)
    return Path(path).expanduser()


def pyplot(needs: str = "--plot needs"):
    """matplotlib.pyplot on the Agg backend (no display); one UsageError line ("<needs>
    matplotlib: pip install ...") when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError(f"{needs} matplotlib: pip install 'autointerp[plot]'") from None
    return plt


def save_png(fig, path: str | Path, *, force: bool = False, dpi: int = 100, option: str = "--plot") -> Path:
    """Write a matplotlib figure to path as a PNG through atomic_output (an existing file is kept
    unless force), and close the figure. Returns the path."""
    out = Path(path)
    try:
        with atomic_output(out, force=force, binary=True, option=option) as f:
            fig.savefig(f, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    return out
