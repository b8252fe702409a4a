"""Reading only regular files, and writing files so that a reader never sees half of one.

``open_regular`` / ``read_regular`` open a path for reading only if it is a regular file
(checkpoints, pictures and IDX files share them): opening a FIFO blocks until a writer
comes and a device such as ``/dev/zero`` never ends.

A file is written under a temporary name in the destination folder, flushed to disk,
and only then renamed onto its final name. ``os.replace`` is atomic on POSIX and
Windows when both names are on one filesystem, so a crash or a kill at any moment
leaves either the old file or the complete new one, never a partial file.

The temporary file ("partial") is ``.<name>.<8 random characters>.part`` beside the
target, and three rules keep the write as harmless as an ordinary one:

- **Only regular files are replaced.** Renaming onto a directory, FIFO, device or socket
  would destroy it (as root, ``/dev/full``), so such a target is refused before anything
  is created, and checked again just before the rename.
- **Permissions are those of an ordinary file.** The partial is created with mode 0o666,
  so the kernel applies the umask (and a folder's default ACL) as for any new file;
  replacing an existing file keeps that file's permission bits, as writing into it would.
- **Stale partials are removed by the next write of the same target.** A process killed
  mid-write (``kill -9``, a power cut) cannot clean up. Each writer holds an exclusive
  ``flock`` on its partial from creation to rename, and before writing, removes the
  target's partials (exact name pattern only) that no process holds locked and that
  have not been modified for ``STALE_PARTIAL_SECONDS``. The lock keeps two concurrent
  writers of one target from removing each other's partial; the age also covers
  filesystems whose locks are not shared between machines. Without ``fcntl`` (Windows)
  the age alone decides, and Windows refuses to remove a file that is still open.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

STALE_PARTIAL_SECONDS = 60.0
"""A partial nobody holds locked and nobody modified for this long is a dead writer's."""

_RANDOM_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # tempfile's alphabet
_RANDOM_LENGTH = 8
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class NotARegularFileError(OSError):
    """The path exists and is a directory, FIFO, device or socket, not a regular file."""

    def __init__(self, path: str | os.PathLike, kind: str) -> None:
        super().__init__(errno.EEXIST, f"exists and is {kind}, not a regular file",
                         os.fspath(path))
        self.kind = kind


def file_kind(mode: int) -> str:
    """What an ``st_mode`` describes, in words: ``"a FIFO (named pipe)"``, ..."""
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISREG, "a regular file"),
    ]
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def refuse_non_regular(path: str | os.PathLike) -> None:
    """Raise ``NotARegularFileError`` if ``path`` exists and is not a regular file
    (a symbolic link counts as what it points to)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise NotARegularFileError(path, file_kind(mode))


@contextlib.contextmanager
def open_regular(path: str | os.PathLike) -> Iterator[tuple[BinaryIO, int]]:
    """Open ``path`` for reading if it is a regular file; yield the file (unbuffered)
    and its size. ``NotARegularFileError`` otherwise; the ``OSError`` of ``os.stat`` or
    ``os.open`` (missing, no permission) as it comes.

    The type is checked before opening, because opening a FIFO blocks and a device may
    never end; and again on the open file, because the name may have been replaced in
    between (``O_NONBLOCK`` keeps even that open from blocking).
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFileError(path, file_kind(mode))
    fd = os.open(path, os.O_RDONLY | _O_NONBLOCK | _O_CLOEXEC | _O_BINARY)
    with os.fdopen(fd, "rb", buffering=0) as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFileError(path, file_kind(info.st_mode))
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
        yield handle, info.st_size


def read_into(handle: BinaryIO, buffer: bytearray | memoryview) -> int:
    """Fill ``buffer`` from ``handle``; the number of bytes read (fewer at end of file)."""
    view, filled = memoryview(buffer), 0
    while filled < len(view):
        count = handle.readinto(view[filled:])
        if not count:
            break
        filled += count
    return filled


def read_regular(path: str | os.PathLike) -> bytes:
    """The bytes of ``path``, a regular file (see ``open_regular``)."""
    with open_regular(path) as (handle, size):
        data = bytearray(size)
        data = data[:read_into(handle, data)]
        rest = handle.read()  # a file that grew while it was read
        return bytes(data + rest) if rest else bytes(data)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open ``path`` for binary writing; the file appears under its name only if the
    ``with`` block finishes without an exception.

    Raises ``NotARegularFileError`` (an ``OSError``) if ``path`` exists and is not a
    regular file, and the ``OSError`` of any step that fails (creating the folder,
    writing, renaming); the target is then left as it was.
    """
    final = Path(path)
    refuse_non_regular(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)  # first, so that a nearly full disk gets their space back
    fd, partial = _create_partial(final)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            if fcntl is not None:  # rename while our lock still marks the partial as live
                _rename_into_place(partial, final)
        if fcntl is None:  # Windows cannot rename a file that is open
            _rename_into_place(partial, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def _rename_into_place(partial: Path, final: Path) -> None:
    refuse_non_regular(final)  # the target may have been replaced during a long write
    os.replace(partial, final)


def _partial_pattern(final: Path) -> re.Pattern[str]:
    """The names of ``final``'s partials: ``.<name>.<8 of [a-z0-9_]>.part``."""
    return re.compile(
        re.escape(f".{final.name}.") + f"[{_RANDOM_CHARACTERS}]{{{_RANDOM_LENGTH}}}"
        + re.escape(".part")
    )


def _create_partial(final: Path) -> tuple[int, Path]:
    """A new, locked, empty partial for ``final``: its descriptor and its path."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW | _O_BINARY
    for _ in range(100):
        token = "".join(secrets.choice(_RANDOM_CHARACTERS) for _ in range(_RANDOM_LENGTH))
        partial = final.with_name(f".{final.name}.{token}.part")
        try:
            fd = os.open(partial, flags, 0o666)  # the kernel applies the umask
        except FileExistsError:
            continue
        try:
            if _lock_new_partial(fd, partial):
                _keep_permissions_of(final, fd)
                return fd, partial
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        os.close(fd)  # another writer's cleanup took it between open and lock: try again
    raise FileExistsError(errno.EEXIST, "no unused temporary name for", os.fspath(final))


def _lock_new_partial(fd: int, partial: Path) -> bool:
    """Lock our new partial; False if a cleaner got to it first (it may have been
    created after the cleaner listed the folder, but before we locked it)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a filesystem without locks, where cleaners remove nothing either
        return True
    try:
        return os.path.samestat(os.stat(partial), os.fstat(fd))
    except FileNotFoundError:
        return False


def _keep_permissions_of(final: Path, fd: int) -> None:
    """Give the partial the permission bits of the file it will replace, if any."""
    try:
        mode = os.stat(final).st_mode
    except FileNotFoundError:
        return
    if hasattr(os, "fchmod"):
        os.fchmod(fd, stat.S_IMODE(mode) & 0o777)  # never copy setuid/setgid/sticky


def remove_stale_partials(final: str | os.PathLike) -> list[Path]:
    """Remove the partials of ``final`` left by writers that died (see the module
    docstring for the rule); returns the paths removed. Never raises: a leftover that
    cannot be examined or removed is left alone."""
    final = Path(final)
    pattern = _partial_pattern(final)
    removed = []
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name):
            with contextlib.suppress(OSError):
                if _remove_if_stale(Path(entry.path)):
                    removed.append(Path(entry.path))
    return removed


def _remove_if_stale(partial: Path) -> bool:
    info = os.lstat(partial)
    if not stat.S_ISREG(info.st_mode) or time.time() - info.st_mtime < STALE_PARTIAL_SECONDS:
        return False
    if fcntl is None:
        os.unlink(partial)  # Windows refuses while its writer still has it open
        return True
    fd = os.open(partial, os.O_RDONLY | _O_NONBLOCK | _O_NOFOLLOW | _O_CLOEXEC)
    try:
        # BlockingIOError (an OSError, which the caller ignores): its writer is alive.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not os.path.samestat(os.lstat(partial), os.fstat(fd)):
            return False
        os.unlink(partial)
        return True
    finally:
        os.close(fd)
