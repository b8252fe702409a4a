"""Activations: forward values against closed forms computed in NumPy on the host,
stability far in the tails, and every derivative against finite differences."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nnscratch as nn

GRADCHECK_TOLERANCE = 1e-7


def f64(backend, array):
    return backend.asarray(np.asarray(array, dtype=np.float64), dtype="float64")


def away_from_kinks(shape, seed=0, margin=0.1, scale=2.0):
    """Random inputs with |x| >= margin: ReLU, LeakyReLU and ELU have a kink at 0 where
    a finite difference straddling it would be meaningless."""
    rng = np.random.default_rng(seed)
    magnitude = rng.uniform(margin, scale, size=shape)
    return magnitude * rng.choice([-1.0, 1.0], size=shape)


ACTIVATIONS = {
    "identity": nn.Identity,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "elu": lambda: nn.ELU(1.5),
    "softplus": nn.Softplus,
    "softmax": nn.Softmax,
}


def host_forward(name: str, x: np.ndarray) -> np.ndarray:
    """The closed forms, written independently of the library."""
    with np.errstate(over="ignore"):
        if name == "identity":
            return x
        if name == "sigmoid":
            return 1.0 / (1.0 + np.exp(-x))
        if name == "tanh":
            return np.tanh(x)
        if name == "relu":
            return np.where(x > 0, x, 0.0)
        if name == "leaky_relu":
            return np.where(x > 0, x, 0.2 * x)
        if name == "elu":
            return np.where(x > 0, x, 1.5 * (np.exp(x) - 1.0))
        if name == "softplus":
            return np.logaddexp(0.0, x)
        if name == "softmax":
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
    raise AssertionError(name)


def host_derivative(name: str, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """∂L/∂x = g ⊙ f'(x) (softmax: its Jacobian-vector product), by hand."""
    y = host_forward(name, x)
    if name == "identity":
        return g
    if name == "sigmoid":
        return g * y * (1.0 - y)
    if name == "tanh":
        return g / np.cosh(x) ** 2
    if name == "relu":
        return g * (x > 0)
    if name == "leaky_relu":
        return g * np.where(x > 0, 1.0, 0.2)
    if name == "elu":
        return g * np.where(x > 0, 1.0, 1.5 * np.exp(x))
    if name == "softplus":
        return g / (1.0 + np.exp(-x))
    if name == "softmax":
        jacobians = y[:, :, None] * (np.eye(x.shape[1])[None] - y[:, None, :])
        return np.einsum("ni,nij->nj", g, jacobians)
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_forward_matches_closed_form(backend, name):
    x = away_from_kinks((6, 5), seed=1, scale=4.0)
    output = ACTIVATIONS[name]().forward(f64(backend, x))
    np.testing.assert_allclose(nn.to_numpy(output), host_forward(name, x), rtol=1e-13,
                               atol=1e-15)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_backward_matches_closed_form(backend, name):
    x = away_from_kinks((6, 5), seed=2, scale=3.0)
    g = np.random.default_rng(3).normal(size=x.shape)
    layer = ACTIVATIONS[name]()
    layer.forward(f64(backend, x), training=True)
    grad_input = nn.to_numpy(layer.backward(f64(backend, g)))
    np.testing.assert_allclose(grad_input, host_derivative(name, x, g), rtol=1e-12,
                               atol=1e-15)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_gradcheck(backend, name):
    """The activation alone (input gradient) and after a Dense (parameter gradients)."""
    rng = np.random.default_rng(4)
    x = away_from_kinks((5, 4), seed=5)
    y = f64(backend, rng.normal(size=(5, 4)))
    alone = nn.gradcheck(nn.Sequential(ACTIVATIONS[name]()), f64(backend, x), y,
                         nn.MeanSquaredError(), check_input=True)
    assert set(alone.errors) == {"input"}
    assert alone.max_relative_error < GRADCHECK_TOLERANCE, alone

    model = nn.Sequential(nn.Dense(3, 4, dtype="float64"), ACTIVATIONS[name]())
    model.layers[0].bias.value = f64(backend, rng.normal(scale=0.5, size=4))
    X = f64(backend, rng.normal(size=(5, 3)))
    preactivations = nn.to_numpy(model.layers[0].forward(X))
    assert np.abs(preactivations).min() > 1e-3  # no kink within reach of h = 1e-6
    stacked = nn.gradcheck(model, X, y, nn.MeanSquaredError(), check_input=True)
    assert stacked.max_relative_error < GRADCHECK_TOLERANCE, stacked


# -- the tails: no overflow, no NaN, no warnings ----------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_is_exact_far_in_the_tails(backend, dtype):
    x = backend.asarray(np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]]), dtype=dtype)
    layer = nn.Sigmoid()
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        y = nn.to_numpy(layer.forward(x, training=True))
        grad = nn.to_numpy(layer.backward(backend.asarray(np.ones((1, 5)), dtype=dtype)))
    assert y.dtype == np.dtype(dtype)
    assert y[0, 0] == 0.0 and y[0, 4] == 1.0 and y[0, 2] == 0.5
    assert y[0, 3] == 1.0  # 1 − e^{−50} rounds to 1
    assert 0.0 < y[0, 1] < 1e-21  # e^{−50} ≈ 1.9e-22, not flushed to 0 by 1 − (1 − ...)
    assert np.all(np.isfinite(grad)) and grad[0, 0] == 0.0 and grad[0, 4] == 0.0
    assert grad[0, 2] == 0.25


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softplus_is_exact_far_in_the_tails(backend, dtype):
    x = backend.asarray(np.array([[-1000.0, 0.0, 30.0, 1000.0]]), dtype=dtype)
    layer = nn.Softplus()
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        y = nn.to_numpy(layer.forward(x, training=True))
        grad = nn.to_numpy(layer.backward(backend.asarray(np.ones((1, 4)), dtype=dtype)))
    assert y[0, 3] == 1000.0
    assert y[0, 0] == 0.0
    assert y[0, 1] == pytest.approx(np.log(2.0), rel=1e-7)
    assert y[0, 2] == pytest.approx(30.0, rel=1e-7)
    np.testing.assert_array_equal(grad[0, [0, 1, 3]], [0.0, 0.5, 1.0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_of_huge_logits_is_finite(backend, dtype):
    logits = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, 0.0, 1000.0], [5.0, 5.0, 5.0]])
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        s = nn.to_numpy(nn.Softmax().forward(backend.asarray(logits, dtype=dtype)))
    assert np.all(np.isfinite(s))
    expected_first = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    np.testing.assert_allclose(s[0], expected_first, rtol=1e-6)
    np.testing.assert_array_equal(s[1], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(s[2], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=1e-6)


def test_softmax_is_shift_invariant(backend):
    x = np.random.default_rng(6).normal(size=(4, 5))
    s = nn.to_numpy(nn.Softmax().forward(f64(backend, x)))
    shifted = nn.to_numpy(nn.Softmax().forward(f64(backend, x + 700.0)))
    np.testing.assert_allclose(s, shifted, rtol=1e-12)


def test_tanh_and_elu_saturate_without_nan(backend):
    x = f64(backend, [[-1000.0, 1000.0]])
    np.testing.assert_array_equal(nn.to_numpy(nn.Tanh().forward(x)), [[-1.0, 1.0]])
    np.testing.assert_array_equal(nn.to_numpy(nn.ELU(2.0).forward(x)), [[-2.0, 1000.0]])


# -- the others -------------------------------------------------------------------------


def test_relu_family_values_at_and_around_zero(backend):
    x = f64(backend, [[-2.0, -0.0, 0.0, 3.0]])
    np.testing.assert_array_equal(nn.to_numpy(nn.ReLU().forward(x)), [[0.0, 0.0, 0.0, 3.0]])
    np.testing.assert_array_equal(nn.to_numpy(nn.LeakyReLU(0.1).forward(x)),
                                  [[-0.2, 0.0, 0.0, 3.0]])
    np.testing.assert_allclose(nn.to_numpy(nn.ELU().forward(x)),
                               [[np.expm1(-2.0), 0.0, 0.0, 3.0]], rtol=1e-15)
    relu = nn.ReLU()
    relu.forward(x, training=True)
    np.testing.assert_array_equal(nn.to_numpy(relu.backward(f64(backend, [[5.0] * 4]))),
                                  [[0.0, 0.0, 0.0, 5.0]])


def test_identity_passes_values_and_gradients_through(backend):
    x = f64(backend, [[1.5, -2.0]])
    layer = nn.Identity()
    np.testing.assert_array_equal(nn.to_numpy(layer.forward(x)), [[1.5, -2.0]])
    np.testing.assert_array_equal(nn.to_numpy(layer.backward(x)), [[1.5, -2.0]])


def test_step_forward_and_backward_raises(backend):
    x = f64(backend, [[-3.0, -1e-12, 0.0, 2.0]])
    layer = nn.Step()
    y = layer.forward(x, training=True)
    np.testing.assert_array_equal(nn.to_numpy(y), [[0.0, 0.0, 1.0, 1.0]])
    assert y.dtype == backend.xp.float64
    with pytest.raises(nn.NotDifferentiableError, match="Sigmoid"):
        layer.backward(f64(backend, np.ones((1, 4))))
    with pytest.raises(RuntimeError):
        layer.backward(f64(backend, np.ones((1, 4))))


def test_training_through_step_fails_loudly(backend):
    model = nn.Sequential(nn.Dense(2, 1), nn.Step())
    X = np.array([[0, 0], [1, 1]], dtype=np.float32)
    y = np.array([[0.0], [1.0]], dtype=np.float32)
    with pytest.raises(nn.NotDifferentiableError):
        model.fit(X, y, loss=nn.MeanSquaredError(), optimizer=nn.SGD(lr=0.1), epochs=1)


@pytest.mark.parametrize("name", ["float32", "float64"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS) + ["step"])
def test_activations_keep_the_dtype(backend, activation, name):
    layer = nn.Step() if activation == "step" else ACTIVATIONS[activation]()
    x = backend.asarray(away_from_kinks((3, 4), seed=7), dtype=name)
    y = layer.forward(x, training=True)
    assert y.dtype == getattr(backend.xp, name)
    if activation != "step":
        assert layer.backward(x).dtype == getattr(backend.xp, name)


def test_get_activation_by_name():
    assert isinstance(nn.get_activation("relu"), nn.ReLU)
    assert isinstance(nn.get_activation("Sigmoid"), nn.Sigmoid)
    assert isinstance(nn.get_activation("linear"), nn.Identity)
    elu = nn.ELU(0.5)
    assert nn.get_activation(elu) is elu
    with pytest.raises(nn.ConfigError, match="relu"):
        nn.get_activation("swish")


@pytest.mark.parametrize("make", [lambda: nn.LeakyReLU(-0.1), lambda: nn.ELU(0.0),
                                  lambda: nn.ELU(-1.0)])
def test_bad_alphas_are_rejected(make):
    with pytest.raises(nn.ConfigError):
        make()
