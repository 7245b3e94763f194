"""Atomic file writes (a crash or power loss never leaves a half-written map or checkpoint), and
output-path checks that run before the work, so a bad output path never costs a finished run."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], None]) -> Path:
    """Call ``write_fn(tmp_path)``, fsync the file, then rename it over ``path``.

    The temporary file lives in the destination directory so the rename is atomic
    (same filesystem). On any error the temporary file is removed and ``path`` is
    left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file mode
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # Persist the rename itself (directory entry); not supported on every OS.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class OutputError(ValueError):
    """An output path cannot be written: found before any work is done, with the path and the reason."""


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Refuse, before the work, an output file ``path`` that could not be written at the end.

    ``OutputError`` (a ``ValueError``: the CLIs print it without a traceback) when ``path``
    is a directory, its parent is a file, or the directory it would be written in (the
    nearest existing one: ``atomic_write`` creates the rest) does not accept a new file:
    permissions, a read-only filesystem. Checked by creating and removing a temporary
    file there, so whatever the OS would refuse at the end is refused now. A full disk
    can still fail the final write; that error names the path too (``describe_os_error``).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory: give a file name")
    _probe_writable(path, what)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output directory", *, must_not_exist: bool = False) -> Path:
    """Refuse, before the work, an output directory ``path`` that could not be written at the end.

    ``OutputError`` when ``path`` is an existing file (or below one), exists while
    ``must_not_exist``, or the directory beside it (maps and bags are written as a
    temporary sibling, then renamed into place) does not accept new entries.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is an existing file, not a directory")
    if must_not_exist and path.exists():
        raise OutputError(f"{what} {path} exists already: remove it or choose another path")
    _probe_writable(path, what)
    return path


def describe_os_error(e: OSError) -> str:
    """An OSError as one line for a message: the reason, with a hint for a full disk or file-size limit."""
    reason = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        reason += " (disk full or file size limit: free space and retry)"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason += " (check permissions / read-only filesystem)"
    return reason


def _probe_writable(path: Path, what: str) -> None:
    parent = path.absolute().parent
    while not parent.exists():  # created on write: the nearest existing ancestor must accept it
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{what} {path}: {parent} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot write in {parent}: {describe_os_error(e)}") from None
    os.close(fd)
    os.unlink(probe)
