"""The fused optimizer step (backend.fused_update, kernels in nnscratch/_fused.py) against
the standard path, the optimizers' own ``update`` (NNSCRATCH_FUSED=0): the same θ and the
same state to float rounding, for every optimizer and option, step after step.

The fused kernels run on NumPy arrays with numba installed, and on CuPy arrays (a GPU:
bench/gpu.sh runs this file there); these tests build their models on the numpy (or
cupy) backend whatever the session's backend, and check that other arrays take the
standard path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import _fused as fused
from nnscratch import backend as backend_module
from nnscratch.errors import BackendError

NEEDS_NUMBA = pytest.mark.skipif(fused.numba is None, reason="the fused NumPy kernels need "
                                 "numba (pip install 'nnscratch[numba]')")

OPTIMIZERS = {
    "sgd": lambda: nn.SGD(lr=0.1),
    "sgd weight decay": lambda: nn.SGD(lr=0.1, weight_decay=0.05),
    "sgd momentum": lambda: nn.SGD(lr=0.05, momentum=0.9),
    "sgd nesterov + decay": lambda: nn.SGD(lr=0.05, momentum=0.8, nesterov=True,
                                           weight_decay=0.01),
    "rmsprop": lambda: nn.RMSprop(lr=0.01),
    "rmsprop momentum + decay": lambda: nn.RMSprop(lr=0.01, alpha=0.9, momentum=0.5,
                                                   weight_decay=0.1),
    "adam": lambda: nn.Adam(lr=0.01),
    "adam L2": lambda: nn.Adam(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
    "adamw": lambda: nn.AdamW(lr=0.01, weight_decay=0.2),
}


class Counting:
    """Counts the fused steps taken (``fused.numba_update``, or ``cupy_update``, wrapped)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str = "numba_update") -> None:
        self.calls = 0
        original = getattr(fused, name)

        def counted(*args):
            self.calls += 1
            return original(*args)

        monkeypatch.setattr(fused, name, counted)


def train(make, dtype: str, fused_on: bool, monkeypatch, steps: int = 12,
          backend: str = "numpy"):
    """A 6-9-4 network trained ``steps`` steps on ``backend``; θ and the state (host)."""
    monkeypatch.setenv("NNSCRATCH_FUSED", "1" if fused_on else "0")
    with nn.use_backend(backend):
        nn.seed(3)
        model = nn.Sequential(nn.Dense(6, 9, dtype=dtype), nn.Tanh(),
                              nn.Dense(9, 4, dtype=dtype))
        optimizer = make()
        rng = np.random.default_rng(1)
        X = rng.standard_normal((steps * 8, 6)).astype(dtype)
        y = rng.integers(0, 4, steps * 8)
        model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=1,
                  batch_size=8, shuffle=False, verbose=0)
        vector = model.parameters().vector
        return (nn.to_numpy(vector.value),
                {name: nn.to_numpy(a) for name, a in optimizer.state[vector].items()})


def compare(case: str, dtype: str, monkeypatch, backend: str, kernel: str) -> None:
    counter = Counting(monkeypatch, kernel)
    theta_fused, state_fused = train(OPTIMIZERS[case], dtype, True, monkeypatch,
                                     backend=backend)
    assert counter.calls == 12  # every step took the fused loop
    theta_reference, state_reference = train(OPTIMIZERS[case], dtype, False, monkeypatch,
                                             backend=backend)
    assert counter.calls == 12  # ... and none with NNSCRATCH_FUSED=0
    with nn.use_backend("numpy"):
        nn.seed(3)
        initial = nn.Sequential(nn.Dense(6, 9, dtype=dtype), nn.Tanh(),
                                nn.Dense(9, 4, dtype=dtype)).parameters().vector.value
    assert np.abs(theta_reference - initial).max() > 1e-3  # the weights moved
    # the loop rounds at other points than the array operations: a few roundings apart
    tolerance = {"float32": 2e-6, "float64": 1e-13}[dtype]
    assert theta_fused.dtype == theta_reference.dtype == np.dtype(dtype)
    np.testing.assert_allclose(theta_fused, theta_reference, rtol=tolerance, atol=tolerance)
    assert state_fused.keys() == state_reference.keys()
    for name in state_reference:
        scale = np.abs(state_reference[name]).max()
        np.testing.assert_allclose(state_fused[name], state_reference[name],
                                   rtol=20 * tolerance, atol=20 * tolerance * scale)


@NEEDS_NUMBA
@pytest.mark.parametrize("threads", ["one thread", "every core"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(OPTIMIZERS))
def test_the_fused_step_is_the_standard_step(case, dtype, threads, monkeypatch):
    if threads == "every core":  # the threaded loop, otherwise taken from 1M values on
        monkeypatch.setattr(fused, "PARALLEL_MIN", 0)
    compare(case, dtype, monkeypatch, "numpy", "numba_update")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(OPTIMIZERS))
def test_the_cupy_kernel_is_the_standard_step(case, dtype, monkeypatch):
    try:
        nn.use_backend("cupy")
    except BackendError as exc:
        pytest.skip(f"CuPy's fused kernels need a CUDA device: {exc}")
    compare(case, dtype, monkeypatch, "cupy", "cupy_update")


@NEEDS_NUMBA
def test_vanishing_state_is_still_flushed_on_the_fused_path(monkeypatch):
    """One gradient, then zeros, for 800 steps: m̃ decays as 0.1 · 0.9ᵗ, below the flush
    threshold (smallest_normal · 2²⁴ ≈ 2e-31) from t ≈ 650, still a normal number at 800
    (≈ 5e-38); the flush at step 785 (every 157 steps for β₁ = 0.9) sets it to 0."""
    monkeypatch.setenv("NNSCRATCH_FUSED", "1")
    counter = Counting(monkeypatch)
    with nn.use_backend("numpy"):
        model = nn.Sequential(nn.Dense(3, 2))
        params = model.parameters()
        optimizer = nn.Adam(lr=0.01)
        for step in range(800):
            for param in params:
                param.grad = np.full(param.shape, 0.1 if step == 0 else 0.0, np.float32)
            optimizer.step(params)
            if step == 783:
                before_flush = np.array(optimizer.state[params.vector]["m_scaled"])
    assert counter.calls == 800
    assert np.all(before_flush > 0)
    assert np.all(optimizer.state[params.vector]["m_scaled"] == 0)
    assert np.all(optimizer.state[params.vector]["v_scaled"] > 0)  # v decays slowly


@NEEDS_NUMBA
def test_an_override_of_update_is_not_replaced_by_the_fused_loop(monkeypatch):
    class Halved(nn.SGD):
        def update(self, param, w, g):
            super().update(param, w, g * 0.5)

    counter = Counting(monkeypatch)
    theta_halved, _ = train(lambda: Halved(lr=0.1), "float64", True, monkeypatch, steps=1)
    theta_half_lr, _ = train(lambda: nn.SGD(lr=0.05), "float64", False, monkeypatch, steps=1)
    assert counter.calls == 0
    np.testing.assert_allclose(theta_halved, theta_half_lr, rtol=1e-15)


@NEEDS_NUMBA
def test_what_the_fused_loop_takes(monkeypatch):
    monkeypatch.setenv("NNSCRATCH_FUSED", "1")
    rule = ("sgd", (0.5, 0.0, 0.0, 0.0))
    w, g = np.ones(8, dtype=np.float32), np.full(8, 2.0, dtype=np.float32)
    assert backend_module.fused_update(rule, w, g, {})
    np.testing.assert_array_equal(w, 0.0)  # w − 0.5 · 2
    assert not backend_module.fused_update(None, w, g, {})  # no fused form
    assert not backend_module.fused_update(rule, w[::2], g[::2], {})  # not contiguous
    assert not backend_module.fused_update(rule, w, g.astype(np.float64), {})  # mixed dtypes
    assert not backend_module.fused_update(rule, w.astype(np.int32), g.astype(np.int32), {})
    assert not backend_module.fused_update(rule, w, g[:4], {})  # mismatched sizes
    frozen = np.ones(8, dtype=np.float32)
    frozen.flags.writeable = False
    assert not backend_module.fused_update(rule, frozen, g, {})
    monkeypatch.setenv("NNSCRATCH_FUSED", "0")
    assert not backend_module.fused_update(rule, w, g, {})
    np.testing.assert_array_equal(w, 0.0)  # untouched by the refused calls


@pytest.mark.parametrize("name", ["torch", "array_api_strict"])
def test_other_backends_take_the_standard_path(name):
    pytest.importorskip(name, reason=f"{name} is not installed")
    with nn.use_backend(name) as backend:
        w = backend.asarray(np.ones(4), dtype="float32")
        g = backend.asarray(np.ones(4), dtype="float32")
        assert not backend_module.fused_update(("sgd", (0.5, 0.0, 0.0, 0.0)), w, g, {})
        np.testing.assert_array_equal(backend.to_numpy(w), 1.0)


@NEEDS_NUMBA
def test_without_a_writable_cache_the_kernels_are_compiled_per_process(monkeypatch):
    """numba raises RuntimeError at decoration when it finds no cache directory it may
    write; the kernels are then compiled without the cache, with a warning."""
    original = fused.numba.njit

    def njit(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function '_sgd': no locator available")
        return original(*args, **kwargs)

    monkeypatch.setattr(fused.numba, "njit", njit)
    with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR"):
        kernel = fused._compile(fused._sgd, parallel=False)
    w, g = np.ones(4), np.full(4, 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernel(w, g, w, 0.5, 0.0, False, 0.0)
    np.testing.assert_array_equal(w, -0.5)
