"""The digit app with convolutional networks: it reads digits with a CNN, shows its
filters as the first-layer picture, and trains one (``"model": "cnn"``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the app needs fastapi")

import nnscratch as nn  # noqa: E402
from nnscratch.app.core import (  # noqa: E402
    DigitReader,
    RequestError,
    Trainer,
    architecture,
    parse_train_settings,
    weight_snapshot,
)
from nnscratch.datasets import Dataset  # noqa: E402


def test_a_cnn_reads_a_digit_and_shows_its_filters(backend, tmp_path):
    nn.seed(0)
    model = nn.cnn()
    nn.save(model, tmp_path / "cnn.safetensors")
    reader = DigitReader(nn.load(tmp_path / "cnn.safetensors"), "a CNN")
    picture = np.zeros((100, 80), dtype=np.int64)
    picture[15:85, 35:47] = 255
    answer = reader.read(picture)
    assert 0 <= answer["digit"] <= 9 and abs(sum(answer["probabilities"]) - 1.0) < 1e-6
    assert np.asarray(answer["input"]).shape == (28, 28)
    assert reader.describe()["architecture"] == "28x28-conv16-conv32-128-10"
    assert architecture(nn.mlp([784, 32, 10])) == "784-32-10"
    snapshot = weight_snapshot(model)
    assert (snapshot["count"], snapshot["side"]) == (16, 5)
    import base64

    levels = np.frombuffer(base64.b64decode(snapshot["data"]), dtype=np.uint8)
    filters = nn.to_numpy(model.layers[0].weight.value)[:, 0].reshape(16, 25)
    assert levels.size == 16 * 25
    # each tile is its filter, scaled so that its largest |w| reaches 0 or 255
    expected = np.round(127.5 + 127.5 * filters / np.abs(filters).max(axis=1, keepdims=True))
    np.testing.assert_array_equal(levels.reshape(16, 25), expected.astype(np.uint8))


def test_the_train_settings_take_the_model_kind():
    assert parse_train_settings({"model": "cnn"}).model == "cnn"
    assert parse_train_settings({}).model == "mlp"
    with pytest.raises(RequestError, match='"model" must be "mlp" or "cnn"'):
        parse_train_settings({"model": "resnet"})


def test_the_app_trains_a_cnn(backend):
    rng = np.random.default_rng(0)

    def split(count):
        x = rng.random((count, 784), dtype=np.float32) * 0.2
        y = rng.integers(0, 10, count)
        for row, label in enumerate(y):
            x[row, label * 78:(label + 1) * 78] += 0.6
        return x, y.astype(np.int64)

    data = Dataset(*split(300), *split(100), name="tiny", source="made by the test")
    trained, done = [], threading.Event()
    trainer = Trainer(lambda: data, lambda model, source, *rest: (
        trained.append((model, source)), done.set()))
    run = trainer.start(parse_train_settings({"model": "cnn", "epochs": 1, "batch_size": 50}))
    assert done.wait(timeout=300), run.events_from(0)
    events = [event for _, event in run.events_from(0)]
    assert events[-1]["kind"] == "done", events[-1]
    start = next(event for event in events if event["kind"] == "start")
    assert start["architecture"] == "28x28-conv16-conv32-128-10"
    assert start["weights"]["side"] == 5
    model, source = trained[0]
    assert isinstance(model.layers[0], nn.Conv2D) and "conv16" in source
