"""Datasets by name: ``load("fashion-mnist")`` finds, downloads, verifies and reads one.

    import nnscratch as nn
    data = nn.datasets.load("fashion-mnist")     # MNIST, Fashion-MNIST, KMNIST, 8x8 digits
    data.x_train.shape, data.class_names[7]        # (60000, 784), 'Sneaker'

Where the files come from, and what is trusted
----------------------------------------------
**A folder you name** -- the ``root`` argument, or else the ``NNSCRATCH_DATA``
environment variable (an empty value counts as unset) -- is used as given, or refused:

- it must exist and hold the dataset's four files, each as ``NAME.gz`` or decompressed
  ``NAME`` (``.gz`` is read when both are there). Otherwise :class:`DataError` names the
  folder and what is missing. Nothing is downloaded into it, no other folder (not even
  the cache) stands in for it, and it never falls back to the 8x8 digits;
- every file must be well-formed: a truncated or corrupt file, a bad magic number,
  counts that do not match the data, images that are not 28x28 uint8, labels out of
  range for the dataset's classes, or an image count that differs from the label count
  is a :class:`DataError` naming the file and the problem;
- files that differ from the published checksums (your own re-export, a subset, an
  augmented set) are loaded as given, with one note, e.g. ``DIR: not the canonical MNIST
  files (t10k-labels-idx1-ubyte.gz differ from the published checksums): training on them
  as given``. Checksums protect downloads, not your own files. Fashion-MNIST and KMNIST
  publish checksums of their ``.gz`` files only, so their decompressed files cannot be
  checked: the note says that instead;
- ``NNSCRATCH_DATA`` names the folder of *the dataset being loaded*, whichever is asked
  for. A named folder that holds the canonical files of *another* known dataset (say
  ``load("fashion-mnist")`` while ``NNSCRATCH_DATA`` names an MNIST folder) is a
  :class:`DataError` saying which dataset it holds: loading it under the wrong class
  names would be silently wrong. Point the variable at the right folder, or unset it.

**Otherwise, the per-user cache**, one folder per dataset: :func:`cache_dir` ``(name)``,
that is ``$NNSCRATCH_CACHE/<name>``, else ``$XDG_CACHE_HOME/nnscratch/<name>``, else
``~/.cache/nnscratch/<name>``. Missing files are downloaded into it from the mirrors
(unless ``download=False``), each verified before it gets its name
(:mod:`nnscratch.datasets.download`). What the cache holds is the library's, so it is
verified like a download: MNIST by the MD5 of the decompressed content (``.gz`` or not);
Fashion-MNIST and KMNIST by the MD5 of the verified ``.gz`` kept there, which is the only
form the cache holds for them. A cached file that fails (corrupt, replaced, truncated,
an IDX header claiming more than the file's known size) is a :class:`DataError` naming it
and saying to delete it: the library never deletes or replaces a file on its own.

**The fallback**, ``fallback="digits"``, and only when nothing was named: if the cache
lacks the dataset and it cannot be downloaded (the download fails, or
``download=False``), the 8x8 scikit-learn digits are returned instead, marked with
``fallback_reason``, and a banner of ``!`` lines says what failed, why, and how to get the
real data. A bad file in the cache is an error, not a reason to fall back.

**The 8x8 digits** (``load("digits")``) ship with scikit-learn: no folder, no cache, no
download; ``NNSCRATCH_DATA`` is ignored for them and ``root=`` is a :class:`ConfigError`.

Messages for the user (the notes, the banner) go to ``report``, one call each; by default
they are printed on stderr. The notes are also kept in ``Dataset.notes``. Messages speak
the words of the interface the user meets the loader through (``interface``): a library
caller reads ``root=`` and ``load('mnist')``, a user of ``examples/mnist.py`` reads
``--data DIR`` and ``--dataset mnist`` (:data:`COMMAND_LINE`). An error's first line says
what failed and how to fix it; the lines after it (the mirrors tried) are the details.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nnscratch.datasets import digits as digits_module
from nnscratch.datasets import download as download_module
from nnscratch.datasets.dataset import Dataset
from nnscratch.datasets.idx import GZIP_MAGIC, decompress_idx, parse_idx, read_raw
from nnscratch.datasets.registry import DATASETS, DataFile, DatasetSpec
from nnscratch.errors import ConfigError, DataError

#: What ``fallback=`` accepts: the datasets that can stand in when nothing was named.
FALLBACKS = ("digits",)



@dataclass(frozen=True)
class Interface:
    """How the user names things in the interface that calls :func:`load`, for its
    messages. Each field is the phrase that does the job there."""

    folder: str = "root"  # what named the folder, e.g. "--data"
    name_folder: str = "root="  # how to name a folder, e.g. "--data DIR"
    unname_folder: str = "pass root=None"  # how to stop naming one, e.g. "drop --data"
    choose: str = "load({name!r})"  # how to choose the dataset {name}
    no_download: str = "download=False"  # what forbade the download
    allow_download: str = "allow the download (download=True) with internet access"


#: The library's own words (``load(..., root=...)``).
LIBRARY = Interface()
#: The words of a command line with ``--data DIR``, ``--dataset NAME``, ``--no-download``
#: (``examples/mnist.py``).
COMMAND_LINE = Interface(folder="--data", name_folder="--data DIR", unname_folder="drop --data",
                         choose="--dataset {name}", no_download="--no-download",
                         allow_download="run without --no-download, with internet access")

_BANNER_RULE = "!" * 78
_BANNER_WIDTH = 72


def print_to_stderr(message: str) -> None:
    """The default ``report``: print ``message`` on stderr."""
    print(message, file=sys.stderr, flush=True)


def load(
    name: str = "mnist",
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
    fallback: str | None = None,
    report: Callable[[str], None] | None = print_to_stderr,
    interface: Interface = LIBRARY,
) -> Dataset:
    """Load the dataset called ``name``: ``"mnist"``, ``"fashion-mnist"``, ``"kmnist"`` or
    ``"digits"`` (see :data:`~nnscratch.datasets.registry.DATASETS`).

    Returns a :class:`Dataset` of host NumPy arrays: images flattened to rows of float32
    grey levels in [0, 1] (level / 255; / 16 for the 8x8 digits), int64 labels, and the
    dataset's ``title`` and ``class_names``. Where the files are looked for, what is
    verified and when the fallback applies are in the module docstring: ``root`` (else
    ``$NNSCRATCH_DATA``) names a folder that is used or refused; otherwise the per-user
    cache, downloaded into from ``mirrors`` (default: the dataset's own) unless
    ``download`` is false, with a progress display when ``progress`` is true.
    ``fallback="digits"`` returns the 8x8 digits when nothing was named and the dataset
    can be neither found in the cache nor downloaded. ``report`` receives each message
    for the user (None: silent). ``interface`` gives the messages the words of the
    interface the user called through (:data:`COMMAND_LINE` for ``--data DIR``,
    ``--dataset NAME``; default the library's, ``root=``).

    Raises :class:`ConfigError` for an unknown name or fallback, :class:`DataError` for
    data that cannot be found, downloaded or read, or is not what it should be.
    """
    spec = get_spec(name)
    if fallback is not None and fallback not in FALLBACKS:
        raise ConfigError(f"fallback must be None or one of {FALLBACKS}, got {fallback!r}")
    tell = report if report is not None else _silent
    if not spec.files:  # the 8x8 digits ship with scikit-learn: no folder, no download
        if root is not None:
            raise ConfigError(f"the 8x8 digits ship with scikit-learn: {interface.name_folder} "
                              "does not apply")
        return digits_module.load_digits()

    named, origin = _named_folder(root, interface.folder)
    if named is not None:
        dataset = _load_named(spec, named, origin, interface)
    else:
        cache = cache_dir(spec.name)
        unavailable = _fill_cache(spec, cache, download, mirrors, progress, interface)
        if unavailable is None:
            dataset = _load_cached(spec, cache, interface)
        elif fallback is None:
            reason, details = unavailable
            raise DataError(f"{reason} {_how_to_get(spec, cache, download, interface)}\n"
                            f"{details}")
        else:
            dataset = _fall_back(spec, cache, " ".join(unavailable), download, tell,
                                 interface)
    for note in dataset.notes:
        tell(note)
    return dataset


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name`` (case, ``_`` or ``-`` as you like)."""
    key = str(name).strip().lower().replace("_", "-")
    spec = DATASETS.get(key)
    if spec is None:
        raise ConfigError(f"unknown dataset {name!r}: known are {', '.join(DATASETS)}")
    return spec


def cache_dir(name: str | None = None) -> Path:
    """The per-user cache: ``$NNSCRATCH_CACHE``, else ``$XDG_CACHE_HOME/nnscratch``, else
    ``~/.cache/nnscratch``; with ``name``, the dataset's own folder inside it."""
    override = os.environ.get("NNSCRATCH_CACHE")
    if override:
        base = Path(override).expanduser()
    else:
        xdg_cache = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg_cache).expanduser() if xdg_cache else Path.home() / ".cache")
        base = base / "nnscratch"
    return base / name if name else base


# -- a folder the user named ---------------------------------------------------------------


def _named_folder(root: str | os.PathLike | None, root_name: str = "root"
                  ) -> tuple[Path | None, str]:
    """The folder named by ``root``, else by ``$NNSCRATCH_DATA``, and what named it."""
    if root is not None:
        return Path(root).expanduser(), root_name
    env = os.environ.get("NNSCRATCH_DATA")
    if env:
        return Path(env).expanduser(), "NNSCRATCH_DATA"
    return None, ""


def _named_by(origin: str) -> str:
    return {"NNSCRATCH_DATA": "the NNSCRATCH_DATA environment variable",
            "root": "the root argument"}.get(origin, origin)


def _other_choices(spec: DatasetSpec, origin: str, interface: Interface) -> str:
    if origin == "NNSCRATCH_DATA":
        return (f"point NNSCRATCH_DATA at a folder of {spec.title} files, or unset it to use "
                "the per-user cache (and download there)")
    drop = interface.unname_folder
    return f"name a folder that holds the {spec.title} files, or {drop} to use the " \
           "per-user cache (and download there)"


@dataclass(frozen=True)
class _FileRead:
    """One file as read: where, its array, and the checksums that identify it."""

    path: Path
    array: np.ndarray
    content_md5: str
    content_size: int
    gz_md5: str | None  # None for a decompressed file


def _load_named(spec: DatasetSpec, folder: Path, origin: str, interface: Interface) -> Dataset:
    where = f"{folder} (named by {_named_by(origin)})"
    if not folder.exists():
        raise DataError(f"{where} does not exist: {_other_choices(spec, origin, interface)}")
    if not folder.is_dir():
        raise DataError(f"{where} is not a folder: {_other_choices(spec, origin, interface)}")
    paths = {field: _find(folder, file) for field, file in spec.files.items()}
    missing = [spec.files[field].name + ".gz" for field, path in paths.items() if path is None]
    if missing:
        raise DataError(
            f"{where} lacks {len(missing)} of the {len(spec.files)} {spec.title} files: "
            f"{', '.join(missing)} (or each decompressed, without .gz). A named folder is "
            f"used as it is or not at all: nothing is downloaded into it and no other folder "
            f"stands in for it. Add the files, or {_other_choices(spec, origin, interface)}."
        )
    reads = {field: _read_named(path) for field, path in paths.items()}
    other = _holds_another_dataset(spec, reads)
    if other is not None:
        other_spec, names = other
        raise DataError(
            f"{where} holds the canonical {other_spec.title} files ({', '.join(names)}), not "
            f"{spec.title}: to use them, {interface.choose.format(name=other_spec.name)}; else "
            f"{_other_choices(spec, origin, interface)}."
        )
    arrays = {field: read.array for field, read in reads.items()}
    dataset = _to_dataset(spec, arrays, {f: r.path for f, r in reads.items()}, folder)
    note = _canonical_note(spec, folder, reads)
    return replace(dataset, notes=(note,)) if note else dataset


def _read_named(path: Path) -> _FileRead:
    raw = read_raw(path)
    content = decompress_idx(raw, str(path))
    array = parse_idx(content, str(path))
    is_gz = raw[: len(GZIP_MAGIC)] == GZIP_MAGIC
    return _FileRead(path, array, download_module.md5_hex(content), len(content),
                     download_module.md5_hex(raw) if is_gz else None)


def _is_canonical(read: _FileRead, file: DataFile) -> bool | None:
    """Whether ``read`` is the published ``file``; None when that cannot be checked."""
    if file.md5 is not None:
        return read.content_md5 == file.md5 and read.content_size == file.size
    if read.gz_md5 is not None and file.gz_md5 is not None:
        return read.gz_md5 == file.gz_md5
    return None


def _holds_another_dataset(
    spec: DatasetSpec, reads: dict[str, _FileRead]
) -> tuple[DatasetSpec, list[str]] | None:
    """The first other known dataset whose canonical files are among ``reads``."""
    for other in DATASETS.values():
        if other.name == spec.name:
            continue
        names = [
            read.path.name for field, read in reads.items()
            if not _is_canonical(read, spec.files[field])
            and any(_is_canonical(read, file) for file in other.files.values())
        ]
        if names:
            return other, names
    return None


def _canonical_note(spec: DatasetSpec, folder: Path, reads: dict[str, _FileRead]) -> str | None:
    """The one line saying that named files are not (or cannot be shown to be) canonical."""
    differ, unchecked = [], []
    for field, read in reads.items():
        canonical = _is_canonical(read, spec.files[field])
        if canonical is None:
            unchecked.append(read.path.name)
        elif not canonical:
            differ.append(read.path.name)
    parts = []
    if differ:
        parts.append(f"{', '.join(differ)} differ from the published checksums")
    if unchecked:
        parts.append(f"{', '.join(unchecked)} cannot be checked: decompressed, and only the "
                     ".gz files' checksums are published")
    if not parts:
        return None
    if differ:
        return (f"{folder}: not the canonical {spec.title} files ({'; '.join(parts)}): "
                "training on them as given")
    return (f"{folder}: cannot confirm these are the canonical {spec.title} files "
            f"({'; '.join(parts)}): training on them as given")


# -- the per-user cache --------------------------------------------------------------------


def _fill_cache(spec: DatasetSpec, cache: Path, download: bool,
                mirrors: Sequence[str] | None, progress: bool, interface: Interface
                ) -> tuple[str, str] | None:
    """Download what the cache lacks; return None when it holds every file, else why not:
    the reason in a sentence, and the details (the files missing, each mirror's failure)."""
    missing = [file for file in spec.files.values()
               if _find_cached(cache, file, interface) is None]
    if not missing:
        return None
    names = ", ".join(file.name + ".gz" for file in missing)
    lacks = f"The cache lacks {names}."
    if not download:
        return (f"{spec.title} is not in the per-user cache {cache} and "
                f"{interface.no_download}.", lacks)
    mirrors = spec.mirrors if mirrors is None else tuple(mirrors)
    for file in missing:
        urls = [_join_url(mirror, file.name + ".gz") for mirror in mirrors]
        expected_md5, size, md5_of = _checksum(file)
        try:
            download_module.download_file(
                urls, cache / (file.name + ".gz"), expected_md5, size, progress, md5_of=md5_of
            )
        except DataError as err:
            return (f"{spec.title} is not in the per-user cache {cache} and could not be "
                    "downloaded.", f"{lacks}\nThe download failed from every mirror: {err}.")
    return None


def _checksum(file: DataFile) -> tuple[str, int, str]:
    """(expected MD5, decompressed size, what the MD5 is of) for verifying ``file``."""
    if file.md5 is not None:
        return file.md5, file.size, "content"
    if file.gz_md5 is None:
        raise ConfigError(f"{file.name}: the dataset gives no checksum to verify it by")
    return file.gz_md5, file.size, "gz"


def _load_cached(spec: DatasetSpec, cache: Path, interface: Interface) -> Dataset:
    paths = {field: _find_cached(cache, file, interface) for field, file in spec.files.items()}
    if any(path is None for path in paths.values()):  # deleted between download and now
        raise DataError(f"{spec.title} files disappeared from {cache} while loading: load again")
    arrays = {field: _read_cached(paths[field], file) for field, file in spec.files.items()}
    return _to_dataset(spec, arrays, paths, cache)


def _find_cached(cache: Path, file: DataFile, interface: Interface) -> Path | None:
    """The cached copy of ``file``: its .gz, or for a dataset verified by content (MNIST)
    also the decompressed file. A decompressed file that cannot be verified is an error."""
    path = _find(cache, file)
    if path is not None and not path.name.endswith(".gz") and not file.verified_by_content:
        raise DataError(
            f"{path}: a decompressed file in the per-user cache cannot be verified (only the "
            f".gz files' checksums are published for this dataset): delete it, and the .gz "
            "is downloaded again; or move it to a folder of your own and name that folder "
            f"({interface.name_folder} or NNSCRATCH_DATA) to use it as given."
        )
    return path


def _read_cached(path: Path, file: DataFile) -> np.ndarray:
    """Read a cached file, verifying this version of it once per process."""
    expected_md5, size, md5_of = _checksum(file)
    try:
        raw = read_raw(path, max_size=size)
        if download_module.is_verified(path, expected_md5):
            content = decompress_idx(raw, str(path), max_size=size)
        else:
            content = download_module.verify_bytes(raw, str(path), expected_md5, size, md5_of)
            download_module.remember_verified(path, expected_md5)
        return parse_idx(content, str(path))
    except DataError as err:
        raise DataError(
            f"{err} -- this file is in nnscratch's per-user cache, where only verified files "
            f"belong: it is corrupt or not the canonical one. Delete it ({path}) and load "
            "again to download it afresh."
        ) from err


def _how_to_get(spec: DatasetSpec, cache: Path, download: bool, interface: Interface) -> str:
    first = (interface.allow_download if not download
             else "check the internet connection and try again")
    return (f"To get {spec.title}: {first}; or name a folder that holds its files with "
            f"{interface.name_folder} or the NNSCRATCH_DATA environment variable; or put "
            f"them into {cache}.")


# -- the fallback --------------------------------------------------------------------------


def _fall_back(spec: DatasetSpec, cache: Path, reason: str, download: bool,
               tell: Callable[[str], None], interface: Interface) -> Dataset:
    try:
        digits = digits_module.load_digits()
    except DataError as err:
        raise DataError(
            f"{spec.title} is unavailable: {reason} -- and the fallback, the 8x8 digits, is "
            f"unavailable too: {err}"
        ) from err
    tell(banner_text([
        f"{spec.title.upper()} IS NOT AVAILABLE: using the 8x8 scikit-learn digits instead.",
        f"Why: {reason}",
        _how_to_get(spec, cache, download, interface),
        f"Results on the 8x8 digits say nothing about {spec.title}.",
    ]))
    return replace(digits, fallback_reason=reason)


def banner_text(paragraphs: Sequence[str]) -> str:
    """``paragraphs``, wrapped, framed by rules of '!' so they cannot be missed."""
    lines = [_BANNER_RULE]
    for paragraph in paragraphs:
        lines += [f"!!  {line}" for line in textwrap.wrap(
            paragraph, width=_BANNER_WIDTH, break_long_words=False, break_on_hyphens=False)]
    lines.append(_BANNER_RULE)
    return "\n".join(lines)


# -- shared by both ------------------------------------------------------------------------


def _find(directory: Path, file: DataFile) -> Path | None:
    """``directory/NAME.gz`` or ``directory/NAME``, whichever is a regular file (.gz first)."""
    for candidate in (directory / (file.name + ".gz"), directory / file.name):
        if candidate.is_file():
            return candidate
    return None


def _join_url(mirror: str, name: str) -> str:
    return (mirror if mirror.endswith("/") else mirror + "/") + name


def _to_dataset(spec: DatasetSpec, arrays: dict[str, np.ndarray], paths: dict[str, Path],
                source: Path) -> Dataset:
    """Check the arrays' shapes, types, labels and counts; flatten and scale the images."""
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        _check_images(images, paths[f"x_{split}"], spec)
        _check_labels(labels, paths[f"y_{split}"], spec)
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{paths[f'x_{split}']} holds {images.shape[0]} images but "
                f"{paths[f'y_{split}']} holds {labels.shape[0]} labels: the {split} images "
                "and labels must pair up one to one"
            )
    return Dataset(
        x_train=_scaled_rows(arrays["x_train"]),
        y_train=arrays["y_train"].astype(np.int64),
        x_test=_scaled_rows(arrays["x_test"]),
        y_test=arrays["y_test"].astype(np.int64),
        name=spec.name,
        source=str(source),
        title=spec.title,
        class_names=spec.class_names,
    )


def _check_images(array: np.ndarray, path: Path, spec: DatasetSpec) -> None:
    if array.dtype != np.uint8 or array.ndim != 1 + len(spec.image_shape) \
            or array.shape[1:] != spec.image_shape:
        shape = ", ".join(["N", *map(str, spec.image_shape)])
        raise DataError(
            f"{path}: expected uint8 images of shape ({shape}), found {array.dtype} "
            f"{array.shape}"
        )


def _check_labels(array: np.ndarray, path: Path, spec: DatasetSpec) -> None:
    if array.dtype != np.uint8 or array.ndim != 1:
        raise DataError(
            f"{path}: expected a vector of uint8 labels, found {array.dtype} {array.shape}"
        )
    if array.size and int(array.max()) >= spec.num_classes:
        raise DataError(
            f"{path}: label {int(array.max())} is out of range 0-{spec.num_classes - 1} "
            f"for the {spec.num_classes} classes of {spec.title}"
        )


def _scaled_rows(images: np.ndarray) -> np.ndarray:
    """Each image as one row of float32 grey levels in [0, 1]."""
    rows = images.reshape(images.shape[0], -1).astype(np.float32)
    rows /= np.float32(255)
    return rows


def _silent(message: str) -> None:
    """``report=None``: say nothing."""


__all__ = ["COMMAND_LINE", "FALLBACKS", "LIBRARY", "Interface", "banner_text", "cache_dir",
           "get_spec", "load", "print_to_stderr"]
