"""Verified downloads: fetch a file from its mirrors, check it against its published
checksum, and only then give it its name.

A file is checked the way its publishers allow (see :mod:`nnscratch.datasets.registry`):
by the MD5 of its decompressed content where that is published (MNIST), else by the MD5
of the ``.gz`` bytes as received and the size of their content (Fashion-MNIST, KMNIST).
Either way the response is bounded: no more than the expected size (plus
:data:`~nnscratch.datasets.idx.GZIP_SLACK`) is accepted from a server, and an IDX header
that claims more than the expected size is refused before its data is inflated.

A download is written with :func:`nnscratch._files.atomic_write` only once it has passed,
so an interrupted, corrupt or refused download never leaves a file behind, under its
name or any other.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from nnscratch._files import atomic_write
from nnscratch.datasets.idx import GZIP_MAGIC, GZIP_SLACK, decompress_idx
from nnscratch.errors import ConfigError, DataError
from nnscratch.progress import Progress

#: Seconds to wait for a mirror to connect or to send the next piece.
DOWNLOAD_TIMEOUT = 30.0

#: What an expected MD5 is the checksum of: the decompressed content, or the .gz bytes.
CHECKSUM_KINDS = ("content", "gz")

_CHUNK_SIZE = 1 << 16
_USER_AGENT = "nnscratch (dataset loader; Python urllib)"

# File versions already verified, as (path, mtime_ns, size, md5): each is hashed once per
# process, not at every load.
_verified: set[tuple[str, int, int, str]] = set()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def verify_bytes(raw: bytes, name: str, expected_md5: str, expected_size: int,
                 md5_of: str = "content") -> bytes:
    """Check a file's bytes as stored against its published checksum; return its content.

    ``raw`` is the file as stored or received (gzip-compressed or not), ``name`` labels the
    messages. With ``md5_of="content"``, ``expected_md5`` is the MD5 of the decompressed
    content; with ``md5_of="gz"``, of the ``.gz`` bytes themselves (checked before anything
    is inflated), and the content must still have ``expected_size`` bytes. Raises
    :class:`DataError` saying what differs.
    """
    if md5_of not in CHECKSUM_KINDS:
        raise ConfigError(f"md5_of must be one of {CHECKSUM_KINDS}, got {md5_of!r}")
    if md5_of == "gz":
        if raw[: len(GZIP_MAGIC)] != GZIP_MAGIC:
            raise DataError(
                f"{name}: not a gzip file, but the published checksum is that of the .gz file"
            )
        actual = md5_hex(raw)
        if actual != expected_md5:
            raise DataError(
                f"{name}: checksum mismatch: the .gz file has MD5 {actual}, expected "
                f"MD5 {expected_md5} (the published checksum of the .gz file)"
            )
    content = decompress_idx(raw, name, max_size=expected_size)
    if md5_of == "content":
        actual = md5_hex(content)
        if actual != expected_md5 or len(content) != expected_size:
            raise DataError(
                f"{name}: checksum mismatch: the decompressed content has MD5 {actual} "
                f"({len(content)} bytes), expected MD5 {expected_md5} ({expected_size} bytes)"
            )
    elif len(content) != expected_size:
        raise DataError(
            f"{name}: the decompressed content has {len(content)} bytes, expected "
            f"{expected_size}"
        )
    return content


def download_file(
    urls: Sequence[str],
    dest: str | os.PathLike,
    expected_md5: str,
    expected_size: int,
    progress: bool = True,
    *,
    timeout: float = DOWNLOAD_TIMEOUT,
    md5_of: str = "content",
) -> str:
    """Download one IDX file to ``dest``, trying ``urls`` in turn; return the URL used.

    The response (gzip-compressed or not) is checked with :func:`verify_bytes` against
    ``expected_md5`` (the MD5 of the decompressed content, or with ``md5_of="gz"`` of the
    .gz bytes) and ``expected_size`` (the decompressed bytes) before it is written,
    atomically, to ``dest``, so ``dest`` appears only if it is good. ``progress`` shows the
    bytes received (:class:`nnscratch.progress.Progress`). Raises :class:`DataError`
    listing each URL and why it failed if none delivers a good file.
    """
    if md5_of not in CHECKSUM_KINDS:
        raise ConfigError(f"md5_of must be one of {CHECKSUM_KINDS}, got {md5_of!r}")
    dest = Path(dest)
    failures = []
    for url in urls:
        try:
            raw = _fetch(url, expected_size + GZIP_SLACK, dest.name, progress, timeout)
            verify_bytes(raw, url, expected_md5, expected_size, md5_of)
        except (OSError, http.client.HTTPException, ValueError) as err:
            reason = _describe(err)
            failures.append(reason if reason.startswith(url) else f"{url}: {reason}")
            continue
        with atomic_write(dest) as handle:
            handle.write(raw)
        remember_verified(dest, expected_md5)
        return url
    reasons = "; ".join(failures) if failures else "no URL given"
    raise DataError(f"could not download {dest.name} ({reasons})")


def remember_verified(path: Path, expected_md5: str) -> None:
    """Record that this version of ``path`` matched ``expected_md5``."""
    _verified.add(_version_key(path, expected_md5))


def is_verified(path: Path, expected_md5: str) -> bool:
    """True if this version of ``path`` (same size and mtime) already matched."""
    return _version_key(path, expected_md5) in _verified


def _version_key(path: Path, expected_md5: str) -> tuple[str, int, int, str]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size, expected_md5)


def _fetch(url: str, max_bytes: int, label: str, progress: bool, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.isdigit() else None
        if total is not None and total > max_bytes:
            raise DataError(f"the server sends {total} bytes, more than the {max_bytes} expected")
        received = bytearray()
        with Progress(total, label, unit="B", enabled=progress) as bar:
            while chunk := response.read(_CHUNK_SIZE):
                received += chunk
                if len(received) > max_bytes:
                    raise DataError(f"the server sends more than the {max_bytes} bytes expected")
                bar.update(len(chunk))
    return bytes(received)


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


__all__ = ["CHECKSUM_KINDS", "DOWNLOAD_TIMEOUT", "download_file", "verify_bytes"]
