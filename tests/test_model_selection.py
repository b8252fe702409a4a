"""nn.cross_validate and its folds: stratified, seeded, never validating on a training
row, a fresh model per fold, scores with their mean and standard deviation."""

from __future__ import annotations

import numpy as np
import pytest

import nnscratch as nn
from nnscratch.model_selection import fold_indices


def _blobs(samples: int = 90, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian blobs, classes unbalanced (1 : 2 : 3 ...)."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, classes + 1) / np.arange(1, classes + 1).sum()
    y = np.repeat(np.arange(classes), np.round(weights * samples).astype(int))
    centres = rng.normal(scale=4.0, size=(classes, 4))
    X = (centres[y] + rng.normal(size=(y.size, 4))).astype(np.float32)
    return X, y


def test_stratified_folds_partition_the_rows_and_keep_the_class_proportions():
    _, y = _blobs(90)  # 15, 30, 45 samples of classes 0, 1, 2
    folds = fold_indices(y, 4, seed=1)
    validated = sorted(row for _, validation in folds for row in validation)
    assert validated == list(range(90))  # every sample validated exactly once
    for train, validation in folds:
        assert sorted(train + validation) == list(range(90)) and not set(train) & set(validation)
        counts = np.bincount(y[validation], minlength=3)
        assert all(np.floor(n / 4) <= c <= np.ceil(n / 4) for n, c in zip((15, 30, 45), counts))
    assert fold_indices(y, 4, seed=1) == folds
    assert fold_indices(y, 4, seed=2) != folds
    nn.seed(7)
    from_stream = fold_indices(y, 4)
    nn.seed(7)
    assert fold_indices(y, 4) == from_stream


def test_unstratified_folds_for_regression_targets_are_balanced_and_shuffled():
    y = np.linspace(0.0, 1.0, 23)
    folds = fold_indices(y, 5, seed=0)
    assert sorted(len(validation) for _, validation in folds) == [4, 4, 5, 5, 5]
    assert folds[0][1] != list(range(5))  # shuffled, not the first rows
    with pytest.raises(nn.DataError, match="stratify=True needs one integer class label"):
        fold_indices(y, 5, stratify=True)
    with pytest.raises(nn.DataError, match="into 30 folds"):
        fold_indices(y, 30)
    with pytest.raises(nn.ConfigError, match="folds must be an integer >= 2"):
        fold_indices(y, 1)


class _Recording(nn.Sequential):
    """A Sequential that remembers the rows (column 0 holds the row number) it trained on."""

    seen: list[list[int]] = []

    def fit(self, X, y, **arguments):
        _Recording.seen.append(sorted(int(v) for v in nn.to_numpy(X)[:, 0]))
        return super().fit(X, y, **arguments)


def test_each_fold_trains_a_fresh_model_that_never_sees_its_validation_rows():
    X, y = _blobs(60)
    X = np.concatenate([np.arange(60, dtype=np.float32)[:, None], X], axis=1)
    _Recording.seen = []
    built = []

    def build():
        built.append(_Recording(nn.Dense(5, 3)))
        return built[-1]

    validated = []
    optimizer = nn.SGD(lr=0.01)
    result = nn.cross_validate(
        build, X, y, folds=3, seed=0, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer,
        epochs=1, return_models=True,
        metrics={"rows": lambda model, X_val, y_val: validated.append(
            sorted(int(v) for v in nn.to_numpy(X_val)[:, 0])) or len(validated)})
    assert len(built) == 3 and len({id(model) for model in built}) == 3
    assert result.models == built
    for trained, rows in zip(_Recording.seen, validated):
        assert not set(trained) & set(rows) and len(trained) + len(rows) == 60
    assert sorted(row for rows in validated for row in rows) == list(range(60))
    assert optimizer.t == 0  # each fold stepped its own copy


def test_cross_validation_scores_a_model_that_learns_with_mean_and_std():
    X, y = _blobs(120)

    def build():
        return (nn.mlp([4, 16, 3]), nn.SoftmaxCrossEntropy(), nn.Adam(lr=0.02))

    result = nn.cross_validate(build, X, y, folds=4, seed=0, epochs=30, batch_size=16)
    accuracies = [fold["accuracy"] for fold in result.folds]
    assert len(accuracies) == 4 and np.mean(accuracies) >= 0.9  # majority class: 0.5
    assert result.mean["accuracy"] == pytest.approx(np.mean(accuracies))
    assert result.std["accuracy"] == pytest.approx(np.std(accuracies))
    assert result.mean["loss"] == pytest.approx(np.mean([f["loss"] for f in result.folds]))
    assert "accuracy" in str(result) and "over 4 folds" in str(result)
    # the same seed, the same folds, the same run
    nn.seed(0)
    again = nn.cross_validate(build, X, y, folds=4, seed=0, epochs=30, batch_size=16)
    nn.seed(0)
    first = nn.cross_validate(build, X, y, folds=4, seed=0, epochs=30, batch_size=16)
    assert again.folds == first.folds


def test_folds_may_come_from_a_scikit_learn_splitter():
    model_selection = pytest.importorskip("sklearn.model_selection")
    X, y = _blobs(30)
    X = np.concatenate([np.arange(30, dtype=np.float32)[:, None], X], axis=1)
    validated = []

    def rows(model, X_val, y_val):
        validated.append(sorted(int(v) for v in nn.to_numpy(X_val)[:, 0]))
        return 0.0

    splitter = model_selection.KFold(3)
    nn.cross_validate(lambda: nn.Sequential(nn.Dense(5, 3)), X, y, folds=splitter,
                      loss=nn.SoftmaxCrossEntropy(), optimizer=nn.SGD(), metrics={"rows": rows})
    assert validated == [list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]

    class Leaky:
        def split(self, X, y):
            yield np.arange(30), np.arange(5)

    with pytest.raises(nn.DataError, match="trains on some of its own validation rows"):
        nn.cross_validate(lambda: nn.Sequential(nn.Dense(5, 3)), X, y, folds=Leaky(),
                          loss=nn.SoftmaxCrossEntropy(), optimizer=nn.SGD())


def test_a_build_without_loss_or_optimizer_is_refused_with_the_fix():
    X, y = _blobs(30)
    with pytest.raises(nn.ConfigError, match="pass loss= and optimizer="):
        nn.cross_validate(lambda: nn.Sequential(nn.Dense(4, 3)), X, y, folds=3)
    with pytest.raises(nn.ConfigError, match="do not also pass"):
        nn.cross_validate(lambda: (nn.Sequential(nn.Dense(4, 3)), nn.SoftmaxCrossEntropy(),
                                   nn.SGD()), X, y, folds=3, optimizer=nn.SGD())
