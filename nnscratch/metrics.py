"""Metrics: how often the network is right, and where it is wrong.

All of them stay on the device and return arrays (0-d for counts); ``float()`` or
``nn.to_numpy`` moves a result to the host when it must be printed.
"""

from __future__ import annotations

from typing import Any

from .backend import namespace
from .losses import element_count, one_hot


def predicted_labels(outputs: Any, task: str = "multiclass", threshold: float = 0.5) -> Any:
    """Class predictions: the argmax of each row (multiclass), or ``outputs ≥ threshold``
    as 0/1 (binary; the threshold is 0.5 for probabilities, 0 for logits)."""
    xp = namespace(outputs)
    if task == "multiclass":
        return xp.argmax(outputs, axis=1)
    return xp.astype(outputs >= threshold, xp.int64)


def true_labels(targets: Any, task: str = "multiclass") -> Any:
    """Integer labels from integer labels or from one-hot rows."""
    xp = namespace(targets)
    if task == "multiclass" and targets.ndim == 2:
        return xp.argmax(targets, axis=1)
    if xp.isdtype(targets.dtype, "integral"):
        return targets
    return xp.astype(targets >= 0.5, xp.int64)


def expected_predictions(targets: Any, task: str = "multiclass") -> Any:
    """What a correct prediction equals: class labels (multiclass: the labels, or the
    argmax of one-hot rows), or ``targets ≥ ½`` (binary), as ``(n, 1)`` for (n,)
    targets. ``fit`` computes this once for all of y, not at every step."""
    xp = namespace(targets)
    if task == "multiclass":
        return targets if targets.ndim == 1 else xp.argmax(targets, axis=1)
    expected = targets >= 0.5
    return xp.reshape(expected, (-1, 1)) if expected.ndim == 1 else expected


def class_predictions(outputs: Any, task: str = "multiclass", threshold: float = 0.5) -> Any:
    """The classes ``outputs`` predict, in the form ``expected_predictions`` gives the
    true ones: the argmax of each row (multiclass), or ``outputs ≥ threshold`` as
    booleans (binary). One array operation: ``fit`` calls it on every step."""
    if task == "multiclass":
        return namespace(outputs).argmax(outputs, axis=1)
    return outputs >= threshold


def count_matching(outputs: Any, expected: Any, task: str = "multiclass",
                   threshold: float = 0.5) -> Any:
    """How many predictions from ``outputs`` equal ``expected_predictions``, as a
    0-d array (no host read)."""
    xp = namespace(outputs)
    return xp.count_nonzero(class_predictions(outputs, task, threshold) == expected)


def correct_count(outputs: Any, targets: Any, task: str = "multiclass",
                  threshold: float = 0.5) -> Any:
    """The number of samples (binary: elements) classified right, as a 0-d array."""
    expected = expected_predictions(targets, task)
    if task != "multiclass" and expected.shape != outputs.shape:
        expected = namespace(expected).reshape(expected, outputs.shape)
    return count_matching(outputs, expected, task, threshold)


def accuracy(outputs: Any, targets: Any, task: str = "multiclass", threshold: float = 0.5) -> float:
    """The fraction of samples classified right (a host float)."""
    predicted = predicted_labels(outputs, task, threshold)
    return float(correct_count(outputs, targets, task, threshold)) / element_count(predicted)


def misclassified(predicted: Any, expected: Any, count: int | None = None) -> Any:
    """The indices of the samples whose predicted class is not the expected one, in
    order; with ``count``, the first ``count`` of them (what a page or a plot shows)."""
    xp = namespace(predicted)
    (wrong,) = xp.nonzero(predicted != expected)
    return wrong if count is None else wrong[:count]


def confusion_matrix(predicted: Any, expected: Any, num_classes: int) -> Any:
    """``M[i, j]`` = how many samples of true class i were predicted as class j.

    Built as ``onehot(expected)ᵀ · onehot(predicted)``: a matrix product instead of a
    scatter, which the Array API standard does not have.
    """
    xp = namespace(predicted)
    rows = one_hot(xp.astype(expected, xp.int64), num_classes, xp.float64)
    columns = one_hot(xp.astype(predicted, xp.int64), num_classes, rows.dtype)
    return xp.astype(xp.round(rows.T @ columns), xp.int64)
