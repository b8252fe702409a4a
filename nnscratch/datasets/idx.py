"""Reading and writing IDX files, the format MNIST is distributed in.

An IDX file is a small header followed by the array's elements, row-major::

    offset  size     field
    0       2        two zero bytes
    2       1        dtype code: 0x08 uint8, 0x09 int8, 0x0B int16,
                     0x0C int32, 0x0D float32, 0x0E float64
    3       1        ndim, the number of dimensions (0 to 255)
    4       4*ndim   the size of each dimension, big-endian uint32
    4+4*ndim ...     prod(dims) elements, big-endian, C order

The four bytes at offset 0 are called the magic number: ``00 00 08 03`` starts a
stack of uint8 images (MNIST's ``*-images-idx3-ubyte``), ``00 00 08 01`` a vector of
uint8 labels. Files are often gzip-compressed; the reader recognises that by the gzip
magic bytes ``1f 8b`` at the start, not by the file name.

The reader trusts nothing in the header: every malformed input (bad magic, unknown
dtype code, a header or data cut short, bytes left over, a corrupt gzip stream) raises
:class:`~nnscratch.errors.DataError` naming the file and the problem. The size the
header promises is compared with the bytes actually there before anything is
allocated, so a header claiming terabytes fails at once instead of exhausting memory.
Where the caller knows how big the file should be (a download, the library's cache), it
passes ``max_size``: a header that claims more is refused before any data is inflated,
and a file on disk much larger than that is refused before it is read.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from nnscratch._files import NotARegularFileError, atomic_write, read_regular
from nnscratch.errors import DataError

#: The element type of each dtype code; IDX stores every element big-endian.
DTYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

GZIP_MAGIC = b"\x1f\x8b"
_MAGIC_PREFIX = b"\x00\x00"
_MAGIC_SIZE = 4
_DIM_SIZE = 4
_MAX_DIM = 2**32 - 1
_MAX_NDIM = 255
#: How much larger than its content a gzip file may be: deflate's stored blocks add a few
#: bytes per 64 KiB, the gzip header a file name; a file larger than this is not the one.
GZIP_SLACK = 1 << 20
# Decompress in bounded pieces: a single huge read() would allocate the whole
# (possibly bogus) size up front.
_CHUNK_SIZE = 1 << 20


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not, into a NumPy array.

    Returns the array as stored, with the header's shape and dtype, in native byte
    order. Raises :class:`DataError` if the file is missing, malformed or truncated.
    """
    return parse_idx(read_idx_bytes(path), str(path))


def read_idx_bytes(path: str | os.PathLike, max_size: int | None = None) -> bytes:
    """The decompressed bytes of an IDX file: header and data, not yet parsed.

    Useful to checksum a file's content and parse it without reading it twice:
    ``parse_idx(read_idx_bytes(path), str(path))`` is :func:`read_idx`. With ``max_size``
    (the decompressed bytes the file should hold), a file larger on disk than that plus
    :data:`GZIP_SLACK` is refused before it is read, and a header claiming more than
    ``max_size`` before its data is inflated.
    """
    return decompress_idx(read_raw(path, max_size), str(path), max_size)


def read_raw(path: str | os.PathLike, max_size: int | None = None) -> bytes:
    """The bytes of ``path`` as stored (compressed or not), as :class:`DataError` on failure.

    With ``max_size``, a file larger than ``max_size + GZIP_SLACK`` is refused unread.
    """
    try:
        if max_size is not None:
            stored = os.stat(path).st_size
            if stored > max_size + GZIP_SLACK:
                raise DataError(
                    f"{path}: the file has {stored} bytes, far more than the {max_size} "
                    "bytes it should hold: refused unread"
                )
        return read_regular(path)  # a FIFO would block, a device might never end
    except NotARegularFileError as err:
        raise DataError(f"{path}: cannot read the IDX file: it is {err.kind}, not a "
                        "regular file") from err
    except OSError as err:
        raise DataError(f"{path}: cannot read the IDX file: {err.strerror or err}") from err


def decompress_idx(raw: bytes, name: str, max_size: int | None = None) -> bytes:
    """Gunzip ``raw`` if it starts with the gzip magic bytes; return it unchanged if not.

    Decompression stops one byte past the size the IDX header inside declares, so a
    stream that decompresses to far more than its header says cannot fill memory. With
    ``max_size``, a header that declares more than ``max_size`` bytes in all (header and
    data) is refused as soon as it is read, before any data is inflated. ``name`` only
    labels error messages.
    """
    if raw[: len(GZIP_MAGIC)] != GZIP_MAGIC:
        if max_size is not None:
            _check_claim(name, *_parse_header(raw, name), max_size)
        return bytes(raw)
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw), mode="rb") as stream:
            return _read_bounded(stream, name, max_size)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{name}: corrupt gzip stream: {err}") from err


def _check_claim(name: str, dtype: np.dtype, shape: tuple[int, ...], header_size: int,
                 max_size: int | None) -> None:
    """Refuse a header that claims more bytes than the file may hold."""
    claimed = header_size + math.prod(shape) * dtype.itemsize
    if max_size is not None and claimed > max_size:
        raise DataError(
            f"{name}: the IDX header claims shape {shape} of {dtype.name}, {claimed} bytes, "
            f"more than the {max_size} bytes this file should hold: refused before reading "
            "its data"
        )


def _read_bounded(stream: gzip.GzipFile, name: str, max_size: int | None = None) -> bytes:
    """Read an IDX header from ``stream``, then at most the data it declares."""
    head = stream.read(_MAGIC_SIZE)
    if len(head) == _MAGIC_SIZE and head.startswith(_MAGIC_PREFIX):
        head += stream.read(_DIM_SIZE * head[3])
    dtype, shape, header_size = _parse_header(head, name)
    _check_claim(name, dtype, shape, header_size, max_size)
    expected = math.prod(shape) * dtype.itemsize
    pieces = [head]
    remaining = expected + 1  # one byte more reveals data longer than declared
    while remaining > 0:
        piece = stream.read(min(remaining, _CHUNK_SIZE))
        if not piece:
            break
        pieces.append(piece)
        remaining -= len(piece)
    if remaining <= 0:
        raise DataError(
            f"{name}: data longer than the header says: shape {shape} of {dtype.name} "
            f"takes {expected} bytes, but the decompressed stream goes on past them"
        )
    return b"".join(pieces)


def _parse_header(data: bytes, name: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """Check an IDX header; return the element dtype (big-endian), shape and header size."""
    if len(data) < _MAGIC_SIZE:
        raise DataError(
            f"{name}: truncated IDX header: the magic number needs {_MAGIC_SIZE} bytes, "
            f"the file has {len(data)}"
        )
    if not data.startswith(_MAGIC_PREFIX):
        raise DataError(
            f"{name}: bad magic number {data[:_MAGIC_SIZE].hex(' ')}: an IDX file starts "
            "with two zero bytes (is this an IDX file?)"
        )
    code, ndim = data[2], data[3]
    if code not in DTYPE_CODES:
        known = ", ".join(f"0x{known:02X} {dtype.name}" for known, dtype in DTYPE_CODES.items())
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    header_size = _MAGIC_SIZE + _DIM_SIZE * ndim
    if len(data) < header_size:
        missing = (len(data) - _MAGIC_SIZE) // _DIM_SIZE
        raise DataError(
            f"{name}: truncated IDX header: dimension {missing + 1} of {ndim} (bytes "
            f"{_MAGIC_SIZE + _DIM_SIZE * missing} to {_MAGIC_SIZE + _DIM_SIZE * (missing + 1)}) "
            f"is cut off, the file has {len(data)} bytes"
        )
    shape = struct.unpack_from(f">{ndim}I", data, _MAGIC_SIZE)
    return DTYPE_CODES[code], shape, header_size


def parse_idx(data: bytes, name: str = "<IDX bytes>") -> np.ndarray:
    """Parse the (decompressed) bytes of an IDX file into a NumPy array.

    ``name`` labels error messages, usually the file's path. The result owns its
    memory and is in native byte order.
    """
    dtype, shape, header_size = _parse_header(data, name)
    count = math.prod(shape)
    expected = count * dtype.itemsize
    actual = len(data) - header_size
    if actual != expected:
        relation = "shorter" if actual < expected else "longer"
        raise DataError(
            f"{name}: data {relation} than the header says: shape {shape} of {dtype.name} "
            f"takes {expected} bytes after the {header_size}-byte header, found {actual}"
        )
    native = dtype.newbyteorder("=")
    if count == 0:
        try:
            return np.empty(shape, dtype=native)
        except ValueError as err:  # a zero dimension beside dimensions too large for NumPy
            raise DataError(f"{name}: NumPy cannot represent an array of shape {shape}") from err
    stored = np.frombuffer(data, dtype=dtype, count=count, offset=header_size)
    return stored.astype(native).reshape(shape)


def _dtype_code(dtype: np.dtype) -> int:
    for code, stored in DTYPE_CODES.items():
        if stored.kind == dtype.kind and stored.itemsize == dtype.itemsize:
            return code
    supported = ", ".join(stored.name for stored in DTYPE_CODES.values())
    raise DataError(f"IDX cannot store dtype {dtype}; convert the array to one of: {supported}")


def encode_idx(array: np.ndarray) -> bytes:
    """The uncompressed IDX bytes (header and data) of ``array``."""
    array = np.asarray(array)
    code = _dtype_code(array.dtype)
    if array.ndim > _MAX_NDIM:
        raise DataError(f"IDX stores at most {_MAX_NDIM} dimensions, the array has {array.ndim}")
    if any(size > _MAX_DIM for size in array.shape):
        raise DataError(f"IDX stores dimensions below 2**32, the array has shape {array.shape}")
    header = (
        _MAGIC_PREFIX + bytes([code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    )
    return header + array.astype(DTYPE_CODES[code], copy=False).tobytes(order="C")


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed if ``path`` ends in ``.gz``.

    The dtype must be one IDX can store (uint8, int8, int16, int32, float32, float64).
    The file appears under its name only once it is complete.
    """
    data = encode_idx(array)
    final = Path(path)
    with atomic_write(final) as handle:
        if final.name.endswith(".gz"):
            # mtime=0 and the final name (not the temporary one) make the output reproducible.
            with gzip.GzipFile(filename=final.name, mode="wb", fileobj=handle, mtime=0) as packed:
                packed.write(data)
        else:
            handle.write(data)


__all__ = [
    "DTYPE_CODES",
    "GZIP_SLACK",
    "decompress_idx",
    "encode_idx",
    "parse_idx",
    "read_idx",
    "read_idx_bytes",
    "read_raw",
    "write_idx",
]
