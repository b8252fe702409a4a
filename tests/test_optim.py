"""Optimizers against independent NumPy implementations of their textbook equations,
and the learning-rate schedules against their closed forms.

(Against torch.optim itself: tests/test_reference_torch.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import nnscratch as nn

STEPS = 10
# A fixed quadratic bowl, L(w) = ½ Σ q (w − target)²: its gradient q (w − target) is
# computed on the host from the current weights and handed to both implementations.
CURVATURE = {"weight": np.array([[0.5, 2.0], [1.0, 3.0], [0.2, 1.5]]),
             "bias": np.array([4.0, 0.3])}
TARGET = {"weight": np.array([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]]),
          "bias": np.array([-0.5, 2.0])}
START = {"weight": np.array([[0.3, 0.1], [-0.2, 0.4], [0.05, -0.6]]),
         "bias": np.array([0.1, -0.1])}


def gradient(name: str, w: np.ndarray) -> np.ndarray:
    return CURVATURE[name] * (w - TARGET[name])


def run_library(backend, optimizer, steps=STEPS):
    params = [nn.Parameter(backend.asarray(START[name], dtype="float64", copy=True), name)
              for name in ("weight", "bias")]
    for _ in range(steps):
        for param in params:
            param.grad = backend.asarray(gradient(param.name, nn.to_numpy(param.value)),
                                         dtype="float64")
        optimizer.step(params)
    return {param.name: nn.to_numpy(param.value) for param in params}, params


def run_reference(update, steps=STEPS):
    """``update(name, w, g, state, t) -> w`` applied to both parameters, t from 1."""
    weights = {name: value.copy() for name, value in START.items()}
    states = {name: {} for name in weights}
    for t in range(1, steps + 1):
        for name in weights:
            weights[name] = update(name, weights[name], gradient(name, weights[name]),
                                   states[name], t)
    return weights


# -- the textbook equations, written once more in NumPy ---------------------------------


def sgd(lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    def update(name, w, g, state, t):
        g = g + weight_decay * w
        if not momentum:
            return w - lr * g
        if nesterov:  # b ← μ b + g;  w ← w − α (g + μ b)
            b = state["b"] = momentum * state["b"] + g if "b" in state else g.copy()
            return w - lr * (g + momentum * b)
        # the course notes' form: m ← β m − α g;  w ← w + m  (m = −α b for a constant α)
        m = state["m"] = momentum * state.get("m", 0.0) - lr * g
        return w + m
    return update


def rmsprop(lr, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
    def update(name, w, g, state, t):
        g = g + weight_decay * w
        v = state["v"] = alpha * state.get("v", 0.0) + (1 - alpha) * g**2
        step = g / (np.sqrt(v) + eps)
        if momentum:
            step = state["b"] = momentum * state.get("b", 0.0) + step
        return w - lr * step
    return update


def adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=0.0):
    beta1, beta2 = betas

    def update(name, w, g, state, t):
        w = w * (1 - lr * decoupled)
        g = g + weight_decay * w
        m = state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * g
        v = state["v"] = beta2 * state.get("v", 0.0) + (1 - beta2) * g**2
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        return w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return update


CASES = {
    "sgd": (lambda: nn.SGD(lr=0.1), sgd(0.1)),
    "sgd momentum": (lambda: nn.SGD(lr=0.05, momentum=0.9), sgd(0.05, 0.9)),
    "sgd nesterov": (lambda: nn.SGD(lr=0.05, momentum=0.8, nesterov=True),
                     sgd(0.05, 0.8, nesterov=True)),
    "sgd weight decay": (lambda: nn.SGD(lr=0.1, weight_decay=0.05), sgd(0.1, weight_decay=0.05)),
    "sgd momentum weight decay": (lambda: nn.SGD(lr=0.05, momentum=0.5, weight_decay=0.1),
                                  sgd(0.05, 0.5, weight_decay=0.1)),
    "rmsprop": (lambda: nn.RMSprop(lr=0.01), rmsprop(0.01)),
    "rmsprop momentum weight decay": (
        lambda: nn.RMSprop(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.7, weight_decay=0.02),
        rmsprop(0.01, 0.9, 1e-6, 0.7, 0.02)),
    "adam": (lambda: nn.Adam(lr=0.05), adam(0.05)),
    "adam betas eps": (lambda: nn.Adam(lr=0.02, betas=(0.8, 0.95), eps=1e-4),
                       adam(0.02, (0.8, 0.95), 1e-4)),
    "adam weight decay": (lambda: nn.Adam(lr=0.05, weight_decay=0.1),
                          adam(0.05, weight_decay=0.1)),
    "adamw": (lambda: nn.AdamW(lr=0.05, weight_decay=0.2), adam(0.05, decoupled=0.2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_matches_its_equations(backend, case):
    make, reference = CASES[case]
    got, _ = run_library(backend, make())
    expected = run_reference(reference)
    for name in expected:
        assert not np.allclose(expected[name], START[name])  # it moved
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-10, atol=1e-13)


def test_adam_first_step_is_lr_times_the_sign(backend):
    """With bias correction, Adam's first step is α·g/(|g| + ε) ≈ α·sign(g)."""
    got, _ = run_library(backend, nn.Adam(lr=0.01), steps=1)
    g = gradient("weight", START["weight"])
    np.testing.assert_allclose(got["weight"], START["weight"] - 0.01 * g / (np.abs(g) + 1e-8),
                               rtol=1e-12)


def test_adamw_decay_is_decoupled_from_the_gradient(backend):
    """A zero gradient: Adam's L2 moves nothing (m = 0), AdamW still shrinks w by 1 − αλ."""
    for optimizer, expected in [(nn.AdamW(lr=0.1, weight_decay=0.5), 0.95 * START["bias"]),
                                (nn.SGD(lr=0.1), START["bias"])]:
        param = nn.Parameter(backend.asarray(START["bias"], dtype="float64", copy=True))
        param.grad = backend.asarray(np.zeros(2), dtype="float64")
        optimizer.step([param])
        np.testing.assert_allclose(nn.to_numpy(param.value), expected, rtol=1e-15)


def test_parameters_without_gradient_are_left_alone(backend):
    optimizer = nn.Adam(lr=0.1)
    frozen = nn.Parameter(backend.asarray(np.ones(3), dtype="float64"))
    moving = nn.Parameter(backend.asarray(np.ones(3), dtype="float64"))
    moving.grad = backend.asarray(np.ones(3), dtype="float64")
    optimizer.step([frozen, moving])
    np.testing.assert_array_equal(nn.to_numpy(frozen.value), np.ones(3))
    assert frozen not in optimizer.state
    assert np.all(nn.to_numpy(moving.value) < 1.0)


@pytest.mark.parametrize("case", ["sgd momentum", "rmsprop momentum weight decay", "adam"])
def test_state_dict_round_trip_continues_the_same_run(backend, case):
    make, _ = CASES[case]
    uninterrupted, _ = run_library(backend, make())
    first = make()
    half, params = run_library(backend, first, steps=STEPS // 2)
    resumed = make()
    resumed.load_state_dict(params, first.state_dict(params))
    assert resumed.t == STEPS // 2
    for _ in range(STEPS - STEPS // 2):
        for param in params:
            param.grad = backend.asarray(gradient(param.name, nn.to_numpy(param.value)),
                                         dtype="float64")
        resumed.step(params)
    for param in params:
        np.testing.assert_allclose(nn.to_numpy(param.value), uninterrupted[param.name],
                                   rtol=1e-13)


DECAYING = {
    "sgd momentum": lambda: nn.SGD(lr=0.1, momentum=0.9),
    "rmsprop momentum": lambda: nn.RMSprop(lr=0.01, alpha=0.9, momentum=0.5),
    "adam": lambda: nn.Adam(lr=0.01),
    "adamw": lambda: nn.AdamW(lr=0.01),
}


def _decay_run(backend, optimizer, steps=1000):
    """One gradient, then zeros: the state decays by its factors each step. Returns the
    final weights and state (host arrays) and whether any state entry was subnormal."""
    w = nn.Parameter(backend.asarray(np.linspace(0.5, 1.5, 6), dtype="float32"))
    first = backend.asarray(np.linspace(-0.1, 0.1, 6) + 0.05, dtype="float32")
    zero = backend.asarray(np.zeros(6), dtype="float32")
    tiny = np.finfo(np.float32).smallest_normal
    subnormal = False
    for t in range(steps):
        w.grad = first if t == 0 else zero
        optimizer.step([w])
        for array in optimizer.state[w].values():
            host = nn.to_numpy(array)
            subnormal = subnormal or bool(np.any((host != 0) & (np.abs(host) < tiny)))
    state = [nn.to_numpy(array) for array in optimizer.state[w].values()]
    return nn.to_numpy(w.value), state, subnormal


@pytest.mark.parametrize("case", list(DECAYING))
def test_decaying_state_is_flushed_before_it_turns_subnormal(backend, case):
    """Unflushed, the state decays into the subnormal numbers (slow on x86) within 1000
    steps; flushed every flush_interval() steps it never gets there, and every weight
    ends exactly where it ends without the flush."""
    flushed = DECAYING[case]()
    assert 0 < flushed.flush_interval() <= 157
    w_flushed, state_flushed, subnormal_flushed = _decay_run(backend, flushed)
    unflushed = DECAYING[case]()
    unflushed.flush_interval = lambda: 0  # this instance never flushes
    w_unflushed, _, subnormal_unflushed = _decay_run(backend, unflushed)
    # XLA (JAX) flushes subnormal results to 0 itself on the CPU
    assert (subnormal_unflushed or backend.name == "jax") and not subnormal_flushed
    assert any(np.all(array == 0) for array in state_flushed)  # a flush happened
    assert np.abs(w_flushed - np.linspace(0.5, 1.5, 6)).min() > 1e-4  # the weights moved
    np.testing.assert_array_equal(w_flushed, w_unflushed)


def test_flush_interval_follows_the_fastest_decay():
    # steps for the factor to fall by 2^24: floor(24 ln 2 / -ln r)
    assert nn.Adam().flush_interval() == 157  # β₁ = 0.9
    assert nn.SGD(momentum=0.9).flush_interval() == 157
    assert nn.RMSprop().flush_interval() == 1655  # α = 0.99
    assert nn.RMSprop(momentum=0.5).flush_interval() == 24
    assert nn.Adam(betas=(0.0, 0.999)).flush_interval() == 16627  # m̃ = g: only v decays
    assert nn.SGD(lr=0.1).flush_interval() == 0  # no state, nothing to flush


@pytest.mark.parametrize("make", [
    lambda: nn.SGD(lr=0.0), lambda: nn.SGD(lr=-1.0), lambda: nn.SGD(momentum=1.0),
    lambda: nn.SGD(nesterov=True), lambda: nn.SGD(weight_decay=-0.1),
    lambda: nn.RMSprop(alpha=1.0), lambda: nn.RMSprop(eps=0.0),
    lambda: nn.Adam(betas=(0.9, 1.0)), lambda: nn.AdamW(weight_decay=-1.0),
    lambda: nn.StepDecay(0), lambda: nn.ExponentialDecay(0.0), lambda: nn.CosineDecay(0),
])
def test_bad_hyper_parameters_are_rejected(make):
    with pytest.raises(nn.ConfigError):
        make()


def test_torch_defaults():
    assert nn.RMSprop().config() == {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0,
                                     "weight_decay": 0.0}
    assert nn.Adam().config() == {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8,
                                  "weight_decay": 0.0}
    assert nn.AdamW().config()["weight_decay"] == 1e-2


# -- schedules --------------------------------------------------------------------------


def test_step_decay_closed_form():
    schedule = nn.StepDecay(step_size=3, gamma=0.5)
    got = [schedule(0.1, epoch) for epoch in range(8)]
    assert got == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025], rel=1e-15)


def test_exponential_decay_closed_form():
    schedule = nn.ExponentialDecay(0.9)
    assert [schedule(0.2, epoch) for epoch in range(5)] == pytest.approx(
        [0.2, 0.18, 0.162, 0.1458, 0.13122], rel=1e-14)


def test_cosine_decay_closed_form():
    schedule = nn.CosineDecay(total_epochs=4, min_lr=0.01)
    got = [schedule(0.1, epoch) for epoch in range(7)]
    expected = [0.1, 0.01 + 0.09 * (1 + math.cos(math.pi / 4)) / 2, 0.055,
                0.01 + 0.09 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.01, 0.01, 0.01]
    assert got == pytest.approx(expected, rel=1e-14)
    assert nn.CosineDecay(total_epochs=10)(1.0, 5) == pytest.approx(0.5, rel=1e-15)
