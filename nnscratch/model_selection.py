"""Cross-validation: how well a model generalizes, measured on every part of the data.

k-fold cross-validation splits the n samples into k folds F₁ … F_k of (nearly) equal size
and trains k models, model i on every fold but F_i and scored on F_i alone, so each
sample is validated exactly once, by a model that never trained on it:

    score_i = metric(model_i trained on ∪_{j≠i} F_j,  evaluated on F_i)
    mean    = (1/k) Σ_i score_i,     std = √((1/k) Σ_i (score_i − mean)²)

For class labels the folds are *stratified*: each class's samples, shuffled, are dealt
to the folds in turn, so every fold holds ⌊n_c/k⌋ or ⌈n_c/k⌉ samples of class c, the
class proportions of the whole set. The shuffles come from the seeded host stream
(``nn.seed``, or ``seed=``), so a seed gives the same folds on every backend.
"""

from __future__ import annotations

import copy
import math
import operator
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import random
from .backend import check_array, namespace, to_numpy
from .errors import ConfigError, DataError
from .losses import Loss
from .optim import Optimizer


@dataclass
class CrossValidation:
    """What ``cross_validate`` returns: ``folds[i]`` the metrics of fold i's model on
    fold i (``{"loss": ..., "accuracy": ...}`` and any ``metrics`` asked for), and per
    metric their ``mean`` and (population) standard deviation ``std`` over the folds."""

    folds: list[dict[str, float]]
    mean: dict[str, float]
    std: dict[str, float]
    models: list[Any] = field(default_factory=list, repr=False)

    def __str__(self) -> str:
        return ", ".join(f"{name} {self.mean[name]:.4f} ± {self.std[name]:.4f}"
                         for name in self.mean) + f" over {len(self.folds)} folds"


def fold_indices(y: Any, folds: int, *, stratify: bool | None = None,
                 seed: int | None = None) -> list[tuple[list[int], list[int]]]:
    """``[(train rows, validation rows)]`` of ``folds``-fold cross-validation of the
    targets ``y``, each list sorted. The validation rows of the folds partition
    ``range(n)``; a fold's training rows are all the others.

    ``stratify``: deal each class's rows to the folds in turn (default: when ``y`` is
    one integer (or boolean) label per sample). ``seed`` fixes the shuffle (default: the
    ``nn.seed`` shuffle stream)."""
    labels = to_numpy(check_array(y, "y"))
    samples = int(labels.shape[0]) if labels.ndim else 0
    if isinstance(folds, bool) or not hasattr(folds, "__index__") or folds < 2:
        raise ConfigError(f"folds must be an integer >= 2 (or a splitter with split(X, y)), "
                          f"got {folds!r}")
    folds = operator.index(folds)
    if folds > samples:
        raise DataError(f"cannot split {samples} samples into {folds} folds: each fold "
                        "needs at least one sample; use fewer folds")
    is_labels = labels.ndim == 1 and labels.dtype.kind in "biu"
    if stratify is None:
        stratify = is_labels
    elif stratify and not is_labels:
        raise DataError("stratify=True needs one integer class label per sample; got "
                        f"targets of shape {tuple(labels.shape)}, dtype {labels.dtype}")
    rng = random.make_generator(seed, "shuffle") if seed is not None else None
    order = random.permutation(samples, rng).tolist()
    if stratify:  # the shuffled rows grouped by class, then dealt out in turn
        values = labels.tolist()
        order.sort(key=lambda row: values[row])  # stable: shuffled within each class
    assignment = [0] * samples
    for position, row in enumerate(order):
        assignment[row] = position % folds
    split = []
    for fold in range(folds):
        validation = [row for row in range(samples) if assignment[row] == fold]
        train = [row for row in range(samples) if assignment[row] != fold]
        split.append((train, validation))
    return split


def _splits(splitter: Any, X: Any, y: Any) -> list[tuple[list[int], list[int]]]:
    """The (train, validation) rows of an object with scikit-learn's ``split(X, y)``,
    checked: integer rows in range, and no validation row among the training rows."""
    samples = X.shape[0]
    result = []
    for number, pair in enumerate(splitter.split(to_numpy(X), to_numpy(y))):
        train, validation = ([int(row) for row in to_numpy(part).tolist()] for part in pair)
        if not validation or not train:
            raise DataError(f"fold {number} of {splitter!r} has an empty training or "
                            "validation set")
        if min(train + validation) < 0 or max(train + validation) >= samples:
            raise DataError(f"fold {number} of {splitter!r} names rows outside 0 .. "
                            f"{samples - 1}")
        if set(train) & set(validation):
            raise DataError(f"fold {number} of {splitter!r} trains on some of its own "
                            "validation rows; its scores would not measure generalization")
        result.append((train, validation))
    if not result:
        raise ConfigError(f"{splitter!r} made no folds")
    return result


def cross_validate(
    build: Callable[[], Any],
    X: Any,
    y: Any,
    folds: int | Any = 5,
    *,
    seed: int | None = None,
    stratify: bool | None = None,
    loss: Loss | None = None,
    optimizer: Optimizer | None = None,
    metrics: dict[str, Callable[[Any, Any, Any], float]] | None = None,
    return_models: bool = False,
    **fit_arguments: Any,
) -> CrossValidation:
    """k-fold cross-validation of the models ``build()`` makes (see the module's notes).

    ``build()`` is called once per fold for a fresh model, and returns either the model
    or ``(model, loss, optimizer)``; with the model alone, pass ``loss=`` and
    ``optimizer=`` here (each fold then trains with its own copy of that optimizer, so
    no state passes from one fold to the next). Every other keyword argument goes to
    ``model.fit`` unchanged (``epochs``, ``batch_size``, ``callbacks``, ...).

    ``folds``: the number k, or any object with scikit-learn's ``split(X, y)`` (e.g.
    ``sklearn.model_selection.KFold``), whose folds are checked never to validate on a
    training row. ``seed`` fixes the folds (default: the ``nn.seed`` shuffle stream);
    ``stratify`` as in ``fold_indices``. ``metrics``: extra scores, ``{name:
    f(model, X_val, y_val) -> float}``, beside ``model.evaluate``'s loss and accuracy.

        >>> result = nn.cross_validate(lambda: nn.mlp([64, 32, 10]), X, y, folds=5,
        ...                            loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(),
        ...                            epochs=20, batch_size=64)
        >>> result.mean["accuracy"], result.std["accuracy"], result.folds
    """
    if not callable(build):
        raise ConfigError(f"build must be a function returning a fresh model, got {build!r}")
    X, y = check_array(X, "X"), check_array(y, "y")
    if X.shape[0] != y.shape[0]:
        raise DataError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
    if hasattr(folds, "split"):
        splits = _splits(folds, X, y)
    else:
        splits = fold_indices(y, folds, stratify=stratify, seed=seed)
    xp = namespace(X)
    scores, models = [], []
    for train, validation in splits:
        model, fold_loss, fold_optimizer = _fresh(build, loss, optimizer)
        train_rows = xp.asarray(train, device=X.device)
        validation_rows = xp.asarray(validation, device=X.device)
        X_val, y_val = xp.take(X, validation_rows, axis=0), xp.take(y, validation_rows, axis=0)
        arguments = dict(fit_arguments, loss=fold_loss, optimizer=fold_optimizer)
        model.fit(xp.take(X, train_rows, axis=0), xp.take(y, train_rows, axis=0), **arguments)
        fold_scores = dict(model.evaluate(X_val, y_val, loss=fold_loss))
        for name, metric in (metrics or {}).items():
            fold_scores[name] = float(metric(model, X_val, y_val))
        scores.append(fold_scores)
        if return_models:
            models.append(model)
    names = list(scores[0])
    return CrossValidation(
        folds=scores,
        mean={name: statistics.fmean(fold[name] for fold in scores) for name in names},
        std={name: math.sqrt(statistics.pvariance([fold[name] for fold in scores]))
             for name in names},
        models=models,
    )


def _fresh(build: Callable[[], Any], loss: Loss | None,
           optimizer: Optimizer | None) -> tuple[Any, Loss, Optimizer]:
    """A fold's model, loss and optimizer: from ``build()``, or its model with copies of
    ``loss`` and ``optimizer`` (a fold must not start from another fold's state)."""
    made = build()
    if isinstance(made, tuple):
        if len(made) != 3:
            raise ConfigError("build() must return a model or (model, loss, optimizer), got "
                              f"a tuple of {len(made)}")
        if loss is not None or optimizer is not None:
            raise ConfigError("build() returns the loss and optimizer: do not also pass "
                              "loss= or optimizer= to cross_validate")
        return made
    if not isinstance(loss, Loss) or not isinstance(optimizer, Optimizer):
        raise ConfigError("build() returned only a model: pass loss= and optimizer= to "
                          "cross_validate (e.g. loss=nn.SoftmaxCrossEntropy(), "
                          "optimizer=nn.Adam()), or have build() return (model, loss, "
                          "optimizer)")
    return made, copy.deepcopy(loss), copy.deepcopy(optimizer)
