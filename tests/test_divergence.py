"""A diverging loss stops training with DivergenceError naming the epoch and the step and
suggesting a lower learning rate; and watching for it costs one host sync per epoch,
not one per step (principle 4: the host waits on the device only when it must print)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import random as nn_random
from nnscratch.backend import Backend

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")


def ones(fan_in: int, fan_out: int) -> np.ndarray:
    """All-ones weights, so that an extreme input overflows predictably."""
    return np.ones((fan_in, fan_out))


class StepLosses(nn.Callback):
    """Keeps the current epoch's per-step losses (device arrays, read only afterwards)."""

    def __init__(self) -> None:
        self.losses: list[Any] = []

    def on_epoch_begin(self, epoch: int) -> None:
        self.losses = []

    def on_batch_end(self, step: int, loss: Any) -> None:
        self.losses.append(loss)


@pytest.mark.parametrize("kind", ["inf", "nan"])
def test_overflowing_sample_names_epoch_and_step(backend, kind):
    """One extreme sample, shuffled into the third batch of the first epoch: its loss
    overflows (MSE: the square is inf; softmax cross-entropy: inf − inf logits are NaN)."""
    samples, batch_size, seed = 16, 4, 0
    X = np.random.default_rng(0).uniform(-1, 1, size=(samples, 2))
    # fit's first shuffle, from the documented seeded stream: who lands in batch 3
    first_order = nn_random.permutation(samples, nn_random.make_generator(seed, "shuffle"))
    extreme = first_order[2 * batch_size]
    if kind == "inf":
        X[extreme] = 1e20  # output 2e20, squared 4e40 > float32 max
        model = nn.Sequential(nn.Dense(2, 1, init=ones))
        y, loss = np.zeros(samples), nn.MeanSquaredError()
    else:
        X[extreme] = 3e38  # every logit 6e38 = inf, and inf − max = NaN
        model = nn.Sequential(nn.Dense(2, 3, init=ones))
        y, loss = np.arange(samples) % 3, nn.SoftmaxCrossEntropy()
    history = nn.History()
    with pytest.raises(nn.DivergenceError) as caught:
        model.fit(X, y, loss=loss, optimizer=nn.SGD(lr=0.01), epochs=3,
                  batch_size=batch_size, seed=seed, callbacks=[history])
    message = str(caught.value)
    assert f"the loss became {kind} at epoch 1, step 3" in message
    assert "Lower the learning rate (it is 0.01)" in message
    assert history.epochs == []  # stopped inside the first epoch


def test_huge_learning_rate_names_the_first_bad_epoch_and_step(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    model = nn.Sequential(nn.Dense(3, 1))
    history, steps = nn.History(), StepLosses()
    with pytest.raises(nn.DivergenceError) as caught:
        model.fit(X, y, loss=nn.MeanSquaredError(), optimizer=nn.SGD(lr=3.0), epochs=100,
                  batch_size=8, seed=0, callbacks=[history, steps])
    completed = len(history.epochs)
    assert completed >= 1  # it grew for a while before overflowing
    assert np.all(np.isfinite(history["loss"]))
    step_values = [float(backend.to_numpy(value)) for value in steps.losses]
    first_bad = next(index for index, value in enumerate(step_values)
                     if not np.isfinite(value))
    message = str(caught.value)
    assert f"at epoch {completed + 1}, step {first_bad + 1}:" in message
    assert "Lower the learning rate (it is 3)" in message
    assert isinstance(caught.value, RuntimeError)


@pytest.mark.parametrize("loss", [nn.MeanSquaredError(), nn.SoftmaxCrossEntropy()],
                         ids=["regression", "classification"])
def test_divergence_check_syncs_once_per_epoch_not_per_step(monkeypatch, loss):
    """Count the host transfers of fit's epoch logs: the same for 2 and for 16 steps per
    epoch, and at most one per epoch."""
    epochs, samples = 3, 64
    rng = np.random.default_rng(0)
    X = rng.normal(size=(samples, 3))
    y = np.arange(samples) % 2 if loss.task == "multiclass" else X @ np.array([1.0, 2.0, 3.0])
    calls = []
    original = Backend.scalars_to_numpy

    def counting_transfers(self: Backend, *groups: list[Any]) -> list[np.ndarray]:
        calls.append(1)
        return original(self, *groups)

    monkeypatch.setattr(Backend, "scalars_to_numpy", counting_transfers)
    counts = {}
    for batch_size in (32, 4):  # 2 and 16 steps per epoch
        calls.clear()
        model = nn.Sequential(nn.Dense(3, 2 if loss.task == "multiclass" else 1))
        history = model.fit(X, y, loss=loss, optimizer=nn.SGD(lr=0.01), epochs=epochs,
                            batch_size=batch_size, seed=0)
        assert len(history.epochs) == epochs
        counts[samples // batch_size] = len(calls)
    assert counts[16] == counts[2], f"host syncs grow with the steps per epoch: {counts}"
    assert counts[16] >= 1, "fit no longer reads its losses through " \
        "Backend.scalars_to_numpy: update this test to count whatever transfer replaced it"
    assert counts[16] <= epochs, f"{counts[16]} host syncs for {epochs} epochs"
