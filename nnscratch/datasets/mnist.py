"""MNIST: find the four IDX files locally, or download and verify them once.

The four files are looked for, each as ``name.gz`` or as the decompressed ``name``, in
the first of these folders that holds all four:

1. the ``root`` argument of :func:`load_mnist`;
2. the folder named by the ``NNSCRATCH_DATA`` environment variable;
3. the per-user cache, :func:`default_cache_dir`.

If none does, they are downloaded (from the mirrors in turn) into ``root``, or into the
cache when no ``root`` was given. A file is trusted only once the MD5 of its
*decompressed* content matches :data:`MNIST_FILES`, so published downloads,
re-compressed copies and already-decompressed files are all accepted. A download is
verified before it gets its final name, so an interrupted or corrupt download never
looks like a good file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnscratch._files import atomic_write
from nnscratch.datasets.idx import decompress_idx, parse_idx, read_idx_bytes
from nnscratch.errors import DataError


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split held as host NumPy arrays.

    ``x_*`` are float32 features, one sample per row; ``y_*`` are int64 class labels.
    ``name`` says which dataset this is, ``source`` where it was read from.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    source: str

    def __post_init__(self) -> None:
        for split, features, labels in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if features.shape[0] != labels.shape[0]:
                raise DataError(
                    f"{self.name}: {features.shape[0]} {split} samples but "
                    f"{labels.shape[0]} {split} labels"
                )

    def __repr__(self) -> str:
        def describe(array: np.ndarray) -> str:
            return f"{array.dtype}{list(array.shape)}"

        return (
            f"Dataset(name={self.name!r}, x_train={describe(self.x_train)}, "
            f"y_train={describe(self.y_train)}, x_test={describe(self.x_test)}, "
            f"y_test={describe(self.y_test)}, source={self.source!r})"
        )


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset, described by its decompressed content.

    ``name`` is the file name without ``.gz``; ``md5`` and ``size`` (in bytes) are those
    of the decompressed content.
    """

    name: str
    md5: str
    size: int


#: The four MNIST files, keyed by the Dataset field each fills.
MNIST_FILES: dict[str, DataFile] = {
    "x_train": DataFile("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", 47040016),
    "y_train": DataFile("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", 60008),
    "x_test": DataFile("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", 7840016),
    "y_test": DataFile("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", 10008),
}

DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://yann.lecun.com/exdb/mnist/",
)

#: Seconds to wait for a mirror to connect or to send the next piece.
DOWNLOAD_TIMEOUT = 30.0

IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10
_CHUNK_SIZE = 1 << 16
# gzip adds a few bytes per block; a response larger than the content plus this is not ours.
_DOWNLOAD_SLACK = 1 << 20
_USER_AGENT = "nnscratch (MNIST loader; Python urllib)"

# Files whose content already matched, as (path, mtime_ns, size, md5): checked once per process.
_verified: set[tuple[str, int, int, str]] = set()


def default_cache_dir() -> Path:
    """The per-user folder MNIST is downloaded to and looked for last.

    ``$NNSCRATCH_CACHE`` if set, else ``$XDG_CACHE_HOME/nnscratch/mnist``, else
    ``~/.cache/nnscratch/mnist``.
    """
    override = os.environ.get("NNSCRATCH_CACHE")
    if override:
        return Path(override).expanduser()
    xdg_cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg_cache).expanduser() if xdg_cache else Path.home() / ".cache"
    return base / "nnscratch" / "mnist"


def load_mnist(
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
) -> Dataset:
    """Load MNIST: 60,000 training and 10,000 test images of handwritten digits.

    Images are flattened to rows of 784 float32 values in [0, 1] (grey level / 255);
    labels are int64 digits 0-9. See the module docstring for where the files are
    looked for; missing files are downloaded from ``mirrors`` (default
    :data:`DEFAULT_MIRRORS`) unless ``download`` is false. ``progress`` shows a progress
    bar while downloading.

    Raises :class:`DataError` if the files cannot be found or downloaded, or if a file is
    corrupt or differs from the canonical MNIST (its checksum does not match).
    """
    searched = _search_dirs(root)
    for directory in searched:
        found = _find_all(directory)
        if found is not None:
            return _load_from(directory, found)

    target = Path(root).expanduser() if root is not None else default_cache_dir()
    if not download:
        raise DataError(
            f"MNIST not found (looked in {_join(searched)}) and download=False. "
            + _placement_advice(target)
        )
    mirrors = DEFAULT_MIRRORS if mirrors is None else tuple(mirrors)
    for spec in MNIST_FILES.values():
        if _find_file(target, spec) is not None:
            continue
        urls = [_join_url(mirror, spec.name + ".gz") for mirror in mirrors]
        try:
            download_file(urls, target / (spec.name + ".gz"), spec.md5, spec.size, progress)
        except DataError as err:
            raise DataError(
                f"MNIST not found (looked in {_join(searched)}) and the download into "
                f"{target} failed from every mirror ({_join(mirrors)}): {err}. "
                + _placement_advice(target)
            ) from err
    found = _find_all(target)
    if found is None:  # a file vanished between its download and now
        raise DataError(
            f"MNIST files disappeared from {target} during loading. " + _placement_advice(target)
        )
    return _load_from(target, found)


def _search_dirs(root: str | os.PathLike | None) -> list[Path]:
    """The folders to look in, in order: ``root``, ``$NNSCRATCH_DATA``, the cache."""
    candidates = [root, os.environ.get("NNSCRATCH_DATA"), default_cache_dir()]
    unique: list[Path] = []
    for candidate in candidates:
        if not candidate:  # root not given, or the variable unset or empty
            continue
        directory = Path(candidate).expanduser()
        if directory not in unique:
            unique.append(directory)
    return unique


def _find_file(directory: Path, spec: DataFile) -> Path | None:
    """``directory/name.gz`` or ``directory/name``, whichever exists (gz first)."""
    for candidate in (directory / (spec.name + ".gz"), directory / spec.name):
        if candidate.is_file():
            return candidate
    return None


def _find_all(directory: Path) -> dict[str, Path] | None:
    """The path of each of the four files in ``directory``, or None if any is missing."""
    found = {}
    for field, spec in MNIST_FILES.items():
        path = _find_file(directory, spec)
        if path is None:
            return None
        found[field] = path
    return found


def _placement_advice(target: Path) -> str:
    names = ", ".join(spec.name + ".gz" for spec in MNIST_FILES.values())
    return (
        f"Put the four files {names} (or their decompressed versions, without .gz) into {target}, "
        "or set NNSCRATCH_DATA to a folder that holds them."
    )


def _join(items: Sequence[Any]) -> str:
    return ", ".join(str(item) for item in items)


def _join_url(mirror: str, name: str) -> str:
    return (mirror if mirror.endswith("/") else mirror + "/") + name


def _load_from(directory: Path, paths: dict[str, Path]) -> Dataset:
    arrays = {field: _read_verified(paths[field], spec) for field, spec in MNIST_FILES.items()}
    return Dataset(
        x_train=_images(arrays["x_train"], paths["x_train"]),
        y_train=_labels(arrays["y_train"], paths["y_train"]),
        x_test=_images(arrays["x_test"], paths["x_test"]),
        y_test=_labels(arrays["y_test"], paths["y_test"]),
        name="mnist",
        source=str(directory),
    )


def _read_verified(path: Path, spec: DataFile) -> np.ndarray:
    """Read and parse one IDX file, checking its content against ``spec`` once per process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, spec.md5)
    data = read_idx_bytes(path)
    array = parse_idx(data, str(path))
    if key not in _verified:
        verify_content(data, str(path), spec.md5, spec.size)
        _verified.add(key)
    return array


def verify_content(data: bytes, name: str, expected_md5: str, expected_size: int) -> None:
    """Raise :class:`DataError` unless ``data`` has the expected size and MD5.

    ``data`` is the decompressed content of the file ``name``, which the message names.
    """
    problem = _checksum_problem(data, expected_md5, expected_size)
    if problem:
        raise DataError(
            f"{name}: {problem}. The file is corrupt or not the canonical one: "
            "delete it to download it again."
        )


def _checksum_problem(data: bytes, expected_md5: str, expected_size: int) -> str | None:
    actual_md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if actual_md5 == expected_md5 and len(data) == expected_size:
        return None
    return (
        f"checksum mismatch: the decompressed content has MD5 {actual_md5} "
        f"({len(data)} bytes), expected MD5 {expected_md5} ({expected_size} bytes)"
    )


def _images(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[1:] != IMAGE_SIZE:
        raise DataError(
            f"{path}: expected uint8 images of shape (N, 28, 28), found {array.dtype} {array.shape}"
        )
    flat = array.reshape(array.shape[0], -1).astype(np.float32)
    flat /= np.float32(255)
    return flat


def _labels(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype != np.uint8 or array.ndim != 1:
        raise DataError(
            f"{path}: expected a vector of uint8 labels, found {array.dtype} {array.shape}"
        )
    if array.size and int(array.max()) >= NUM_CLASSES:
        raise DataError(f"{path}: label {int(array.max())} is out of range 0-{NUM_CLASSES - 1}")
    return array.astype(np.int64)


def download_file(
    urls: Sequence[str],
    dest: str | os.PathLike,
    expected_md5: str,
    expected_size: int,
    progress: bool = True,
    *,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> str:
    """Download one IDX file to ``dest``, trying ``urls`` in turn; return the URL used.

    The response (gzip-compressed or not) is decompressed and its content checked
    against ``expected_md5`` and ``expected_size`` before it is written, atomically,
    to ``dest``; so ``dest`` appears only if it is good. Raises :class:`DataError`
    listing each URL and why it failed if none delivers a good file.
    """
    dest = Path(dest)
    failures = []
    for url in urls:
        try:
            raw = _fetch(url, expected_size + _DOWNLOAD_SLACK, dest.name, progress, timeout)
            problem = _checksum_problem(decompress_idx(raw, url), expected_md5, expected_size)
            if problem:
                raise DataError(problem)
        except (OSError, http.client.HTTPException, ValueError) as err:
            reason = _describe(err)
            failures.append(reason if reason.startswith(url) else f"{url}: {reason}")
            continue
        with atomic_write(dest) as handle:
            handle.write(raw)
        stat = dest.stat()
        _verified.add((str(dest.resolve()), stat.st_mtime_ns, stat.st_size, expected_md5))
        return url
    reasons = "; ".join(failures) if failures else "no URL given"
    raise DataError(f"could not download {dest.name} ({reasons})")


def _fetch(url: str, max_bytes: int, label: str, progress: bool, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.isdigit() else None
        if total is not None and total > max_bytes:
            raise DataError(f"the server sends {total} bytes, more than the {max_bytes} expected")
        received = bytearray()
        with _Progress(label, total, progress) as bar:
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


class _Progress:
    """Bytes received so far, shown on stderr.

    A tqdm bar when tqdm is installed, else a one-line percentage; nothing when disabled.
    """

    def __init__(self, label: str, total: int | None, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.done = 0
        self.shown = ""
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(
                    total=total, desc=label, unit="B", unit_scale=True, leave=False, file=sys.stderr
                )

    def __enter__(self) -> _Progress:
        return self

    def update(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        elif self.enabled:
            if self.total:
                text = f"{self.label}: {min(100, 100 * self.done // self.total)}%"
            else:
                text = f"{self.label}: {self.done / 1e6:.1f} MB"
            if text != self.shown:
                sys.stderr.write("\r" + text)
                sys.stderr.flush()
                self.shown = text

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


__all__ = [
    "DEFAULT_MIRRORS",
    "MNIST_FILES",
    "DataFile",
    "Dataset",
    "default_cache_dir",
    "download_file",
    "load_mnist",
    "verify_content",
]
