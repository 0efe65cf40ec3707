"""Atomic file writes: a file appears under its name only once complete.

Results, checkpoints and processed datasets are written to a temporary
file beside their destination, flushed to disk and renamed over it
(:func:`os.replace`), so a crash, an error or Ctrl-C leaves the previous
version (or nothing) in place, never a truncated file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@functools.cache
def _umask() -> int:
    """The process's umask, read once (reading it means setting it)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. no O_RDONLY on folders (Windows)
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is synced to
    disk and renamed to ``path``, on any error (or interrupt) removed.

    .. code-block:: python

        with atomic_path("processed/data.pt") as tmp:
            torch.save(obj, tmp)

    Args:
        path (str or os.PathLike): Destination file. Its folder is created
            when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix=".tmp")
    os.close(fd)
    try:
        # mkstemp's 0600 widened to an existing file's mode, else to what
        # open() would give (0666 less the umask)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)  # the rename itself survives a crash
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None],
                 mode: str = "w") -> None:
    """Write ``path`` through :func:`atomic_path`.

    Args:
        path (str or os.PathLike): Destination file.
        write (Callable): Called with the open temporary file.
        mode (str, optional): ``"w"`` (text) or ``"wb"``.
            (default: ``"w"``)
    """
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        write(f)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """Save ``obj`` with :func:`torch.save`, atomically.

    Args:
        obj (Any): What to save.
        path (str or os.PathLike): Destination file.
    """
    import torch

    atomic_write(path, lambda f: torch.save(obj, f), "wb")


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` to ``path``, atomically.

    Args:
        text (str): File content.
        path (str or os.PathLike): Destination file.
    """
    atomic_write(path, lambda f: f.write(text), "w")


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON to ``path``, atomically.

    Args:
        obj (Any): A JSON-serialisable object.
        path (str or os.PathLike): Destination file.
    """
    atomic_write_text(json.dumps(obj, indent=2) + "\n", path)
