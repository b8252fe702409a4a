"""nnscratch.metrics on every backend: which class each output predicts (ties, the binary
threshold itself), which class each target names, how many are right out of how many,
and which way round the confusion matrix is.

The values are small enough to check by eye; each one is chosen so that a plausible
slip (``>`` for ``≥``, the last maximum for the first, counting rows instead of
elements, a transposed matrix) gives a different answer.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnscratch as nn
from nnscratch.metrics import predicted_labels, true_labels


def on_device(backend, values, dtype: str):
    """Host values as an array of the session's backend, with an explicit dtype."""
    return backend.asarray(np.asarray(values, dtype=dtype), dtype=dtype)


def host(array) -> list:
    return nn.to_numpy(array).tolist()


# -- predicted_labels ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predicted_labels_multiclass_is_the_first_largest_output(backend, dtype):
    outputs = on_device(backend, [[0.1, 0.7, 0.2],
                                  [0.5, 0.5, 0.0],   # a tie: the first index wins
                                  [0.2, 0.3, 0.3],   # a tie further right
                                  [-1.0, -3.0, -0.5],  # logits may be negative
                                  [4.0, 4.0, 4.0]], dtype)
    labels = predicted_labels(outputs)
    assert host(labels) == [1, 0, 1, 2, 0]
    assert labels.shape == (5,) and backend.xp.isdtype(labels.dtype, "integral")


def test_predicted_labels_binary_counts_the_threshold_as_class_1(backend):
    # probabilities (after a Sigmoid): class 1 from 0.5 on, 0.5 itself included
    probabilities = on_device(backend, [[0.0], [0.4999], [0.5], [0.5001], [1.0]], "float32")
    labels = predicted_labels(probabilities, task="binary")
    assert host(labels) == [[0], [0], [1], [1], [1]]
    assert labels.shape == (5, 1) and labels.dtype == backend.xp.int64
    # logits (BinaryCrossEntropy(from_logits=True) uses threshold 0): 0 itself is class 1
    logits = on_device(backend, [[-1e-3, 0.0, 1e-3], [-5.0, -0.0, 5.0]], "float64")
    assert host(predicted_labels(logits, task="binary", threshold=0.0)) == [[0, 1, 1],
                                                                            [0, 1, 1]]
    # any threshold is "at or above"
    scores = on_device(backend, [0.8, 0.9, 0.95], "float64")
    assert host(predicted_labels(scores, task="binary", threshold=0.9)) == [0, 1, 1]


# -- true_labels ---------------------------------------------------------------------------


def test_true_labels_of_class_targets(backend):
    labels = on_device(backend, [2, 0, 1, 2], "int64")
    assert host(true_labels(labels)) == [2, 0, 1, 2]  # integer labels pass through
    one_hot = on_device(backend, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], "float32")
    assert host(true_labels(one_hot)) == [2, 0, 1, 2]
    # probability rows (label smoothing): the most likely class
    smoothed = on_device(backend, [[0.1, 0.1, 0.8], [0.8, 0.1, 0.1]], "float64")
    assert host(true_labels(smoothed)) == [2, 0]


def test_true_labels_of_binary_targets(backend):
    # float targets: class 1 from 0.5 on, 0.5 included, whatever the shape
    targets = on_device(backend, [0.0, 0.49, 0.5, 0.51, 1.0], "float32")
    labels = true_labels(targets, task="binary")
    assert host(labels) == [0, 0, 1, 1, 1] and labels.dtype == backend.xp.int64
    columns = on_device(backend, [[1.0, 0.0], [0.5, 0.25]], "float64")
    assert host(true_labels(columns, task="binary")) == [[1, 0], [1, 0]]
    # integer 0/1 labels pass through unchanged
    integers = on_device(backend, [[1], [0], [1]], "int64")
    assert host(true_labels(integers, task="binary")) == [[1], [0], [1]]


# -- accuracy ------------------------------------------------------------------------------


def test_multiclass_accuracy_from_labels_and_from_one_hot_rows(backend):
    outputs = on_device(backend, [[0.2, 0.8], [0.6, 0.4], [0.5, 0.5], [0.9, 0.1]], "float32")
    labels = [1, 1, 0, 1]  # right, wrong, right (a tie is class 0), wrong
    assert nn.accuracy(outputs, on_device(backend, labels, "int64")) == 0.5
    one_hot = np.eye(2, dtype=np.float32)[labels]
    assert nn.accuracy(outputs, on_device(backend, one_hot, "float32")) == 0.5


def test_binary_accuracy_counts_outputs_at_the_threshold_as_class_1(backend):
    targets = on_device(backend, [[1.0], [1.0], [1.0], [0.0]], "float32")
    probabilities = on_device(backend, [[0.5], [0.5], [0.9], [0.5]], "float32")
    assert nn.accuracy(probabilities, targets, task="binary") == 0.75
    logits = on_device(backend, [[0.0], [0.0], [3.0], [0.0]], "float32")
    assert nn.accuracy(logits, targets, task="binary", threshold=0.0) == 0.75
    # targets of exactly 0.5 are class 1 too, as for true_labels; (n,) targets fit
    # (n, 1) outputs
    halves = on_device(backend, [0.5, 0.5, 0.0, 0.0], "float32")
    assert nn.accuracy(probabilities, halves, task="binary") == 0.5


def test_binary_accuracy_of_several_outputs_counts_every_element(backend):
    # four samples, three independent yes/no outputs each: 12 predictions, 7 right
    outputs = on_device(backend, [[0.9, 0.2, 0.6],
                                  [0.1, 0.7, 0.4],
                                  [0.5, 0.5, 0.5],
                                  [0.3, 0.8, 0.0]], "float32")
    targets = on_device(backend, [[1, 0, 0],      # right, right, wrong
                                  [0, 0, 0],      # right, wrong, right
                                  [1, 0, 1],      # right, wrong, right
                                  [0, 0, 1]], "float32")  # right, wrong, wrong
    assert nn.accuracy(outputs, targets, task="binary") == pytest.approx(7 / 12, rel=1e-15)


# -- confusion matrix ----------------------------------------------------------------------


def test_confusion_matrix_rows_are_true_classes_and_columns_predictions(backend):
    # true 0 is predicted as 1 three times; true 1 is never predicted as 0
    expected = on_device(backend, [0, 0, 0, 0, 1, 1, 2, 2, 2], "int64")
    predicted = on_device(backend, [1, 1, 1, 0, 1, 2, 2, 2, 0], "int64")
    matrix = nn.confusion_matrix(predicted, expected, 4)  # class 3: never seen
    assert host(matrix) == [[1, 3, 0, 0],
                            [0, 1, 1, 0],
                            [1, 0, 2, 0],
                            [0, 0, 0, 0]]
    assert matrix.dtype == backend.xp.int64
    # from the predicted labels of outputs, as the example computes it
    outputs = on_device(backend, np.eye(3, dtype=np.float32)[[1, 1, 1, 0, 1, 2, 2, 2, 0]],
                        "float32")
    assert host(nn.confusion_matrix(predicted_labels(outputs), expected, 3)) == [
        [1, 3, 0], [0, 1, 1], [1, 0, 2]]


def test_misclassified_gives_the_first_wrong_samples_in_order(backend):
    """The one helper the app's page and plot_training_run share."""
    predicted = backend.asarray(np.array([3, 1, 4, 1, 5, 9, 2, 6]))
    expected = backend.asarray(np.array([3, 2, 4, 7, 5, 9, 0, 0]))
    assert nn.to_numpy(nn.metrics.misclassified(predicted, expected)).tolist() == [1, 3, 6, 7]
    assert nn.to_numpy(nn.metrics.misclassified(predicted, expected, 2)).tolist() == [1, 3]
    assert nn.to_numpy(nn.metrics.misclassified(predicted, predicted)).tolist() == []
