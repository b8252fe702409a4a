"""The 8x8 handwritten digits that ship with scikit-learn: a small MNIST for quick runs.

1,797 images of 8x8 pixels with grey levels 0-16 (a copy of the UCI "optical
recognition of handwritten digits" test set). They are bundled with scikit-learn, so
loading needs no download, only scikit-learn itself (an optional dependency, part of
the ``examples`` extra).
"""

from __future__ import annotations

import numpy as np

from nnscratch.datasets.dataset import Dataset
from nnscratch.errors import ConfigError, DataError

#: The largest grey level in the 8x8 digits.
MAX_GREY_LEVEL = 16
#: Label k is the digit k.
CLASS_NAMES = tuple(str(digit) for digit in range(10))


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Load the 8x8 digits, split into train and test sets.

    Features are the 64 pixels of each image as float32 in [0, 1] (grey level / 16);
    labels are int64 digits 0-9. The split is stratified: ``test_fraction`` of each
    digit's images (rounded) goes to the test set, chosen by a
    ``numpy.random.Generator(PCG64(seed))``, so the same seed gives the same split.

    Raises :class:`DataError` if scikit-learn is not installed, :class:`ConfigError`
    if ``test_fraction`` leaves either split empty.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as err:
        raise DataError(
            "load_digits needs scikit-learn, which ships the 8x8 digits: "
            "pip install scikit-learn (or pip install 'nnscratch[examples]')"
        ) from err

    bunch = sklearn_load_digits()
    features = np.asarray(bunch.data, dtype=np.float32) / np.float32(MAX_GREY_LEVEL)
    labels = np.asarray(bunch.target, dtype=np.int64)

    rng = np.random.Generator(np.random.PCG64(seed))
    train_index, test_index = _stratified_split(labels, test_fraction, rng)
    if train_index.size == 0 or test_index.size == 0:
        raise ConfigError(
            f"test_fraction={test_fraction} leaves the "
            f"{'test' if test_index.size == 0 else 'training'} set empty"
        )
    return Dataset(
        x_train=features[train_index],
        y_train=labels[train_index],
        x_test=features[test_index],
        y_test=labels[test_index],
        name="digits-8x8",
        source="scikit-learn (sklearn.datasets.load_digits)",
        title="8x8 digits (scikit-learn)",
        class_names=CLASS_NAMES,
    )


def _stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled indices of the train and test sets, each class split in the same ratio."""
    train_parts, test_parts = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test_count = int(test_fraction * members.size + 0.5)
        test_parts.append(members[:test_count])
        train_parts.append(members[test_count:])
    # Shuffle again so the classes are interleaved, not in blocks.
    return rng.permutation(np.concatenate(train_parts)), rng.permutation(np.concatenate(test_parts))


__all__ = ["load_digits"]
