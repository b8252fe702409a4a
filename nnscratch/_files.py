"""Writing files so that a reader never sees half of one.

A file is written under a temporary name in the destination folder, flushed to disk,
and only then renamed onto its final name. ``os.replace`` is atomic on POSIX and
Windows when both names are on one filesystem, so a crash or a kill at any moment
leaves either the old file or the complete new one, never a partial file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open ``path`` for binary writing; the file appears under its name only if the
    ``with`` block finishes without an exception."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
