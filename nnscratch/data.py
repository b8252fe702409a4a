"""Getting data into shape: input checks, train/validation splits, feature scaling.

``prepare_features`` and ``prepare_targets`` are what ``fit``, ``evaluate`` and
``predict`` run on what a user passes in: they move host arrays to the device once,
convert dtypes, and turn every bad input into an error that names the problem and
the fix, before any arithmetic runs on it. PyTorch tensors that require grad are
detached there (see ``backend.check_array``): training never builds an autograd graph.
``forward_input`` checks and moves host data given to ``model.forward`` in the same way.

The scalers follow the course notes' feature scaling, fitted on training data only
(statistics of the test set must never leak into training):

* min-max:          x' = (x − min) / (max − min)               into [0, 1]
* standardization:  x' = (x − μ) / σ                           mean 0, std 1 (z-score)
* mean normalization: x' = (x − μ) / (max − min)               mean 0, in [−1, 1]
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from . import random
from .backend import check_array, get_backend, library_of, namespace
from .errors import BackendError, ConfigError, DataError, ShapeError
from .layers import check_model, parameters_placement


def as_checked_array(array: Any, what: str) -> Any:
    """``array`` as an array of the active backend, or an error naming what is wrong.

    Host data (NumPy arrays, nested lists) is turned into NumPy first, here at the host
    boundary, so that ragged rows and non-numeric values raise ``ShapeError`` and
    ``DataError`` on every backend instead of each library's own exception.
    """
    if library_of(array) in (None, "numpy"):
        try:
            host = np.asarray(array)
        except ValueError as exc:
            raise ShapeError(
                f"{what} cannot be made into an array: its rows have different lengths "
                f"({exc}); every sample must have the same number of features"
            ) from exc
        if host.dtype.kind not in "biufc":
            raise DataError(
                f"{what} must hold numbers, got dtype {host.dtype}; convert or encode the "
                "values first (e.g. X.astype(float))"
            )
        array = host
    return check_array(array, what)


def prepare_features(X: Any, in_features: int | None, dtype: str, what: str = "X",
                     images: bool = False) -> Any:
    """``X`` as a floating array of the active backend, checked: 2-D, (samples,
    features), or with ``images`` (a model whose first layer takes images, such as
    ``Flatten``) also (samples, height, width) or (samples, channels, height, width).

    Integer arrays (e.g. uint8 pixels) are converted to ``dtype``; NaN or infinite
    values, a wrong number of dimensions or values per sample, and empty data raise.
    """
    X = as_checked_array(X, what)
    xp = namespace(X)
    if X.ndim != 2 and not (images and X.ndim in (3, 4)):
        if images:
            expected = "(samples, features), (samples, height, width) or (samples, "\
                       "channels, height, width)"
        else:
            expected = "2-D, (samples, features)"
        hint = (" (a single sample? use X[None, ...])" if images
                else " (a single sample? use X[None, :] or X.reshape(1, -1))" if X.ndim == 1
                else " (images? start the model with nn.Flatten(), or flatten them to "
                "(n, height*width))" if X.ndim > 2 else "")
        raise ShapeError(f"{what} must be {expected}; got shape {tuple(X.shape)}{hint}")
    if X.shape[0] == 0:
        raise DataError(f"{what} is empty: shape {tuple(X.shape)}; there is nothing to learn from")
    values = math.prod(X.shape[1:])
    if in_features is not None and values != in_features:
        raise ShapeError(
            f"{what} has {values} values per sample (shape {tuple(X.shape)}), but the "
            f"first layer expects {in_features}; reshape the data or build the model with "
            f"Dense({values}, ...)"
        )
    if xp.isdtype(X.dtype, "bool") or xp.isdtype(X.dtype, "integral"):
        return xp.astype(X, getattr(xp, dtype))
    if not xp.isdtype(X.dtype, "real floating"):
        raise DataError(f"{what} must hold real numbers, got dtype {X.dtype}")
    if X.dtype != getattr(xp, dtype):
        X = xp.astype(X, getattr(xp, dtype))
    # One pass, no copy of the data: a NaN or ±inf anywhere makes the sum NaN or ±inf.
    # Finite values whose sum overflows are told apart by the exact count.
    if not math.isfinite(float(xp.sum(X))):
        bad = int(xp.count_nonzero(~xp.isfinite(X)))
        if bad:
            raise DataError(
                f"{what} contains {bad} NaN or infinite value(s); clean or impute them "
                "before training (e.g. replace with the column mean)"
            )
    return X


def prepare_targets(y: Any, samples: int, task: str, num_classes: int | None, dtype: str,
                    what: str = "y") -> Any:
    """Targets checked against the task: integer labels in ``[0, num_classes)`` (or
    one-hot rows) for multiclass, floats of the right length otherwise."""
    y = as_checked_array(y, what)
    xp = namespace(y)
    if y.ndim == 0 or y.shape[0] != samples:
        raise ShapeError(
            f"X has {samples} samples but {what} has shape {tuple(y.shape)}; they must have "
            "the same length (one target per sample)"
        )
    if task == "multiclass" and y.ndim == 1:
        return _class_labels(xp, y, num_classes, what)
    if task == "multiclass" and (y.ndim != 2 or (num_classes is not None
                                                 and y.shape[1] != num_classes)):
        raise ShapeError(
            f"{what} has shape {tuple(y.shape)}; class targets must be integer labels of "
            f"shape ({samples},) or one-hot rows of shape ({samples}, {num_classes}), one "
            "column per output of the last layer"
        )
    if not (xp.isdtype(y.dtype, "real floating") or xp.isdtype(y.dtype, "integral")
            or xp.isdtype(y.dtype, "bool")):
        raise DataError(f"{what} must hold real numbers, got dtype {y.dtype}")
    y = xp.astype(y, getattr(xp, dtype)) if y.dtype != getattr(xp, dtype) else y
    if not bool(xp.all(xp.isfinite(y))):
        raise DataError(
            f"{what} contains NaN or infinite values; clean or drop those samples first"
        )
    if task == "multiclass":
        _check_target_rows(xp, y, what)
    if task == "binary":
        low, high = float(xp.min(y)), float(xp.max(y))
        if low < 0.0 or high > 1.0:
            raise DataError(
                f"binary targets in {what} must be in [0, 1] (0/1 labels or probabilities), "
                f"but they range from {low:g} to {high:g}; map the two classes to 0 and 1"
            )
    return y


def _check_target_rows(xp: Any, y: Any, what: str) -> None:
    """Class target rows must be >= 0: one-hot rows, probabilities, or rows that weigh
    their sample (a row summing to s counts its sample s times in the loss, a zero row
    leaves it out, as the categorical losses document). A negative entry would reward
    the network for a low probability, and the loss could fall below 0 without end."""
    low = float(xp.min(y))
    if low < 0.0:
        raise DataError(
            f"class target rows in {what} must be >= 0, but their smallest entry is "
            f"{low:g}; give one-hot rows (np.eye(classes)[labels]), probability rows, or "
            "integer labels (rows may weigh their sample: a zero row leaves it out)"
        )


def _class_labels(xp: Any, y: Any, num_classes: int | None, what: str) -> Any:
    """Integer class labels as int64, checked to be whole numbers in [0, num_classes)."""
    if not xp.isdtype(y.dtype, "integral") and (
        not xp.isdtype(y.dtype, "real floating")
        or not bool(xp.all(xp.isfinite(y) & (y == xp.round(y))))
    ):
        raise DataError(
            f"class labels in {what} must be integers 0..{(num_classes or 1) - 1}, "
            f"got dtype {y.dtype} with values that are not whole numbers; convert them "
            "(e.g. y.astype(int))"
        )
    y = xp.astype(y, xp.int64)
    low, high = int(xp.min(y)), int(xp.max(y))
    if num_classes is not None and (low < 0 or high >= num_classes):
        raise DataError(
            f"class labels in {what} range from {low} to {high}, but the network has "
            f"{num_classes} outputs, so labels must be in 0..{num_classes - 1}; check "
            "the labels or the size of the last Dense layer"
        )
    return y


def check_batch_size(batch_size: int | None, samples: int) -> int:
    """The batch size to use: ``None`` means the whole dataset (batch gradient descent)."""
    if batch_size is None:
        return samples
    try:  # int and NumPy integers; not floats, strings or bools
        size = None if isinstance(batch_size, bool) else operator.index(batch_size)
    except TypeError:
        size = None
    if size is None or size <= 0:
        raise ConfigError(
            f"batch_size must be a positive integer (or None for the whole dataset), "
            f"got {batch_size!r}"
        )
    return min(size, samples)


def train_validation_split(X: Any, y: Any, fraction: float,
                           seed: int | None = None) -> tuple[Any, Any, Any, Any]:
    """Hold out a random ``fraction`` of the samples for validation (host-seeded shuffle)."""
    is_number = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
    if not (is_number and 0.0 < fraction < 1.0):
        raise ConfigError(f"validation_split must be in (0, 1), got {fraction!r}")
    samples = X.shape[0]
    held_out = int(round(samples * fraction))
    if held_out == 0 or held_out == samples:
        raise DataError(
            f"validation_split={fraction} of {samples} samples leaves an empty train or "
            "validation set"
        )
    rng = random.make_generator(seed, "shuffle") if seed is not None else None
    xp = namespace(X)  # the index lives with X, whatever the active backend
    order = xp.asarray(random.permutation(samples, rng), device=X.device)
    train, validation = order[held_out:], order[:held_out]
    return (xp.take(X, train, axis=0), xp.take(y, train, axis=0),
            xp.take(X, validation, axis=0), xp.take(y, validation, axis=0))


def forward_input(x: Any, model: Any) -> Any:
    """``x`` made ready for ``model.forward``, when it is not an array of the type of the
    model's θ (``forward`` checks that itself: one type comparison per step).

    Host data, a nested list or a NumPy array, is checked and moved to the model's
    backend as ``predict`` does. An array of another library than the model's parameters
    raises ``BackendError``: the arithmetic would fail deep inside a layer, or run on
    the wrong library. (An array of the model's own library never comes here: a PyTorch
    tensor that requires grad, given straight to ``forward``, is the caller's to detach;
    ``fit``, ``evaluate`` and ``predict`` detach it.)
    """
    where = parameters_placement(model.layers)  # None for a model without parameters
    model_library = get_backend().name if where is None else where[0]
    library = library_of(x)
    if library == model_library:  # e.g. a subclass of the library's array type
        return x
    if library not in (None, "numpy"):
        raise BackendError(
            f"x is a {library} array, but the model's parameters are {model_library} "
            f"arrays; pass x as a {model_library} array, or as host data (a list or a "
            "NumPy array), which forward moves over as predict does"
        )
    if where is not None:
        check_model(model, "forward")  # host data goes to the active backend: the model's
    return prepare_features(x, model.in_features, model.dtype, what="x",
                            images=model.takes_images)


class _Scaler:
    """Shared shape of the scalers: ``fit`` on training data, then ``transform``."""

    def __init__(self) -> None:
        self.center: Any = None
        self.scale: Any = None

    def fit(self, X: Any) -> _Scaler:
        X = as_checked_array(X, "X")
        if X.ndim != 2 or X.shape[0] == 0:
            raise ShapeError(f"a scaler is fitted on 2-D, non-empty data; got {tuple(X.shape)}")
        xp = namespace(X)
        if not xp.isdtype(X.dtype, "real floating"):
            X = xp.astype(X, xp.float32)
        self.center, spread = self._statistics(xp, X)
        # A constant feature has no spread: leave it centred rather than divide by 0.
        self.scale = xp.where(spread > 0, spread, xp.ones_like(spread))
        return self

    def transform(self, X: Any) -> Any:
        if self.center is None:
            raise ConfigError(f"{type(self).__name__} is not fitted: call fit(X_train) first")
        X = as_checked_array(X, "X")
        xp = namespace(X)
        if not xp.isdtype(X.dtype, "real floating"):
            X = xp.astype(X, self.center.dtype)
        return (X - self.center) / self.scale

    def fit_transform(self, X: Any) -> Any:
        return self.fit(X).transform(X)

    def inverse_transform(self, X: Any) -> Any:
        return X * self.scale + self.center

    def _statistics(self, xp: Any, X: Any) -> tuple[Any, Any]:
        raise NotImplementedError


class MinMaxScaler(_Scaler):
    """x' = (x − min) / (max − min), per feature: training data lands in [0, 1]."""

    def _statistics(self, xp: Any, X: Any) -> tuple[Any, Any]:
        low = xp.min(X, axis=0)
        return low, xp.max(X, axis=0) - low


class StandardScaler(_Scaler):
    """x' = (x − μ) / σ, per feature (z-score; σ the population standard deviation)."""

    def _statistics(self, xp: Any, X: Any) -> tuple[Any, Any]:
        return xp.mean(X, axis=0), xp.std(X, axis=0)


class MeanNormalizer(_Scaler):
    """x' = (x − μ) / (max − min), per feature (the notes' mean normalization)."""

    def _statistics(self, xp: Any, X: Any) -> tuple[Any, Any]:
        return xp.mean(X, axis=0), xp.max(X, axis=0) - xp.min(X, axis=0)
