"""Datasets: the IDX file format, MNIST (local, cached or downloaded) and the 8x8 digits.

Every loader returns a :class:`Dataset` of host NumPy arrays; moving them to the
active backend's device is the training loop's job.
"""

from nnscratch.datasets.digits import load_digits
from nnscratch.datasets.idx import read_idx, write_idx
from nnscratch.datasets.mnist import MNIST_FILES, Dataset, default_cache_dir, load_mnist

__all__ = [
    "MNIST_FILES",
    "Dataset",
    "default_cache_dir",
    "load_digits",
    "load_mnist",
    "read_idx",
    "write_idx",
]
