"""Dense and Dropout, the initializers, L1/L2 penalties, and the gradient check itself.

Forward passes are compared with the same formulas evaluated independently in NumPy on
the host; backward passes with central finite differences (``nn.gradcheck``, float64).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import init as initializers
from nnscratch import random as nn_random

GRADCHECK_TOLERANCE = 1e-7


def host_rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def f64(backend, array):
    return backend.asarray(np.asarray(array, dtype=np.float64), dtype="float64")


def away_from_zero(low: float = 0.2, high: float = 1.0, seed: int = 1):
    """An initializer whose weights have |w| in [low, high]: no L1 kink within reach
    of the finite differences."""
    rng = host_rng(seed)

    def make(fan_in: int, fan_out: int) -> np.ndarray:
        magnitude = rng.uniform(low, high, size=(fan_in, fan_out))
        return magnitude * rng.choice([-1.0, 1.0], size=(fan_in, fan_out))

    return make


# -- Dense ------------------------------------------------------------------------------


def test_dense_shapes_and_default_dtype(backend):
    layer = nn.Dense(3, 5)
    assert layer.weight.shape == (3, 5)
    assert layer.bias.shape == (5,)
    assert layer.weight.value.dtype == backend.xp.float32
    assert layer.bias.value.dtype == backend.xp.float32
    assert np.all(nn.to_numpy(layer.bias.value) == 0.0)
    assert [p.name for p in layer.parameters()] == ["weight", "bias"]
    assert layer.parameters()[0] is layer.weight and layer.parameters()[1] is layer.bias


def test_dense_forward_is_x_w_plus_b(backend):
    rng = host_rng(2)
    layer = nn.Dense(4, 3, dtype="float64")
    bias = rng.normal(size=3)
    layer.bias.value = f64(backend, bias)
    x = rng.normal(size=(6, 4))
    output = nn.to_numpy(layer.forward(f64(backend, x)))
    weight = nn.to_numpy(layer.weight.value)
    np.testing.assert_allclose(output, x @ weight + bias, rtol=1e-13, atol=1e-13)
    assert output.shape == (6, 3)


def test_dense_backward_closed_form(backend):
    rng = host_rng(3)
    layer = nn.Dense(4, 3, dtype="float64")
    x, grad_output = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    layer.forward(f64(backend, x), training=True)
    grad_input = nn.to_numpy(layer.backward(f64(backend, grad_output)))
    weight = nn.to_numpy(layer.weight.value)
    np.testing.assert_allclose(nn.to_numpy(layer.weight.grad), x.T @ grad_output, rtol=1e-12)
    np.testing.assert_allclose(nn.to_numpy(layer.bias.grad), grad_output.sum(axis=0),
                               rtol=1e-12)
    np.testing.assert_allclose(grad_input, grad_output @ weight.T, rtol=1e-12)


def test_dense_backward_without_input_grad_still_fills_parameter_grads(backend):
    rng = host_rng(4)
    layer = nn.Dense(2, 3, dtype="float64")
    x, grad_output = rng.normal(size=(4, 2)), rng.normal(size=(4, 3))
    layer.forward(f64(backend, x), training=True)
    assert layer.backward(f64(backend, grad_output), need_input_grad=False) is None
    np.testing.assert_allclose(nn.to_numpy(layer.weight.grad), x.T @ grad_output, rtol=1e-12)


def test_dense_rejects_a_wrong_input_width(backend):
    layer = nn.Dense(3, 2)
    with pytest.raises(nn.ShapeError, match=r"\(batch, 3\)"):
        layer.forward(backend.asarray(np.zeros((4, 5), dtype=np.float32)))
    with pytest.raises(nn.ShapeError):
        layer.forward(backend.asarray(np.zeros((3,), dtype=np.float32)))


@pytest.mark.parametrize("kwargs", [
    {"in_features": 0, "out_features": 2},
    {"in_features": 2, "out_features": -1},
    {"in_features": 2.0, "out_features": 2},
    {"in_features": 2, "out_features": 2, "dtype": "float16"},
    {"in_features": 2, "out_features": 2, "l1": -0.1},
    {"in_features": 2, "out_features": 2, "init": "no_such_init"},
])
def test_dense_rejects_bad_arguments(kwargs):
    with pytest.raises(nn.ConfigError):
        nn.Dense(**kwargs)


def test_dense_gradcheck(backend):
    rng = host_rng(5)
    model = nn.Sequential(nn.Dense(3, 4, dtype="float64"))
    model.layers[0].bias.value = f64(backend, rng.normal(size=4))
    X, y = f64(backend, rng.normal(size=(5, 3))), f64(backend, rng.normal(size=(5, 4)))
    result = nn.gradcheck(model, X, y, nn.MeanSquaredError(), check_input=True)
    assert set(result.errors) == {"0.weight", "0.bias", "input"}
    assert result.max_relative_error < GRADCHECK_TOLERANCE, result


# -- L1 / L2 penalties ------------------------------------------------------------------


@pytest.mark.parametrize("l1,l2", [(0.03, 0.0), (0.0, 0.05), (0.02, 0.04)])
def test_penalty_value_is_l1_abs_plus_l2_square(backend, l1, l2):
    layer = nn.Dense(3, 4, dtype="float64", l1=l1, l2=l2)
    weight = nn.to_numpy(layer.weight.value)
    expected = l1 * np.abs(weight).sum() + l2 * (weight**2).sum()
    assert float(layer.regularization_loss()) == pytest.approx(expected, rel=1e-13)
    assert expected > 0.0
    model = nn.Sequential(layer, nn.Tanh(), nn.Dense(4, 2, dtype="float64", l2=0.5))
    second = nn.to_numpy(model.layers[2].weight.value)
    total = expected + 0.5 * (second**2).sum()
    assert float(model.regularization_loss()) == pytest.approx(total, rel=1e-13)


def test_penalty_gradient_closed_form(backend):
    """∂/∂W of the penalty alone: l1·sign(W) + 2·l2·W (with a zero upstream gradient)."""
    l1, l2 = 0.03, 0.07
    layer = nn.Dense(3, 2, dtype="float64", l1=l1, l2=l2, init=away_from_zero())
    layer.forward(f64(backend, np.ones((4, 3))), training=True)
    layer.backward(f64(backend, np.zeros((4, 2))))
    weight = nn.to_numpy(layer.weight.value)
    np.testing.assert_allclose(nn.to_numpy(layer.weight.grad),
                               l1 * np.sign(weight) + 2 * l2 * weight, rtol=1e-13)
    assert np.all(nn.to_numpy(layer.bias.grad) == 0.0)  # biases are not penalized


@pytest.mark.parametrize("l1,l2", [(0.1, 0.0), (0.0, 0.2), (0.05, 0.3)])
def test_penalty_gradcheck(backend, l1, l2):
    rng = host_rng(6)
    model = nn.Sequential(
        nn.Dense(3, 4, dtype="float64", l1=l1, l2=l2, init=away_from_zero(seed=2)),
        nn.Tanh(),
        nn.Dense(4, 2, dtype="float64", l1=l2, l2=l1, init=away_from_zero(seed=3)),
    )
    X, y = f64(backend, rng.normal(size=(6, 3))), f64(backend, rng.normal(size=(6, 2)))
    result = nn.gradcheck(model, X, y, nn.MeanSquaredError(), check_input=True)
    assert result.max_relative_error < GRADCHECK_TOLERANCE, result


# -- whole networks ---------------------------------------------------------------------


def _network_cases():
    return {
        "tanh-relu-sigmoid + bce": (
            lambda: [nn.Dense(3, 5, dtype="float64"), nn.Tanh(),
                     nn.Dense(5, 4, dtype="float64"), nn.ReLU(),
                     nn.Dense(4, 2, dtype="float64"), nn.Sigmoid()],
            nn.BinaryCrossEntropy(), "binary"),
        "elu-softplus + softmax cross-entropy": (
            lambda: [nn.Dense(3, 6, dtype="float64"), nn.ELU(0.7),
                     nn.Dense(6, 4, dtype="float64"), nn.Softplus(),
                     nn.Dense(4, 3, dtype="float64")],
            nn.SoftmaxCrossEntropy(), "labels"),
        "leaky-sigmoid-softmax + categorical cross-entropy": (
            lambda: [nn.Dense(3, 4, dtype="float64"), nn.LeakyReLU(0.1),
                     nn.Dense(4, 4, dtype="float64", l2=0.01), nn.Sigmoid(),
                     nn.Dense(4, 3, dtype="float64"), nn.Softmax()],
            nn.CategoricalCrossEntropy(), "one-hot"),
        "tanh + bce from logits, penalties": (
            lambda: [nn.Dense(3, 4, dtype="float64", l1=0.01, init=away_from_zero()),
                     nn.Tanh(), nn.Dense(4, 1, dtype="float64", l2=0.1)],
            nn.BinaryCrossEntropy(from_logits=True), "binary"),
        "identity-dropout(eval) + mse": (
            lambda: [nn.Dense(3, 4, dtype="float64"), nn.Identity(), nn.Dropout(0.5),
                     nn.Dense(4, 2, dtype="float64"), nn.Softplus()],
            nn.MeanSquaredError(), "real"),
    }


@pytest.mark.parametrize("case", list(_network_cases()))
def test_whole_network_gradcheck(backend, case):
    build, loss, target_kind = _network_cases()[case]
    rng = host_rng(7)
    model = nn.Sequential(*build())
    for layer in model.layers:  # non-zero biases, so their gradients matter
        if isinstance(layer, nn.Dense):
            layer.bias.value = f64(backend, rng.normal(scale=0.3, size=layer.out_features))
    n, width = 7, model.out_features
    X = f64(backend, rng.normal(size=(n, 3)))
    if target_kind == "binary":
        y = f64(backend, rng.integers(0, 2, size=(n, width)))
    elif target_kind == "labels":
        y = backend.asarray(rng.integers(0, width, size=n))
    elif target_kind == "one-hot":
        y = f64(backend, np.eye(width)[rng.integers(0, width, size=n)])
    else:
        y = f64(backend, rng.normal(size=(n, width)))
    result = nn.gradcheck(model, X, y, loss, check_input=True)
    dense_count = sum(isinstance(layer, nn.Dense) for layer in model.layers)
    assert len(result.errors) == 2 * dense_count + 1
    assert result.max_relative_error < GRADCHECK_TOLERANCE, result


# -- the check itself -------------------------------------------------------------------


def _small_network(backend):
    rng = host_rng(8)
    model = nn.Sequential(nn.Dense(3, 4, dtype="float64"), nn.Sigmoid(),
                          nn.Dense(4, 2, dtype="float64"))
    X, y = f64(backend, rng.normal(size=(5, 3))), f64(backend, rng.normal(size=(5, 2)))
    return model, X, y


def test_gradcheck_detects_a_wrong_weight_gradient(backend, monkeypatch):
    model, X, y = _small_network(backend)
    layer = model.layers[0]
    correct_backward = layer.backward

    def off_by_one_percent(grad_output, need_input_grad=True):
        grad_input = correct_backward(grad_output, need_input_grad)
        layer.weight.grad = layer.weight.grad * 1.01
        return grad_input

    monkeypatch.setattr(layer, "backward", off_by_one_percent)
    result = nn.gradcheck(model, X, y, nn.MeanSquaredError())
    # ‖1.01g − g‖ / (‖1.01g‖ + ‖g‖) = 0.01 / 2.01
    assert result.errors["0.weight"] == pytest.approx(0.01 / 2.01, rel=1e-4)
    assert result.errors["0.bias"] < GRADCHECK_TOLERANCE
    assert result.max_relative_error > 1e-3


def test_gradcheck_detects_a_wrong_activation_derivative(backend, monkeypatch):
    model, X, y = _small_network(backend)
    sigmoid = model.layers[1]
    # σ' written as σ instead of σ(1 − σ): wrong everywhere upstream of the activation.
    monkeypatch.setattr(sigmoid, "backward",
                        lambda grad_output, need_input_grad=True: grad_output * sigmoid._cache)
    result = nn.gradcheck(model, X, y, nn.MeanSquaredError(), check_input=True)
    assert result.errors["2.weight"] < GRADCHECK_TOLERANCE  # downstream: still right
    assert result.errors["0.weight"] > 0.1
    assert result.errors["input"] > 0.1


def test_gradcheck_is_clean_on_the_correct_network(backend):
    model, X, y = _small_network(backend)
    result = nn.gradcheck(model, X, y, nn.MeanSquaredError(), check_input=True)
    assert result.max_relative_error < GRADCHECK_TOLERANCE, result
    assert result.max_abs_error < 1e-8


def test_gradcheck_refuses_float32(backend):
    model = nn.Sequential(nn.Dense(3, 2))
    X = backend.asarray(np.ones((2, 3), dtype=np.float32))
    y = backend.asarray(np.ones((2, 2), dtype=np.float32))
    with pytest.raises(nn.ConfigError, match="float64"):
        nn.gradcheck(model, X, y, nn.MeanSquaredError())


# -- Dropout ----------------------------------------------------------------------------


def test_dropout_is_the_identity_at_evaluation(backend):
    x = backend.asarray(host_rng(9).normal(size=(50, 8)).astype(np.float32))
    layer = nn.Dropout(0.5)
    np.testing.assert_array_equal(nn.to_numpy(layer.forward(x)), nn.to_numpy(x))
    grad = backend.asarray(np.full((50, 8), 3.0, dtype=np.float32))
    np.testing.assert_array_equal(nn.to_numpy(layer.backward(grad)), nn.to_numpy(grad))


def test_dropout_is_inverted_and_backward_uses_the_forward_mask(backend):
    rate = 0.3
    keep = 1.0 - rate
    x_host = host_rng(10).uniform(1.0, 2.0, size=(200, 100))
    layer = nn.Dropout(rate)
    y = nn.to_numpy(layer.forward(f64(backend, x_host), training=True))
    kept = y != 0.0
    np.testing.assert_allclose(y[kept], x_host[kept] / keep, rtol=1e-14)
    # 20,000 Bernoulli(0.7) draws: the kept share is 0.7 ± 0.0032 (one σ).
    assert abs(kept.mean() - keep) < 0.02
    # Inverted scaling keeps the expectation: E[y] = x.
    assert abs((y / x_host).mean() - 1.0) < 0.03
    grad_output = host_rng(11).normal(size=x_host.shape)
    grad_input = nn.to_numpy(layer.backward(f64(backend, grad_output)))
    np.testing.assert_allclose(grad_input, np.where(kept, grad_output / keep, 0.0), rtol=1e-14)


def test_dropout_masks_follow_the_seed(backend):
    x = backend.asarray(np.ones((30, 10), dtype=np.float32))
    layer = nn.Dropout(0.5)
    nn.seed(5)
    first = nn.to_numpy(layer.forward(x, training=True))
    second = nn.to_numpy(layer.forward(x, training=True))
    nn.seed(5)
    again = nn.to_numpy(layer.forward(x, training=True))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)  # a fresh mask every step
    assert first.dtype == np.float32
    assert set(np.unique(first).tolist()) == {0.0, 2.0}


def test_dropout_gradcheck_in_training_with_a_frozen_mask(backend, monkeypatch):
    """In training, with the mask held fixed (gradcheck runs forward many times), the
    backward pass must be the derivative of exactly the forward that drew the mask."""
    rng = host_rng(12)
    mask = rng.random(size=(6, 5)) < 0.6
    monkeypatch.setattr(nn_random, "bernoulli", lambda shape, keep: mask)
    model = nn.Sequential(nn.Dense(3, 5, dtype="float64"), nn.Tanh(), nn.Dropout(0.4),
                          nn.Dense(5, 2, dtype="float64"))
    X, y = f64(backend, rng.normal(size=(6, 3))), f64(backend, rng.normal(size=(6, 2)))
    dropped = nn.to_numpy(model.layers[2].forward(f64(backend, np.ones((6, 5))), training=True))
    np.testing.assert_allclose(dropped, mask / 0.6, rtol=1e-15)
    result = nn.gradcheck(model, X, y, nn.MeanSquaredError(), check_input=True, training=True)
    assert result.max_relative_error < GRADCHECK_TOLERANCE, result


def test_dropout_rate_zero_and_bad_rates(backend):
    x = backend.asarray(np.ones((4, 3), dtype=np.float32))
    np.testing.assert_array_equal(nn.to_numpy(nn.Dropout(0.0).forward(x, training=True)),
                                  np.ones((4, 3)))
    for rate in (-0.1, 1.0, 1.5):
        with pytest.raises(nn.ConfigError):
            nn.Dropout(rate)


# -- initializers -----------------------------------------------------------------------

FAN_IN, FAN_OUT = 300, 200


def _draw(name: str) -> np.ndarray:
    nn.seed(1)
    return np.asarray(initializers.get_initializer(name)(FAN_IN, FAN_OUT))


def test_zeros_initializer():
    weights = _draw("zeros")
    assert weights.shape == (FAN_IN, FAN_OUT)
    assert np.all(weights == 0.0)


def test_normal_initializer_is_the_notes_0_01_randn():
    weights = _draw("normal")
    expected = 0.01 * nn_random.make_generator(1, "init").standard_normal((FAN_IN, FAN_OUT))
    np.testing.assert_allclose(weights, expected, rtol=1e-15, atol=0.0)
    assert weights.std() == pytest.approx(0.01, rel=0.02)


@pytest.mark.parametrize("name,limit", [
    ("glorot_uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
    ("he_uniform", math.sqrt(6 / FAN_IN)),
])
def test_uniform_initializers(name, limit):
    weights = _draw(name)
    assert weights.shape == (FAN_IN, FAN_OUT)
    assert np.abs(weights).max() <= limit
    assert np.abs(weights).max() > 0.99 * limit
    assert weights.std() == pytest.approx(limit / math.sqrt(3), rel=0.02)
    assert abs(weights.mean()) < 0.01 * limit


@pytest.mark.parametrize("name,std", [
    ("glorot_normal", math.sqrt(2 / (FAN_IN + FAN_OUT))),
    ("he_normal", math.sqrt(2 / FAN_IN)),
])
def test_normal_initializers(name, std):
    weights = _draw(name)
    assert weights.std() == pytest.approx(std, rel=0.02)
    assert abs(weights.mean()) < 0.02 * std


@pytest.mark.parametrize("alias,name", [
    ("xavier_uniform", "glorot_uniform"), ("xavier_normal", "glorot_normal"),
    ("kaiming_uniform", "he_uniform"), ("kaiming_normal", "he_normal"),
])
def test_initializer_aliases(alias, name):
    np.testing.assert_array_equal(_draw(alias), _draw(name))


def test_dense_weights_follow_the_seed_and_the_initializer(backend):
    nn.seed(3)
    first = nn.to_numpy(nn.Dense(4, 3, dtype="float64", init="he_normal").weight.value)
    nn.seed(3)
    again = nn.to_numpy(nn.Dense(4, 3, dtype="float64", init="he_normal").weight.value)
    nn.seed(3)
    drawn = initializers.he_normal(4, 3)
    nn.seed(4)
    other = nn.to_numpy(nn.Dense(4, 3, dtype="float64", init="he_normal").weight.value)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, drawn)
    assert not np.allclose(first, other)


def test_custom_initializer_and_its_shape_check(backend):
    layer = nn.Dense(2, 3, dtype="float64", init=lambda fan_in, fan_out: np.full((2, 3), 0.5))
    assert np.all(nn.to_numpy(layer.weight.value) == 0.5)
    with pytest.raises(nn.ConfigError, match="shape"):
        nn.Dense(2, 3, init=lambda fan_in, fan_out: np.zeros((3, 2)))
