"""Conv2D, MaxPool2D and AvgPool2D against PyTorch (torch.nn.functional), in float64 on
the session's backend: the forward pass and every gradient, strides and paddings
included; ties in max pooling; a small CNN's gradients against finite differences; and a
CNN through the rest of the library (fit with every optimizer, save/load, summary)."""

from __future__ import annotations

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import conv


def f64(backend, array):
    return backend.asarray(np.asarray(array, dtype=np.float64), dtype="float64")


def host(backend, array):
    return np.asarray(backend.to_numpy(array))


CONVOLUTIONS = [  # (in, out, kernel, stride, padding, input (N, C, H, W))
    (2, 3, 3, 1, 0, (3, 2, 7, 6)),
    (2, 4, 3, 2, 1, (2, 2, 9, 8)),
    (1, 2, 5, 1, 2, (2, 1, 8, 8)),
    (3, 2, 2, 2, 0, (2, 3, 7, 7)),  # a row and a column left over
    (2, 2, 3, 1, "same", (2, 2, 5, 6)),
    (2, 3, 4, 1, "same", (1, 2, 6, 5)),  # even kernel: one more row below than above
    (2, 3, (3, 2), (2, 1), 1, (2, 2, 7, 6)),
    (1, 1, 1, 1, 0, (2, 1, 3, 3)),
]


@pytest.mark.parametrize("in_channels, out_channels, kernel, stride, padding, shape",
                         CONVOLUTIONS)
def test_conv2d_forward_and_gradients_equal_pytorch(backend, torch, in_channels, out_channels,
                                                   kernel, stride, padding, shape):
    rng = np.random.default_rng(1)
    layer = nn.Conv2D(in_channels, out_channels, kernel, stride=stride, padding=padding,
                      dtype="float64")
    layer.bias.value = f64(backend, rng.standard_normal(out_channels))
    x = rng.standard_normal(shape)
    y = layer.forward(f64(backend, x), training=True)
    g = rng.standard_normal(tuple(y.shape))
    grad_x = layer.backward(f64(backend, g))

    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(host(backend, layer.weight.value), requires_grad=True)
    tb = torch.tensor(host(backend, layer.bias.value), requires_grad=True)
    with pytest.warns(UserWarning) if padding == "same" and kernel == 4 else _NoWarning():
        ty = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)
    ty.backward(torch.tensor(g))
    assert tuple(y.shape) == tuple(ty.shape)
    for ours, theirs in [(y, ty), (grad_x, tx.grad), (layer.weight.grad, tw.grad),
                         (layer.bias.grad, tb.grad)]:
        np.testing.assert_allclose(host(backend, ours), theirs.detach().numpy(),
                                   rtol=1e-10, atol=1e-12)


class _NoWarning:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


POOLS = [  # (kernel, stride, input)
    (2, None, (2, 3, 8, 8)),
    (2, None, (2, 2, 7, 9)),  # the last row and column dropped
    (3, 2, (2, 2, 9, 8)),  # overlapping windows
    (3, 1, (1, 2, 6, 6)),
    ((2, 3), (1, 2), (2, 1, 7, 8)),
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("kernel, stride, shape", POOLS)
def test_pooling_forward_and_gradient_equal_pytorch(backend, torch, kind, kernel, stride, shape):
    rng = np.random.default_rng(2)
    layer = nn.MaxPool2D(kernel, stride) if kind == "max" else nn.AvgPool2D(kernel, stride)
    reference = getattr(torch.nn.functional, f"{kind}_pool2d")
    x = rng.standard_normal(shape)
    y = layer.forward(f64(backend, x), training=True)
    g = rng.standard_normal(tuple(y.shape))
    grad_x = layer.backward(f64(backend, g))
    tx = torch.tensor(x, requires_grad=True)
    ty = reference(tx, kernel, stride)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(host(backend, y), ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(host(backend, grad_x), tx.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("stride", [None, 1])
def test_max_pooling_gives_a_tied_window_gradient_once_to_its_first_maximum(
        backend, torch, stride):
    """Windows of equal values (and windows sharing a maximum): each window's gradient
    goes once, to the first maximum in row-major order, as PyTorch does."""
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 2:, 2:] = [[5.0, 5.0], [5.0, 1.0]]
    layer = nn.MaxPool2D(2, stride)
    y = layer.forward(f64(backend, x), training=True)
    g = np.arange(1.0, 1.0 + np.prod(tuple(y.shape))).reshape(tuple(y.shape))
    grad_x = host(backend, layer.backward(f64(backend, g)))
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(tx, 2, stride).backward(torch.tensor(g))
    np.testing.assert_array_equal(grad_x, tx.grad.numpy())
    assert grad_x.sum() == g.sum()  # every window's gradient placed exactly once
    if stride is None:  # 2×2 windows: each gives all of its gradient to its top-left pixel
        expected = np.zeros((4, 4))
        expected[0, 0], expected[0, 2], expected[2, 0], expected[2, 2] = 1.0, 2.0, 3.0, 4.0
        np.testing.assert_array_equal(grad_x[0, 0], expected)


def test_a_small_cnn_passes_gradcheck(backend):
    rng = np.random.default_rng(3)
    model = nn.Sequential(
        nn.Conv2D(2, 3, 3, padding=1, dtype="float64"), nn.Tanh(), nn.MaxPool2D(2),
        nn.Conv2D(3, 2, 2, stride=1, dtype="float64"), nn.Tanh(), nn.AvgPool2D(2, 1),
        nn.Flatten(), nn.Dense(2 * 1 * 1, 3, dtype="float64"))
    X = f64(backend, rng.standard_normal((4, 2, 6, 6)))
    y = backend.asarray(np.array([0, 2, 1, 2]))
    result = nn.gradcheck(model, X, y, nn.SoftmaxCrossEntropy(), check_input=True)
    assert result.max_relative_error < 1e-7, result.errors
    assert set(result.errors) >= {"0.weight", "0.bias", "3.weight", "3.bias", "input"}


def tiny_images(samples=64, seed=0):
    """Images whose class is the quadrant holding the bright square."""
    rng = np.random.default_rng(seed)
    X = rng.random((samples, 1, 8, 8)) * 0.2
    y = rng.integers(0, 4, samples)
    for index, label in enumerate(y):
        top, left = 4 * (label // 2), 4 * (label % 2)
        X[index, 0, top + 1:top + 3, left + 1:left + 3] += 1.0
    return X.astype(np.float32), y


def tiny_cnn():
    return nn.Sequential(nn.Conv2D(1, 4, 3, padding="same"), nn.ReLU(), nn.MaxPool2D(2),
                         nn.Flatten(), nn.Dense(4 * 4 * 4, 4))


@pytest.mark.parametrize("optimizer", [nn.SGD(lr=0.1, momentum=0.9), nn.RMSprop(lr=0.01),
                                       nn.Adam(lr=0.01), nn.AdamW(lr=0.01)],
                         ids=lambda o: type(o).__name__)
def test_a_cnn_learns_with_every_optimizer(backend, optimizer):
    X, y = tiny_images()
    nn.seed(0)
    model = tiny_cnn()
    assert model.takes_images and model.in_features is None
    before = model.evaluate(X, y, loss=nn.SoftmaxCrossEntropy())["loss"]
    model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=15,
              batch_size=16, seed=0)
    scores = model.evaluate(X, y)
    assert scores["loss"] < 0.5 * before and scores["accuracy"] > 0.9
    if nn.get_backend().name != "jax":  # JAX: immutable arrays, no views of one θ
        assert model.parameters().vector is not None  # the conv's weight and bias live in θ


def test_a_cnn_saves_loads_and_summarizes(backend, tmp_path):
    X, y = tiny_images(16)
    model = tiny_cnn()
    model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(), epochs=1,
              batch_size=8, seed=0)
    nn.save(model, tmp_path / "cnn.safetensors")
    loaded = nn.load(tmp_path / "cnn.safetensors")
    np.testing.assert_array_equal(host(backend, loaded.predict(X)),
                                  host(backend, model.predict(X)))
    assert loaded.config() == model.config()
    assert loaded.layers[0].weight.shape == (4, 1, 3, 3)  # PyTorch's layout
    summary = model.summary()
    assert "Conv2D(in_channels=1, out_channels=4" in summary and "MaxPool2D" in summary
    assert f"{4 * 9 + 4:>12,}" in summary.splitlines()[1]
    assert summary.splitlines()[-1].endswith(f"{model.parameter_count():,}")
    # one-channel images may come without their channel axis
    np.testing.assert_array_equal(host(backend, model.predict(X[:, 0])),
                                  host(backend, model.predict(X)))


def test_conv_layers_say_what_is_wrong(backend):
    with pytest.raises(nn.ConfigError, match="padding='same' needs stride 1"):
        nn.Conv2D(1, 2, 3, stride=2, padding="same")
    with pytest.raises(nn.ConfigError, match="padding must be"):
        nn.Conv2D(1, 2, 3, padding=-1)
    with pytest.raises(nn.ConfigError, match="kernel_size must be a positive integer"):
        nn.MaxPool2D(0)
    layer = nn.Conv2D(3, 2, 3)
    with pytest.raises(nn.ShapeError, match=r"expects a batch of images \(N, 3, H, W\)"):
        layer.forward(backend.asarray(np.zeros((2, 1, 5, 5)), dtype="float32"))
    with pytest.raises(nn.ShapeError, match="reshape them"):
        layer.forward(backend.asarray(np.zeros((2, 75)), dtype="float32"))
    with pytest.raises(nn.ShapeError, match="smaller than the kernel"):
        layer.forward(backend.asarray(np.zeros((2, 3, 2, 5)), dtype="float32"))
    with pytest.raises(nn.StateError, match="MaxPool2D.backward was called before"):
        nn.MaxPool2D(2).backward(backend.asarray(np.zeros((1, 1, 1, 1)), dtype="float32"))


def test_every_slice_accumulation_goes_through_one_helper():
    """The JAX backend swaps ``_add_into`` for a functional update: no other in-place
    slice write may hide in the module."""
    import ast
    import inspect

    writers = []
    for function in ast.walk(ast.parse(inspect.getsource(conv))):
        if isinstance(function, ast.FunctionDef):
            for node in ast.walk(function):
                targets = (node.targets if isinstance(node, ast.Assign) else [node.target]
                           if isinstance(node, ast.AugAssign) else [])
                if any(isinstance(target, ast.Subscript) for target in targets):
                    writers.append(function.name)
    assert writers == []  # every write is _add_into's call of backend.add_at
    assert "add_at(target, key, values)" in inspect.getsource(conv._add_into)


def test_a_cnn_step_is_counted_and_costs_one_slice_per_kernel_offset():
    """The op count (bench/opcount.py) works on a CNN's fit step: a first convolution of
    5×5 costs 25 − 9 = 16 more array operations per step than one of 3×3 on
    array-api-strict (one strided slice per kernel offset; its backward needs no input
    gradient, so no slice-adds), two on torch (a slice per axis)."""
    import importlib
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        opcount = importlib.import_module("opcount")
    finally:
        sys.path.remove(str(ROOT / "bench"))
    counts = {}
    for backend in ("array_api_strict", "torch"):
        pytest.importorskip(backend, reason=f"the count is taken on {backend}")
        for kernel in (3, 5):
            with nn.use_backend(backend) as device:
                nn.seed(0)
                side = (28 - kernel + 1) // 2
                model = nn.Sequential(nn.Conv2D(1, 4, kernel), nn.ReLU(), nn.MaxPool2D(2),
                                      nn.Flatten(), nn.Dense(4 * side * side, 10))
                counts[backend, kernel] = opcount.ops_per_step(
                    backend, _images_epoch(model, device.xp), 4, 128)
    assert counts["array_api_strict", 5]["per_step"] - counts["array_api_strict", 3][
        "per_step"] == 16
    assert counts["torch", 5]["per_step"] - counts["torch", 3]["per_step"] == 32
    assert counts["torch", 3]["per_step"] == 143  # pinned: a new operation is noticed


def _images_epoch(model, xp):
    """One fit epoch of ``model`` on opcount's rows of 784 pixels, as 28 × 28 images."""
    adam, loss = nn.Adam(), nn.SoftmaxCrossEntropy()
    return lambda X, y: model.fit(xp.reshape(X, (-1, 1, 28, 28)), y, loss=loss,
                                  optimizer=adam, epochs=1, batch_size=128, seed=1)
