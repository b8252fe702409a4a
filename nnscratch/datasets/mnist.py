"""MNIST by its old names: :func:`load_mnist` is ``load("mnist", ...)``.

Kept so that code written before :func:`nnscratch.datasets.load` keeps working; the rules
(a named folder is used or refused, the per-user cache is verified, downloads are
verified before they get their names) are those of :mod:`nnscratch.datasets.loader`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nnscratch.datasets.dataset import Dataset
from nnscratch.datasets.download import DOWNLOAD_TIMEOUT, download_file, verify_bytes
from nnscratch.datasets.loader import cache_dir, load
from nnscratch.datasets.registry import MNIST, DataFile

#: The four MNIST files, keyed by the Dataset field each fills.
MNIST_FILES: dict[str, DataFile] = MNIST.files

#: The mirrors MNIST is downloaded from, in the order tried.
DEFAULT_MIRRORS: tuple[str, ...] = MNIST.mirrors

IMAGE_SIZE = MNIST.image_shape
NUM_CLASSES = MNIST.num_classes


def default_cache_dir() -> Path:
    """The per-user folder MNIST is cached in: :func:`cache_dir` ``("mnist")``."""
    return cache_dir("mnist")


def load_mnist(
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
) -> Dataset:
    """Load MNIST: ``load("mnist", root, download=..., mirrors=..., progress=...)``.

    60,000 training and 10,000 test images of handwritten digits, flattened to rows of
    784 float32 values in [0, 1], with int64 labels 0-9. See
    :func:`nnscratch.datasets.load`.
    """
    return load("mnist", root, download=download, mirrors=mirrors, progress=progress)


__all__ = [
    "DEFAULT_MIRRORS",
    "DOWNLOAD_TIMEOUT",
    "MNIST_FILES",
    "DataFile",
    "Dataset",
    "default_cache_dir",
    "download_file",
    "load_mnist",
    "verify_bytes",
]
