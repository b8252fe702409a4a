"""Datasets: the IDX file format, MNIST (local, cached or downloaded), the 8x8 digits,
and the small synthetic sets of the course notes (XOR, spirals).

The loaders return a :class:`Dataset` of host NumPy arrays, ``make_spiral`` and
``make_xor`` a pair ``(X, y)``; moving them to the active backend's device is the
training loop's job.
"""

from nnscratch.datasets.digits import load_digits
from nnscratch.datasets.idx import read_idx, write_idx
from nnscratch.datasets.mnist import MNIST_FILES, Dataset, default_cache_dir, load_mnist
from nnscratch.datasets.synthetic import make_spiral, make_xor

__all__ = [
    "MNIST_FILES",
    "Dataset",
    "default_cache_dir",
    "load_digits",
    "load_mnist",
    "make_spiral",
    "make_xor",
    "read_idx",
    "write_idx",
]
