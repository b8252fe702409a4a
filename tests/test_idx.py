"""The IDX reader and writer: real MNIST files, round trips, and every malformed input."""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import signal
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nnscratch.datasets.idx import (
    GZIP_SLACK,
    decompress_idx,
    encode_idx,
    parse_idx,
    read_idx,
    read_idx_bytes,
    write_idx,
)
from nnscratch.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]

# dtype code -> the native dtype the reader returns; written out by hand, not taken
# from the module under test.
CODES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(np.int16),
    0x0C: np.dtype(np.int32),
    0x0D: np.dtype(np.float32),
    0x0E: np.dtype(np.float64),
}

REAL_FILES = {
    "train-images-idx3-ubyte.gz": (60000, 28, 28),
    "train-labels-idx1-ubyte.gz": (60000,),
    "t10k-images-idx3-ubyte.gz": (10000, 28, 28),
    "t10k-labels-idx1-ubyte.gz": (10000,),
}


def real_data_dir() -> Path | None:
    """``$NNSCRATCH_DATA``, else ``<repo>/../shared/data/mnist``, if it exists."""
    configured = os.environ.get("NNSCRATCH_DATA")
    directory = Path(configured) if configured else REPO_ROOT.parent / "shared" / "data" / "mnist"
    return directory if directory.is_dir() else None


def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file assembled by hand from the format description."""
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def decode(raw: bytes) -> np.ndarray:
    """What read_idx does to a file's bytes, without the file."""
    return parse_idx(decompress_idx(raw, "fuzz"), "fuzz")


# --- real files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_reads_real_mnist_file(name: str) -> None:
    directory = real_data_dir()
    if directory is None or not (directory / name).is_file():
        pytest.skip(
            f"real MNIST file {name} not found: set NNSCRATCH_DATA or provide "
            "../shared/data/mnist next to the repository"
        )
    array = read_idx(directory / name)
    assert array.shape == REAL_FILES[name]
    assert array.dtype == np.uint8
    if "labels" in name:
        assert set(np.unique(array)) == set(range(10))
    else:
        assert array.max() == 255 and array.min() == 0


# --- round trips --------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("code", sorted(CODES), ids=lambda code: f"0x{code:02X}")
def test_round_trip_every_dtype(tmp_path: Path, code: int, compressed: bool) -> None:
    dtype = CODES[code]
    rng = np.random.default_rng(code)
    if dtype.kind == "f":
        array = rng.standard_normal((3, 4, 5)).astype(dtype)
        array[0, 0, :3] = [np.finfo(dtype).max, np.finfo(dtype).tiny, -0.0]
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True, dtype=dtype)
        array[0, 0, :2] = [info.min, info.max]
    path = tmp_path / ("array.idx.gz" if compressed else "array.idx")
    write_idx(path, array)

    stored = path.read_bytes()
    expected_bytes = idx_bytes(code, (3, 4, 5), array.astype(dtype.newbyteorder(">")).tobytes())
    assert (gzip.decompress(stored) if compressed else stored) == expected_bytes
    assert stored.startswith(b"\x1f\x8b") == compressed

    result = read_idx(path)
    assert result.dtype == dtype and result.dtype.isnative
    assert result.shape == array.shape
    np.testing.assert_array_equal(result, array)
    assert result.flags.writeable


@pytest.mark.parametrize("shape", [(), (0,), (4, 0, 2), (7,), (2, 1, 1, 3)])
def test_round_trip_shapes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    array = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    write_idx(tmp_path / "a.idx", array)
    result = read_idx(tmp_path / "a.idx")
    assert result.shape == shape and result.dtype == np.int32
    np.testing.assert_array_equal(result, array)


def test_compression_detected_by_content_not_name(tmp_path: Path) -> None:
    data = idx_bytes(0x0B, (2,), struct.pack(">2h", -2, 300))
    (tmp_path / "raw.gz").write_bytes(data)
    (tmp_path / "packed.idx").write_bytes(gzip.compress(data))
    for name in ("raw.gz", "packed.idx"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), np.array([-2, 300], np.int16))


def test_read_idx_bytes_returns_decompressed_content(tmp_path: Path) -> None:
    data = idx_bytes(0x08, (3,), b"\x01\x02\x03")
    (tmp_path / "a.gz").write_bytes(gzip.compress(data))
    assert read_idx_bytes(tmp_path / "a.gz") == data


def test_rejected_write_creates_no_file(tmp_path: Path) -> None:
    write_idx(tmp_path / "good.idx", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="int64"):
        write_idx(tmp_path / "bad.idx", np.zeros(3, np.int64))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["good.idx"]


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.bool_, np.float16, np.complex64])
def test_write_rejects_dtypes_idx_cannot_store(dtype: type) -> None:
    with pytest.raises(DataError, match="cannot store dtype"):
        encode_idx(np.zeros(2, dtype))


# --- malformed files ----------------------------------------------------------------

VALID = idx_bytes(0x0C, (2, 3, 1), struct.pack(">6i", *range(-3, 3)))
HEADER_SIZE = 4 + 4 * 3


def read_bytes_as_file(tmp_path: Path, data: bytes, name: str = "bad-idx") -> np.ndarray:
    path = tmp_path / name
    path.write_bytes(data)
    return read_idx(path)


def test_valid_fixture_parses() -> None:
    np.testing.assert_array_equal(decode(VALID), np.arange(-3, 3, dtype=np.int32).reshape(2, 3, 1))


@pytest.mark.parametrize("magic", [b"\x01\x00", b"\x00\x01", b"PK", b"\xff\xfe"])
def test_bad_magic(tmp_path: Path, magic: bytes) -> None:
    with pytest.raises(DataError, match="bad magic number") as info:
        read_bytes_as_file(tmp_path, magic + VALID[2:])
    assert str(tmp_path / "bad-idx") in str(info.value)


@pytest.mark.parametrize("code", [0x00, 0x07, 0x0A, 0x0F, 0xFF])
def test_unknown_dtype_code(tmp_path: Path, code: int) -> None:
    with pytest.raises(DataError, match=f"unknown IDX dtype code 0x{code:02X}") as info:
        read_bytes_as_file(tmp_path, VALID[:2] + bytes([code]) + VALID[3:])
    assert str(tmp_path / "bad-idx") in str(info.value)


@pytest.mark.parametrize("length", range(HEADER_SIZE))
def test_truncated_header_names_the_field(tmp_path: Path, length: int) -> None:
    field = "magic number" if length < 4 else f"dimension {(length - 4) // 4 + 1} of 3"
    with pytest.raises(DataError, match=f"truncated IDX header: (the )?{field}"):
        read_bytes_as_file(tmp_path, VALID[:length])


@pytest.mark.parametrize("length", [HEADER_SIZE, HEADER_SIZE + 1, len(VALID) - 4, len(VALID) - 1])
def test_truncated_data(tmp_path: Path, length: int) -> None:
    with pytest.raises(DataError, match=f"data shorter than the header says.*found {length - 16}"):
        read_bytes_as_file(tmp_path, VALID[:length])


@pytest.mark.parametrize("extra", [b"\x00", b"trailing garbage"])
def test_trailing_bytes(tmp_path: Path, extra: bytes) -> None:
    with pytest.raises(DataError, match="data longer than the header says"):
        read_bytes_as_file(tmp_path, VALID + extra)


def test_truncated_and_trailing_data_inside_gzip(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data shorter"):
        read_bytes_as_file(tmp_path, gzip.compress(VALID[:-1]))
    with pytest.raises(DataError, match="data longer"):
        read_bytes_as_file(tmp_path, gzip.compress(VALID + b"\x00" * 1000))
    with pytest.raises(DataError, match="bad magic number"):
        read_bytes_as_file(tmp_path, gzip.compress(b"\x01" + VALID[1:]))


def test_huge_dimensions_fail_fast_without_allocating(tmp_path: Path) -> None:
    huge = idx_bytes(0x0E, (2**32 - 1,) * 8, b"\x00" * 64)
    for data in (huge, gzip.compress(huge)):
        with pytest.raises(DataError, match="data shorter than the header says"):
            read_bytes_as_file(tmp_path, data)


def test_corrupt_gzip_streams(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(VALID, mtime=0))
    truncated = bytes(packed[:-6])
    bad_crc = bytes(packed[:-8]) + bytes(b ^ 0xFF for b in packed[-8:-4]) + bytes(packed[-4:])
    garbage_after = bytes(packed) + b"not gzip"
    mangled = bytearray(packed)
    mangled[12:20] = b"\xff" * 8  # inside the deflate stream
    for data in (truncated, bad_crc, garbage_after, bytes(mangled), b"\x1f\x8b", b"\x1f\x8bxyz"):
        with pytest.raises(DataError, match="corrupt gzip stream") as info:
            read_bytes_as_file(tmp_path, data, name="bad.gz")
        assert str(tmp_path / "bad.gz") in str(info.value)


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
def test_max_size_refuses_a_header_claiming_more(compressed: bool) -> None:
    data = VALID if not compressed else gzip.compress(VALID, mtime=0)
    assert decompress_idx(data, "ok", max_size=len(VALID)) == VALID  # exactly the claim: fine
    with pytest.raises(DataError, match=r"claims shape \(2, 3, 1\) of int32, 40 bytes, more "
                                        r"than the 39 bytes this file should hold") as info:
        decompress_idx(data, "capped", max_size=len(VALID) - 1)
    assert str(info.value).startswith("capped: ")


def test_max_size_stops_a_gzip_bomb_after_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that really holds what its header claims (64 MB of zeros): without the
    bound it would be inflated in full before the size could be judged."""
    bomb = gzip.compress(idx_bytes(0x08, (64, 1000, 1000), bytes(64_000_000)), mtime=0)

    class CountingGzip(gzip.GzipFile):
        inflated = 0

        def read(self, size: int = -1) -> bytes:
            piece = super().read(size)
            CountingGzip.inflated += len(piece)
            return piece

    monkeypatch.setattr(gzip, "GzipFile", CountingGzip)
    with pytest.raises(DataError, match="more than the 1000 bytes"):
        decompress_idx(bomb, "bomb", max_size=1000)
    assert CountingGzip.inflated == 16  # the header, nothing more


def test_max_size_refuses_a_file_far_too_large_unread(tmp_path: Path) -> None:
    huge = tmp_path / "huge.gz"
    with huge.open("wb") as handle:
        handle.truncate(8 * 2**30)  # a sparse 8 GiB file: reading it would exhaust memory
    with pytest.raises(DataError, match="far more than the 1000 bytes it should hold: refused "
                                        "unread"):
        read_idx_bytes(huge, max_size=1000)
    small = tmp_path / "small"
    small.write_bytes(VALID + bytes(GZIP_SLACK - 10))  # within the slack: read, then judged
    with pytest.raises(DataError, match="claims"):
        read_idx_bytes(small, max_size=len(VALID) - 1)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read the IDX file"):
        read_idx(tmp_path / "absent.idx")


# --- fuzzing ------------------------------------------------------------------------


class Hang(BaseException):
    """Raised by the alarm; a BaseException so the reader cannot swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail an example that runs longer than ``seconds``, even one that never returns.

    Hypothesis' deadline only judges examples that finish. POSIX only.
    """
    if not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"reader still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def decode_or_data_error(raw: bytes) -> np.ndarray | None:
    """Decode ``raw``; a DataError is the only acceptable failure (anything else propagates)."""
    with time_limit(5.0):
        try:
            return decode(raw)
        except DataError:
            return None


FUZZ = settings(max_examples=150, deadline=500, suppress_health_check=[HealthCheck.too_slow])

idx_arrays = st.sampled_from(sorted(CODES)).flatmap(
    lambda code: hnp.arrays(
        CODES[code], hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
    )
)
idx_files = st.tuples(idx_arrays, st.booleans()).map(
    lambda pair: gzip.compress(encode_idx(pair[0]), mtime=0) if pair[1] else encode_idx(pair[0])
)


@FUZZ
@given(st.binary(max_size=64) | st.builds(lambda tail: b"\x00\x00" + tail, st.binary(max_size=64)))
def test_fuzz_random_bytes(raw: bytes) -> None:
    result = decode_or_data_error(raw)
    if result is not None:  # random bytes can happen to form a valid file
        assert isinstance(result, np.ndarray)


@FUZZ
@given(idx_files, st.data())
def test_fuzz_truncated_files_always_raise(raw: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    with time_limit(5.0), pytest.raises(DataError):
        decode(raw[:cut])


@FUZZ
@given(idx_files, st.data())
def test_fuzz_mutated_files(raw: bytes, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(raw) - 1), label="position")
    flip = data.draw(st.integers(1, 255), label="xor")
    mutated = bytearray(raw)
    mutated[position] ^= flip
    result = decode_or_data_error(bytes(mutated))
    if result is not None:  # e.g. a flipped data byte, or uint8 <-> int8: still consistent
        assert result.nbytes + 4 + 4 * result.ndim == len(decompress_idx(bytes(mutated), "m"))


@FUZZ
@given(
    st.sampled_from(sorted(CODES)),
    st.lists(st.integers(0, 2**32 - 1), max_size=6),
    st.binary(max_size=32),
    st.booleans(),
)
def test_fuzz_headers_with_any_dimensions(
    code: int, shape: list[int], payload: bytes, compressed: bool
) -> None:
    raw = idx_bytes(code, tuple(shape), payload)
    result = decode_or_data_error(gzip.compress(raw, mtime=0) if compressed else raw)
    itemsize = CODES[code].itemsize
    # NumPy refuses shapes whose nonzero dimensions overflow its index type, even when
    # a zero dimension makes the array empty.
    representable = math.prod(size or 1 for size in shape) * itemsize <= sys.maxsize
    expected_ok = representable and math.prod(shape) * itemsize == len(payload)
    assert (result is not None) == expected_ok
    if result is not None:
        assert result.shape == tuple(shape)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """read_idx reads through the regular-file opener checkpoints and pictures share:
    a FIFO is refused at once (reading it would wait for a writer forever)."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("this system has no FIFOs (os.mkfifo)")
    import threading

    fifo = tmp_path / "train-labels-idx1-ubyte"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: outcome.append(_raised(lambda: read_idx(fifo))),
                              daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # release the blocked reader before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("read_idx blocked on a FIFO")
    assert isinstance(outcome[0], DataError), outcome
    assert "a FIFO (named pipe), not a regular file" in str(outcome[0])


def _raised(call) -> BaseException | None:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        return exc
    return None
