"""Losses: values on hand-made examples, PyTorch's reductions (MSE and BCE average over
every element, the cross-entropies over samples), stability for extreme inputs, and
every gradient against finite differences."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nnscratch as nn

GRADCHECK_TOLERANCE = 1e-7


def f64(backend, array):
    return backend.asarray(np.asarray(array, dtype=np.float64), dtype="float64")


def labels(backend, values):
    return backend.asarray(np.asarray(values, dtype=np.int64))


def value_and_grad(backend, loss, outputs, targets):
    value = loss.forward(outputs, targets)
    assert value.ndim == 0
    return float(value), nn.to_numpy(loss.backward())


def host_log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# -- mean squared error -----------------------------------------------------------------


def test_mse_by_hand(backend):
    outputs = f64(backend, [[1.0, 2.0], [3.0, 4.0]])
    targets = f64(backend, [[0.0, 2.0], [5.0, 4.0]])
    value, grad = value_and_grad(backend, nn.MeanSquaredError(), outputs, targets)
    assert value == 1.25  # (1 + 0 + 4 + 0) / 4: mean over all elements, no 1/2
    np.testing.assert_array_equal(grad, [[0.5, 0.0], [-1.0, 0.0]])  # 2(ŷ − y)/N


def test_mse_accepts_a_flat_target_for_one_output(backend):
    outputs = f64(backend, [[1.0], [2.0], [4.0]])
    value, grad = value_and_grad(backend, nn.MeanSquaredError(), outputs,
                                 f64(backend, [1.0, 0.0, 1.0]))
    assert value == pytest.approx((0 + 4 + 9) / 3, rel=1e-15)
    assert grad.shape == (3, 1)


def test_mse_rejects_mismatched_shapes(backend):
    with pytest.raises(nn.ShapeError, match=r"\(3, 2\)"):
        nn.MeanSquaredError().forward(f64(backend, np.zeros((3, 2))), f64(backend, np.zeros(3)))


# -- binary cross-entropy ---------------------------------------------------------------


def test_bce_from_probabilities_by_hand(backend):
    p = np.array([[0.9, 0.3], [0.2, 0.7]])
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    value, grad = value_and_grad(backend, nn.BinaryCrossEntropy(), f64(backend, p),
                                 f64(backend, y))
    # the mean over all four elements, not the sum over columns
    assert value == pytest.approx(-(np.log(0.9) + np.log(0.7) + np.log(0.8) + np.log(0.7)) / 4,
                                  rel=1e-14)
    np.testing.assert_allclose(grad, (p - y) / (p * (1 - p)) / 4, rtol=1e-14)


def test_bce_from_logits_by_hand(backend):
    z = np.array([[2.0, -1.0], [0.5, -3.0]])
    y = np.array([[1.0, 0.0], [1.0, 1.0]])
    value, grad = value_and_grad(backend, nn.BinaryCrossEntropy(from_logits=True),
                                 f64(backend, z), f64(backend, y))
    expected = np.mean(np.log1p(np.exp(-z)) * y + np.log1p(np.exp(z)) * (1 - y))
    assert value == pytest.approx(expected, rel=1e-14)
    np.testing.assert_allclose(grad, (1 / (1 + np.exp(-z)) - y) / 4, rtol=1e-14)


def test_bce_from_logits_with_extreme_logits(backend):
    z = f64(backend, [[1000.0], [-1000.0], [1000.0], [-1000.0]])
    y = f64(backend, [[0.0], [0.0], [1.0], [1.0]])
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        value, grad = value_and_grad(backend, nn.BinaryCrossEntropy(from_logits=True), z, y)
    assert value == 500.0  # per element: 1000, 0, 0, 1000
    np.testing.assert_array_equal(grad.ravel(), [0.25, 0.0, 0.0, -0.25])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_clips_probabilities_of_exactly_0_and_1(backend, dtype):
    p = backend.asarray(np.array([[0.0], [1.0], [0.0], [1.0]]), dtype=dtype)
    y = backend.asarray(np.array([[0.0], [1.0], [1.0], [0.0]]), dtype=dtype)
    loss = nn.BinaryCrossEntropy()
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        value = float(loss.forward(p, y))
        grad = nn.to_numpy(loss.backward())
    eps = float(np.finfo(dtype).eps)
    # the two wrong answers cost -ln(eps) each, the two right ones almost nothing
    assert value == pytest.approx(-2 * np.log(eps) / 4, rel=1e-4)
    assert np.all(np.isfinite(grad))
    assert grad[2, 0] < 0 < grad[3, 0]


def test_bce_of_sigmoid_equals_bce_from_logits(backend):
    z = np.random.default_rng(0).normal(scale=3.0, size=(6, 2))
    y = np.random.default_rng(1).uniform(size=(6, 2))  # soft targets are fine too
    via_probabilities = nn.BinaryCrossEntropy().forward(nn.Sigmoid().forward(f64(backend, z)),
                                                         f64(backend, y))
    from_logits = nn.BinaryCrossEntropy(from_logits=True).forward(f64(backend, z),
                                                                  f64(backend, y))
    assert float(via_probabilities) == pytest.approx(float(from_logits), rel=1e-12)


def test_bce_thresholds():
    assert nn.BinaryCrossEntropy().threshold == 0.5
    assert nn.BinaryCrossEntropy(from_logits=True).threshold == 0.0
    assert nn.BinaryCrossEntropy().task == "binary"


# -- categorical cross-entropies --------------------------------------------------------


def test_categorical_cross_entropy_by_hand(backend):
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    loss = nn.CategoricalCrossEntropy()
    value, grad = value_and_grad(backend, loss, f64(backend, p), labels(backend, [0, 2]))
    assert value == pytest.approx(-(np.log(0.7) + np.log(0.8)) / 2, rel=1e-14)  # over samples
    np.testing.assert_allclose(grad, [[-1 / 1.4, 0, 0], [0, 0, -1 / 1.6]], rtol=1e-14)
    one_hot_value, one_hot_grad = value_and_grad(backend, loss, f64(backend, p),
                                                 f64(backend, np.eye(3)[[0, 2]]))
    assert one_hot_value == pytest.approx(value, rel=1e-15)
    np.testing.assert_allclose(one_hot_grad, grad, rtol=1e-15)


def test_softmax_cross_entropy_by_hand(backend):
    z = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    y = np.array([0, 2, 1])
    value, grad = value_and_grad(backend, nn.SoftmaxCrossEntropy(), f64(backend, z),
                                 labels(backend, y))
    log_s = host_log_softmax(z)
    assert value == pytest.approx(-log_s[np.arange(3), y].mean(), rel=1e-14)
    np.testing.assert_allclose(grad, (np.exp(log_s) - np.eye(3)[y]) / 3, rtol=1e-14)
    assert value == pytest.approx(
        (-np.log(np.exp(2) / (np.exp(2) + np.e + 1)) - np.log(np.exp(3) / (np.exp(3) + 2))
         + np.log(3)) / 3, rel=1e-13)


def test_softmax_cross_entropy_with_huge_logits(backend):
    z = f64(backend, [[1000.0, 0.0, -1000.0]] * 3)
    for label, expected in [(0, 0.0), (1, 1000.0), (2, 2000.0)]:
        loss = nn.SoftmaxCrossEntropy()
        with warnings.catch_warnings(), np.errstate(over="raise", divide="raise",
                                                    invalid="raise"):
            warnings.simplefilter("error")
            value = float(loss.forward(z[:1, ...], labels(backend, [label])))
            grad = nn.to_numpy(loss.backward())
        assert value == expected
        np.testing.assert_array_equal(grad, np.array([[1.0, 0.0, 0.0]]) - np.eye(3)[[label]])
    soft = f64(backend, [[0.25, 0.75, 0.0]])
    assert float(nn.SoftmaxCrossEntropy().forward(z[:1, ...], soft)) == 750.0


def test_softmax_cross_entropy_equals_softmax_then_categorical(backend):
    rng = np.random.default_rng(2)
    z, y = rng.normal(scale=2.0, size=(5, 4)), rng.integers(0, 4, size=5)
    fused = nn.SoftmaxCrossEntropy()
    fused_value = float(fused.forward(f64(backend, z), labels(backend, y)))
    softmax, categorical = nn.Softmax(), nn.CategoricalCrossEntropy()
    chained_value = float(categorical.forward(softmax.forward(f64(backend, z), training=True),
                                              labels(backend, y)))
    assert fused_value == pytest.approx(chained_value, rel=1e-13)
    chained_grad = nn.to_numpy(softmax.backward(categorical.backward()))
    np.testing.assert_allclose(nn.to_numpy(fused.backward()), chained_grad, rtol=1e-10,
                               atol=1e-15)


@pytest.mark.parametrize("loss", [nn.CategoricalCrossEntropy(), nn.SoftmaxCrossEntropy()])
def test_class_losses_reject_bad_targets(backend, loss):
    outputs = f64(backend, np.full((3, 2), 0.5))
    with pytest.raises(nn.ShapeError):
        loss.forward(outputs, f64(backend, [0.0, 1.0, 1.0]))  # float labels
    with pytest.raises(nn.ShapeError):
        loss.forward(outputs, labels(backend, [0, 1]))  # wrong length
    with pytest.raises(nn.ShapeError):
        loss.forward(f64(backend, [0.5, 0.5]), labels(backend, [0, 1]))  # 1-D outputs


# -- every gradient against finite differences ------------------------------------------


def _gradcheck_cases(rng):
    n = 6
    logits = rng.normal(scale=2.0, size=(n, 3))
    one_hot = np.eye(3)[rng.integers(0, 3, size=n)]
    soft = rng.dirichlet(np.ones(3), size=n)
    return {
        "mse": (nn.MeanSquaredError(), rng.normal(size=(n, 3)), rng.normal(size=(n, 3))),
        "bce hard targets": (nn.BinaryCrossEntropy(), rng.uniform(0.05, 0.95, size=(n, 2)),
                             rng.integers(0, 2, size=(n, 2)).astype(np.float64)),
        "bce soft targets": (nn.BinaryCrossEntropy(), rng.uniform(0.05, 0.95, size=(n, 1)),
                             rng.uniform(size=(n, 1))),
        "bce from logits": (nn.BinaryCrossEntropy(from_logits=True), logits,
                            rng.integers(0, 2, size=(n, 3)).astype(np.float64)),
        "categorical labels": (nn.CategoricalCrossEntropy(), rng.uniform(0.05, 1.0, (n, 3)),
                               rng.integers(0, 3, size=n)),
        "categorical one-hot": (nn.CategoricalCrossEntropy(), rng.uniform(0.05, 1.0, (n, 3)),
                                one_hot),
        "softmax labels": (nn.SoftmaxCrossEntropy(), logits, rng.integers(0, 3, size=n)),
        "softmax one-hot": (nn.SoftmaxCrossEntropy(), logits, one_hot),
        "softmax soft targets": (nn.SoftmaxCrossEntropy(), logits, soft),
        # rows that do not sum to 1 (a zero row masks a sample out): the gradient must
        # follow the forward formula, L = (1/n) Σᵢ Σ_c y_ic (lse_i − z_ic)
        "softmax unnormalized targets": (nn.SoftmaxCrossEntropy(), logits,
                                         np.vstack([soft[:3] * 2.0, np.zeros((3, 3))])),
    }


@pytest.mark.parametrize("case", list(_gradcheck_cases(np.random.default_rng(0))))
def test_loss_gradcheck(backend, case):
    loss, outputs, targets = _gradcheck_cases(np.random.default_rng(3))[case]
    y = (backend.asarray(targets) if targets.dtype == np.int64 else f64(backend, targets))
    result = nn.gradcheck(nn.Sequential(nn.Identity()), f64(backend, outputs), y, loss,
                          check_input=True)
    assert result.max_relative_error < GRADCHECK_TOLERANCE, result


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", [nn.MeanSquaredError(), nn.BinaryCrossEntropy(),
                                  nn.BinaryCrossEntropy(from_logits=True),
                                  nn.CategoricalCrossEntropy(), nn.SoftmaxCrossEntropy()],
                         ids=repr)
def test_losses_keep_the_dtype(backend, loss, dtype):
    outputs = backend.asarray(np.full((4, 2), 0.25), dtype=dtype)
    if loss.task == "multiclass":
        targets = labels(backend, [0, 1, 1, 0])
    else:
        targets = backend.asarray(np.eye(2)[[0, 1, 1, 0]], dtype=dtype)
    value = loss.forward(outputs, targets)
    grad = loss.backward()
    assert value.dtype == getattr(backend.xp, dtype)
    assert grad.dtype == getattr(backend.xp, dtype)
    assert tuple(grad.shape) == (4, 2)


def test_machine_epsilon_never_compares_dtypes_across_libraries():
    """array-api-strict warns when its dtypes meet NumPy's in ==; the per-dtype cache of
    the losses' ε must keep them apart (it once keyed by the dtype alone)."""
    import array_api_strict

    from nnscratch.losses import machine_epsilon

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert machine_epsilon(np, np.dtype("float32")) == np.finfo(np.float32).eps
        got = machine_epsilon(array_api_strict, array_api_strict.float32)
    assert got == np.finfo(np.float32).eps
    assert machine_epsilon(array_api_strict, array_api_strict.float64) == np.finfo(np.float64).eps
