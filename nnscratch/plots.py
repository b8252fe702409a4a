"""Pictures of a training run: learning curves, a confusion matrix, misclassified digits.

This module sits on the host side of the backend line: it takes host data (NumPy
arrays, lists, a ``History``), so move device arrays over first with ``nn.to_numpy``.
matplotlib is optional (part of the ``examples`` extra): it is imported inside each
function, and a missing matplotlib raises :class:`PlottingUnavailableError` saying how
to install it. Figures are drawn with the non-interactive Agg canvas, without pyplot
(no global state, no window), and each PNG is written atomically: a reader never sees
half an image. Each ``plot_*`` function draws its Figure in a ``_*_figure`` helper and
renders that; the tests read the helpers' Figures to check what a picture shows.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._files import atomic_write
from .datasets.dataset import class_name
from .errors import ConfigError, DataError, NNScratchError, ShapeError
from .metrics import misclassified

_INSTALL_HINT = "pip install matplotlib (or: pip install 'nnscratch[examples]')"


class PlottingUnavailableError(NNScratchError, ImportError):
    """matplotlib, which the plotting functions need, is not installed."""


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure bound to the Agg canvas (PNG rendering, no display)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlottingUnavailableError(
            f"plotting needs matplotlib, which is not installed ({exc}). Install it with: "
            f"{_INSTALL_HINT}"
        ) from exc
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _write_png(figure: Any, path: str | os.PathLike) -> None:
    """Render ``figure`` to PNG in memory, then write it to ``path`` atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def plot_learning_curves(history: Any, path: str | os.PathLike) -> None:
    """Two panels, loss and accuracy per epoch, each with the training and (where
    recorded) validation curve.

    ``history`` is a ``History`` (``fit``'s return value) or its ``.history`` dict:
    ``{"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...]}``.
    """
    _write_png(_learning_curves_figure(history), path)


def _learning_curves_figure(history: Any) -> Any:
    """The Figure of ``plot_learning_curves``: axes[0] loss, axes[1] accuracy."""
    curves = getattr(history, "history", history)
    if not isinstance(curves, dict) or not curves.get("loss"):
        raise ShapeError(
            "plot_learning_curves needs a History or a dict with a non-empty 'loss' list, "
            f"got {history!r}"
        )
    figure = _figure(10, 4)
    from matplotlib.ticker import MaxNLocator

    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for axes, metric, title in ((loss_axes, "loss", "loss"),
                                (accuracy_axes, "accuracy", "accuracy")):
        for key, label, style in ((metric, "training", "o-"),
                                  (f"val_{metric}", "validation", "s--")):
            values = curves.get(key)
            if values:
                epochs = range(1, len(values) + 1)
                axes.plot(epochs, values, style, label=label, markersize=3)
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend()
        else:
            axes.text(0.5, 0.5, f"no {metric} recorded", ha="center", va="center",
                      transform=axes.transAxes)
    figure.tight_layout()
    return figure


def plot_confusion_matrix(matrix: Any, path: str | os.PathLike,
                          class_names: Sequence[str] | None = None, *,
                          labels: Sequence[str] | None = None) -> None:
    """The confusion matrix as a heat map with every count written in its cell;
    ``matrix[i, j]`` counts the samples of true class i (row, y axis) predicted as
    class j (column, x axis). ``class_names[k]`` names class k on both axes (default:
    the numbers); ``labels`` is the older name of the same argument."""
    _write_png(_confusion_matrix_figure(matrix, class_names, labels=labels), path)


def _confusion_matrix_figure(matrix: Any, class_names: Sequence[str] | None = None, *,
                             labels: Sequence[str] | None = None) -> Any:
    """The Figure of ``plot_confusion_matrix``: axes[0] the heat map, axes[1] its
    colour bar."""
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ShapeError(f"a confusion matrix must be square, got shape {counts.shape}")
    if class_names is not None and labels is not None:
        raise ConfigError("pass class_names or labels (its older name), not both")
    if class_names is None:
        class_names = labels
    classes = counts.shape[0]
    names = [str(name) for name in class_names] if class_names is not None else [
        str(index) for index in range(classes)]
    if len(names) != classes:
        raise ShapeError(f"{len(names)} class names for a {classes}x{classes} confusion matrix: "
                         "give one name per class")
    side = max(4.0, 0.6 * classes + 2.0)
    figure = _figure(side + 1.0, side)
    axes = figure.subplots()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    threshold = counts.max() / 2.0 if counts.size else 0.0
    font_size = 8 if classes <= 12 else 6
    for row in range(classes):
        for column in range(classes):
            value = counts[row, column]
            text = f"{value:g}" if counts.dtype.kind == "f" else str(int(value))
            axes.text(column, row, text, ha="center", va="center", fontsize=font_size,
                      color="white" if value > threshold else "black")
    long_names = max(map(len, names)) > 2  # words, not digits: slant them to fit
    axes.set_xticks(range(classes), names, rotation=45 if long_names else 0,
                    ha="right" if long_names else "center")
    axes.set_yticks(range(classes), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    total = counts.sum()
    correct = np.trace(counts)
    share = f" (accuracy {correct / total:.4f})" if total else ""
    axes.set_title(f"confusion matrix{share}")
    figure.tight_layout()
    return figure


def plot_misclassified(images: Any, true_labels: Any, predicted_labels: Any,
                       path: str | os.PathLike, max_images: int = 36,
                       class_names: Sequence[str] | None = None) -> None:
    """A grid of (at most ``max_images``) images, each titled "true T / pred P".

    ``images`` are square grey images, as (n, side, side) or flattened (n, side²) rows
    (28x28 MNIST, 8x8 digits); with none, the picture says so. With ``class_names``
    the titles name the classes ("true Sneaker / pred Bag"): label k is
    ``class_names[k]``.
    """
    figure = _misclassified_figure(images, true_labels, predicted_labels, max_images,
                                   class_names)
    _write_png(figure, path)


def _misclassified_figure(images: Any, true_labels: Any, predicted_labels: Any,
                          max_images: int = 36,
                          class_names: Sequence[str] | None = None) -> Any:
    """The Figure of ``plot_misclassified``: one axes per grid cell, row by row, the
    first ``count`` of them showing an image."""
    pictures = np.asarray(images, dtype=np.float64)
    expected = np.asarray(true_labels).reshape(-1)
    predicted = np.asarray(predicted_labels).reshape(-1)
    if pictures.ndim == 2:
        side = math.isqrt(pictures.shape[1])
        if side * side != pictures.shape[1]:
            raise ShapeError(
                f"flattened images must have a square number of pixels, got {pictures.shape[1]}"
            )
        pictures = pictures.reshape(pictures.shape[0], side, side)
    if pictures.ndim != 3:
        raise ShapeError(f"images must be (n, side, side) or (n, side*side), got {pictures.shape}")
    if not pictures.shape[0] == expected.shape[0] == predicted.shape[0]:
        raise ShapeError(
            f"{pictures.shape[0]} images, {expected.shape[0]} true labels and "
            f"{predicted.shape[0]} predicted labels: they must match"
        )
    count = min(pictures.shape[0], max(0, int(max_images)))
    if count == 0:
        figure = _figure(4, 2)
        figure.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        return figure
    titles = [f"true {class_name(expected[index], class_names)} / "
              f"pred {class_name(predicted[index], class_names)}" for index in range(count)]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    # about 0.065 inch per character of an 8-point title: class names widen the cells
    cell_width = max(1.5, 0.065 * max(map(len, titles)))
    figure = _figure(cell_width * columns, 1.7 * rows)
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).reshape(-1)
    for index, axes in enumerate(grid):
        axes.axis("off")
        if index < count:
            axes.imshow(pictures[index], cmap="gray", interpolation="nearest")
            axes.set_title(titles[index], fontsize=8, color="firebrick")
    figure.tight_layout()
    return figure


def plot_augmented(images: Any, augmented: Any, path: str | os.PathLike) -> None:
    """Each image (top row) above its augmented copies (the rows below): ``images`` of
    shape (n, side, side) or (n, side²), ``augmented`` a list of host arrays of the same
    shape, one per row of copies."""
    figure = _augmented_figure(images, augmented)
    _write_png(figure, path)


def _augmented_figure(images: Any, augmented: Any) -> Any:
    rows = [_square_images(images)] + [_square_images(copies) for copies in augmented]
    count = rows[0].shape[0]
    if count == 0 or any(row.shape != rows[0].shape for row in rows):
        raise ShapeError(f"plot_augmented needs at least one image and copies of the same "
                         f"shape; got {[row.shape for row in rows]}")
    figure = _figure(1.1 * count, 1.15 * len(rows))
    grid = figure.subplots(len(rows), count, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(count):
            grid[r, c].imshow(row[c], cmap="gray", interpolation="nearest")
            grid[r, c].set_xticks([])
            grid[r, c].set_yticks([])
        grid[r, 0].set_ylabel("original" if r == 0 else f"augmented {r}", fontsize=7)
    figure.tight_layout()
    return figure


def _square_images(images: Any) -> np.ndarray:
    """(n, side, side) host images from rows of side² pixels or images."""
    pictures = np.asarray(images, dtype=np.float64)
    if pictures.ndim == 2 and math.isqrt(pictures.shape[1]) ** 2 == pictures.shape[1]:
        side = math.isqrt(pictures.shape[1])
        pictures = pictures.reshape(pictures.shape[0], side, side)
    if pictures.ndim != 3:
        raise ShapeError(f"images must be (n, side, side) or (n, side*side), got {pictures.shape}")
    return pictures


def plot_training_run(folder: str | os.PathLike, history: Any, images: Any, true_labels: Any,
                      predicted_labels: Any, class_names: Sequence[str] | None = None,
                      augment: Any = None) -> list[str]:
    """The three pictures of a finished run in ``folder``: ``learning_curves.png``,
    ``confusion_matrix.png`` (of the classes 0..C−1, C from ``class_names`` or the
    labels) and ``misclassified.png`` (the first 36 test images read wrong). Host arrays:
    the test images, their true and predicted labels. Given the run's ``augment``
    transform, a fourth, ``augmented.png``: the first 10 test images above three
    augmented copies of each (drawn on the active backend, from the ``augment`` stream).
    Returns the paths written."""
    expected = np.asarray(true_labels).reshape(-1)
    predicted = np.asarray(predicted_labels).reshape(-1)
    if expected.size == 0 or expected.shape != predicted.shape:
        raise ShapeError(f"plot_training_run needs as many predicted labels as true ones, "
                         f"at least one; got {expected.size} and {predicted.size}")
    largest = int(max(expected.max(), predicted.max()))
    classes = len(class_names) if class_names else largest + 1
    if min(expected.min(), predicted.min()) < 0 or largest >= classes:
        raise DataError(f"labels must be classes 0..{classes - 1} (one per class name), got "
                        f"labels from {min(expected.min(), predicted.min())} to {largest}")
    matrix = np.zeros((classes, classes), dtype=np.int64)  # true i predicted as j
    np.add.at(matrix, (expected, predicted), 1)
    paths = [os.path.join(folder, name) for name in
             ("learning_curves.png", "confusion_matrix.png", "misclassified.png")]
    plot_learning_curves(history, paths[0])
    plot_confusion_matrix(matrix, paths[1], class_names=class_names)
    wrong = misclassified(predicted, expected, 36)
    plot_misclassified(np.asarray(images)[wrong], expected[wrong], predicted[wrong], paths[2],
                       class_names=class_names)
    if augment is not None:
        from .backend import to_numpy

        first = _square_images(np.asarray(images)[:10]).astype(np.float32)
        paths.append(os.path.join(folder, "augmented.png"))
        plot_augmented(first, [to_numpy(augment(first)) for _ in range(3)], paths[3])
    return paths


__all__ = [
    "PlottingUnavailableError",
    "plot_augmented",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "plot_misclassified",
]
