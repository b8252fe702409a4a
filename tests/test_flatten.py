"""Flatten, and models that take images: (N, H, W) or (N, C, H, W) batches reach Dense
layers through a first ``nn.Flatten()``."""

from __future__ import annotations

import numpy as np
import pytest

import nnscratch as nn


def test_flatten_forward_is_row_major_and_backward_restores_the_shape(backend):
    host = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    x = backend.asarray(host, dtype="float64")
    layer = nn.Flatten()
    out = layer.forward(x, training=True)
    assert tuple(out.shape) == (2, 60)
    np.testing.assert_array_equal(backend.to_numpy(out), host.reshape(2, 60))
    grad = layer.backward(out * 2.0)
    assert tuple(grad.shape) == (2, 3, 4, 5)
    np.testing.assert_array_equal(backend.to_numpy(grad), 2.0 * host)


def test_flatten_backward_before_forward_and_a_non_batch(backend):
    with pytest.raises(nn.StateError, match="Flatten.backward was called before"):
        nn.Flatten().backward(backend.asarray(np.zeros((2, 3)), dtype="float32"))
    with pytest.raises(nn.ShapeError, match="Flatten expects a batch"):
        nn.Flatten().forward(backend.asarray(np.zeros((3,)), dtype="float32"))


def test_a_model_with_flatten_trains_on_images_as_on_rows(backend):
    """The same seed, images through Flatten or rows straight in: the same weights."""
    rng = np.random.default_rng(0)
    images = rng.random((64, 6, 5))
    labels = (images.reshape(64, -1).sum(axis=1) > 15).astype(np.int64)
    weights = []
    for X, first in ((images, [nn.Flatten()]), (images.reshape(64, 30), [])):
        nn.seed(3)
        model = nn.Sequential(*first, nn.Dense(30, 8), nn.ReLU(), nn.Dense(8, 2))
        model.fit(X, labels, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.01),
                  epochs=2, batch_size=16, seed=1)
        weights.append(np.concatenate([backend.to_numpy(p.value).reshape(-1)
                                       for p in model.parameters()]))
        assert model.evaluate(X, labels)["accuracy"] > 0.5
        assert tuple(model.predict(X).shape) == (64, 2)
    np.testing.assert_allclose(weights[0], weights[1], rtol=1e-6, atol=1e-7)


def test_image_input_checks_name_the_fix(backend):
    nn.seed(0)
    rows_only = nn.Sequential(nn.Dense(30, 2))
    with pytest.raises(nn.ShapeError, match=r"start the model with nn.Flatten\(\)"):
        rows_only.predict(np.zeros((4, 6, 5)))
    flat = nn.Sequential(nn.Flatten(), nn.Dense(30, 2))
    assert flat.takes_images and flat.in_features == 30
    assert tuple(flat.predict(np.zeros((4, 1, 6, 5))).shape) == (4, 2)
    with pytest.raises(nn.ShapeError, match="has 36 values per sample"):
        flat.predict(np.zeros((4, 6, 6)))
    with pytest.raises(nn.ShapeError, match="samples, height, width"):
        flat.predict(np.zeros((4, 1, 1, 6, 5)))


def test_flatten_saves_and_loads(backend, tmp_path):
    nn.seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dense(12, 3))
    path = tmp_path / "flat.safetensors"
    nn.save(model, path)
    loaded = nn.load(path)
    assert isinstance(loaded.layers[0], nn.Flatten) and loaded.takes_images
    x = np.random.default_rng(1).random((5, 3, 4))
    np.testing.assert_allclose(backend.to_numpy(loaded.predict(x)),
                               backend.to_numpy(model.predict(x)), rtol=1e-6)
