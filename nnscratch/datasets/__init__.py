"""Datasets: MNIST, Fashion-MNIST and KMNIST by name (found, downloaded, verified), the
8x8 digits, the IDX file format, and the small synthetic sets of the course notes (XOR,
spirals).

    data = nnscratch.datasets.load("fashion-mnist")   # see nnscratch.datasets.loader

The loaders return a :class:`Dataset` of host NumPy arrays, ``make_spiral`` and
``make_xor`` a pair ``(X, y)``; moving them to the active backend's device is the
training loop's job.
"""

from nnscratch.datasets.dataset import Dataset
from nnscratch.datasets.digits import load_digits
from nnscratch.datasets.idx import read_idx, write_idx
from nnscratch.datasets.loader import (
    COMMAND_LINE,
    FALLBACKS,
    LIBRARY,
    Interface,
    banner_text,
    cache_dir,
    get_spec,
    load,
)
from nnscratch.datasets.mnist import MNIST_FILES, default_cache_dir, load_mnist
from nnscratch.datasets.registry import DATASETS, DataFile, DatasetSpec
from nnscratch.datasets.synthetic import make_spiral, make_xor

__all__ = [
    "COMMAND_LINE",
    "DATASETS",
    "FALLBACKS",
    "LIBRARY",
    "MNIST_FILES",
    "DataFile",
    "Dataset",
    "DatasetSpec",
    "Interface",
    "banner_text",
    "cache_dir",
    "default_cache_dir",
    "get_spec",
    "load",
    "load_digits",
    "load_mnist",
    "make_spiral",
    "make_xor",
    "read_idx",
    "write_idx",
]
