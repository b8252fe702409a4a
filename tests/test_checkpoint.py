"""Checkpoints of a training run (nnscratch.checkpoint) and fit(initial_epoch=...): a run
stopped at any point and resumed ends with exactly the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import io
from nnscratch.checkpoint import EPOCH_KEY, HISTORY_KEY, RANDOM_KEY, SETTINGS_KEY
from nnscratch.errors import CheckpointError, ConfigError

EPOCHS = 4


def data(samples: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(samples, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 1).astype(np.int64)
    return X, y


def network() -> nn.Sequential:
    nn.seed(0)
    return nn.Sequential(nn.Dense(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Dense(16, 3))


def train(model, optimizer, path, *, initial_epoch=0, checkpoint=None, callbacks=()):
    X, y = data()
    checkpoint = checkpoint or nn.Checkpoint(path, settings={"hidden": [16]})
    return model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer,
                     epochs=EPOCHS, batch_size=16, seed=3, schedule=nn.StepDecay(2, 0.5),
                     initial_epoch=initial_epoch, callbacks=[checkpoint, *callbacks])


class StopAt(nn.Callback):
    """Ctrl-C in the middle of epoch ``epoch`` (after ``step`` steps)."""

    def __init__(self, epoch: int, step: int = 2) -> None:
        self.epoch, self.step = epoch, step

    def on_epoch_begin(self, epoch: int) -> None:
        self.current = epoch

    def on_batch_end(self, step: int, loss) -> None:
        if self.current == self.epoch and step == self.step:
            raise KeyboardInterrupt


def weights(model) -> list[np.ndarray]:
    return [nn.to_numpy(p.value).copy() for p in model.parameters()]


@pytest.mark.parametrize("stop_epoch", [0, 2, 3])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, stop_epoch):
    whole = network()
    history = train(whole, nn.Adam(lr=0.01), tmp_path / "whole.safetensors")

    path = tmp_path / "run.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train(network(), nn.Adam(lr=0.01), path, callbacks=[StopAt(stop_epoch)])
    if stop_epoch == 0:  # stopped before the first epoch ended: nothing to resume
        assert not path.exists()
        return
    nn.seed(99)  # the resumed process starts with other random streams
    run = nn.resume(path)
    assert run.epoch == stop_epoch and run.settings == {"hidden": [16]}
    assert run.optimizer.t == stop_epoch * 6  # 96 samples in batches of 16
    checkpoint = nn.Checkpoint(path, settings=run.settings).resumed_from(run)
    train(run.model, run.optimizer, path, initial_epoch=run.epoch, checkpoint=checkpoint)

    for resumed, expected in zip(weights(run.model), weights(whole)):
        np.testing.assert_array_equal(resumed, expected)  # bit for bit
    assert checkpoint.history == history.history
    assert nn.resume(path).epoch == EPOCHS


def test_resuming_without_the_random_streams_would_differ(tmp_path):
    """The test above can fail: without the dropout stream's position, the resumed
    masks differ and so do the weights."""
    whole = network()
    train(whole, nn.Adam(lr=0.01), tmp_path / "whole.safetensors")
    path = tmp_path / "run.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train(network(), nn.Adam(lr=0.01), path, callbacks=[StopAt(2)])
    run = nn.resume(path)
    nn.seed(0)  # forget the saved streams
    train(run.model, run.optimizer, path, initial_epoch=run.epoch)
    assert any(np.abs(a - b).max() > 1e-6 for a, b in zip(weights(run.model), weights(whole)))


def test_resume_reads_the_file_once(tmp_path, monkeypatch):
    """The model, the optimizer, the run's metadata and settings come from one read of
    the file (it was read four times: metadata, settings, model, optimizer)."""
    path = tmp_path / "run.safetensors"
    train(network(), nn.Adam(lr=0.01), path)
    opened = []
    real_open = nn.io._open_regular_file
    monkeypatch.setattr(nn.io, "_open_regular_file",
                        lambda name: opened.append(name) or real_open(name))
    run = nn.resume(path)
    assert opened == [str(path)]
    assert run.epoch == EPOCHS and run.optimizer.t == EPOCHS * 6
    assert run.settings == {"hidden": [16]}


def test_a_checkpoint_is_written_at_every_epoch_end(tmp_path):
    path = tmp_path / "run.safetensors"
    seen = []

    class Look(nn.Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append(int(io.read_metadata(path)[EPOCH_KEY]))

    train(network(), nn.Adam(), path, callbacks=[Look()])
    assert seen == [1, 2, 3, 4]


def test_every_saves_less_often_but_always_at_the_end(tmp_path):
    path = tmp_path / "run.safetensors"
    seen = []

    class Look(nn.Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append(path.exists() and int(io.read_metadata(path)[EPOCH_KEY]))

    train(network(), nn.Adam(), path, checkpoint=nn.Checkpoint(path, every=3),
          callbacks=[Look()])
    assert seen == [False, False, 3, 4]


def test_ctrl_c_during_the_write_waits_for_the_file(tmp_path, monkeypatch):
    path = tmp_path / "run.safetensors"
    real_save = io.save
    calls = []

    def save_with_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the file is being written
        calls.append("saving")
        real_save(*args, **kwargs)
        calls.append("saved")

    monkeypatch.setattr(io, "save", save_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train(network(), nn.Adam(), path)
    assert calls == ["saving", "saved"]  # the interrupt came after the first write
    assert nn.resume(path).epoch == 1


def test_initial_epoch_is_checked(tmp_path):
    X, y = data()
    model = network()
    for bad in (-1, EPOCHS + 1, 1.5, True, "1"):
        with pytest.raises(ConfigError, match="initial_epoch"):
            model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.SGD(), epochs=EPOCHS,
                      initial_epoch=bad)
    before = weights(model)
    history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.SGD(),
                        epochs=EPOCHS, initial_epoch=EPOCHS)
    assert history.epochs == [] and all(
        np.array_equal(a, b) for a, b in zip(before, weights(model)))


def test_initial_epoch_replays_the_shuffles_of_the_epochs_done():
    X, y = data()
    orders = {}

    class Rows(nn.Layer):
        def forward(self, x, training=False):
            if training:
                orders.setdefault(self.epoch, []).append(nn.to_numpy(x[:, 0]).copy())
            return x

        def backward(self, grad_output, need_input_grad=True):
            return grad_output

    class Epoch(nn.Callback):
        def on_epoch_begin(self, epoch):
            rows.epoch = epoch

    rows = Rows()
    model = nn.Sequential(rows, nn.Dense(6, 3))
    fit = dict(loss=nn.SoftmaxCrossEntropy(), optimizer=nn.SGD(lr=0.0 + 1e-9), epochs=3,
               batch_size=16, seed=8, callbacks=[Epoch()])
    model.fit(X, y, **fit)
    whole = {epoch: np.concatenate(seen) for epoch, seen in orders.items()}
    orders.clear()
    model.fit(X, y, initial_epoch=2, **fit)
    assert list(orders) == [2]
    np.testing.assert_array_equal(np.concatenate(orders[2]), whole[2])
    assert not np.array_equal(whole[1], whole[2])


def write_run(path, **overrides) -> None:
    model = network()
    optimizer = nn.Adam()
    X, y = data()
    model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=1)
    metadata = {EPOCH_KEY: "1", HISTORY_KEY: json.dumps({"loss": [0.5]}),
                SETTINGS_KEY: "{}", RANDOM_KEY: json.dumps(nn.random.get_state())}
    metadata.update(overrides)
    io.save(model, path, optimizer=optimizer, metadata=metadata)


@pytest.mark.parametrize("key,value,message", [
    (EPOCH_KEY, "-5", "non-negative integer"),
    (EPOCH_KEY, "9" * 5000, "non-negative integer"),
    (EPOCH_KEY, "١", "non-negative integer"),  # a digit, but not an ASCII one
    (HISTORY_KEY, '{"loss": [0.5, 0.4]}', "at most 1 finite"),
    (HISTORY_KEY, '{"loss": ["a"]}', "at most 1 finite"),
    (HISTORY_KEY, '{"loss": [NaN]}', "at most 1 finite"),
    (HISTORY_KEY, "[" * 100000, "not valid JSON"),
    (SETTINGS_KEY, "[1, 2]", "not a JSON object"),
    (RANDOM_KEY, '{"seed": -1, "streams": {}}', "random state"),
    (RANDOM_KEY, '{"seed": 0, "streams": {"init": {"bit_generator": "MT19937"}}}',
     "random state"),
])
def test_a_checkpoint_with_edited_run_metadata_is_refused(tmp_path, key, value, message):
    path = tmp_path / "edited.safetensors"
    write_run(path, **{key: value})
    before = nn.random.get_state()
    with pytest.raises(CheckpointError, match=message):
        nn.resume(path)
    assert nn.random.get_state() == before  # nothing was changed on the way


def test_a_model_file_is_not_a_run(tmp_path):
    path = tmp_path / "model.safetensors"
    nn.save(network(), path)
    with pytest.raises(CheckpointError, match="not a checkpoint of a training run"):
        nn.resume(path)


def test_settings_must_be_json():
    with pytest.raises(ConfigError, match="JSON"):
        nn.Checkpoint("x.safetensors", settings={"f": object()})
    with pytest.raises(ConfigError, match="every"):
        nn.Checkpoint("x.safetensors", every=0)


def test_random_state_round_trip():
    nn.seed(4)
    nn.random.uniform((3,), 0, 1)
    state = nn.random.get_state()
    expected = nn.random.uniform((5,), 0, 1)
    nn.seed(0)
    nn.random.set_state(json.loads(json.dumps(state)))
    np.testing.assert_array_equal(nn.random.uniform((5,), 0, 1), expected)
