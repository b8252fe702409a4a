"""The fused optimizer kernels: part of backend.py, in their own file so that numba
and CuPy are imported only when a step first needs them (``backend.fused_update``).

An optimizer written with array operations makes about ten passes over θ per step, each
reading and writing θ-sized arrays and allocating a θ-sized temporary; at a few million
parameters the update costs more than the network's matrix products. Here each rule is
one loop over θ: every element read once, its new state and value written once, no
temporaries, the loop split over the cores (numba's ``prange``) or the GPU's threads (a
CuPy ``ElementwiseKernel``). The arithmetic is the optimizer's own update, the equations
of nnscratch/optim.py line for line, in the arrays' dtype (the tests hold the two to
float rounding).

The numba kernels are compiled on first use per dtype, and cached on disk (``cache=True``:
the next process loads them in milliseconds); where no cache directory can be written,
they are compiled in each process instead. Without numba (the ``numba`` extra), the
NumPy backend takes the standard path.
"""

from __future__ import annotations

import math
import threading
import warnings
from typing import Any

try:
    import numba
except ImportError:  # the numba extra is not installed: CuPy's kernels still work
    numba = None

# numba's own thread pool ("workqueue") rather than OpenMP's, unless the user chose one
# (NUMBA_THREADING_LAYER, or numba.config before this import):
# OpenMP's workers spin between parallel regions, and on a machine with few cores they
# took the cores from OpenBLAS's (and back), making a 0.2 ms update 16-24 ms (measured in
# bench/README.md). The workqueue pool must not be entered by two threads at once: the
# lock below serializes the kernels (one training step at a time per process anyway).
if numba is not None and numba.config.THREADING_LAYER == "default":  # not chosen
    numba.config.THREADING_LAYER = "workqueue"
_LOCK = threading.Lock()

# θ of fewer values takes the one-thread loop: handing a pass of < 1 ms to the other
# core's thread and waiting for it costs more than it saves when the cores are busy
# (on a loaded 2-core machine, the threaded loop made the 0.1M-parameter MLP's step slower).
PARALLEL_MIN = 1 << 20


def _compile(function: Any, parallel: bool = True) -> Any:
    """``numba.njit`` (on every core with ``parallel``) with an on-disk cache, or without
    the cache where numba finds no directory it may write (a read-only install, no home
    directory)."""
    # error_model="numpy": x / 0 gives inf or nan, as NumPy's arrays do (numba's default
    # checks every division to raise ZeroDivisionError, which stops the loop from being
    # vectorized: 10-20x slower, measured on 0.2M values)
    options = {"parallel": parallel, "fastmath": False, "nogil": True,
               "error_model": "numpy"}
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
        warnings.warn(f"nnscratch: the fused optimizer kernels cannot be cached ({exc}); "
                      "they are compiled in each process (set NUMBA_CACHE_DIR to a writable "
                      "directory to cache them)", RuntimeWarning, stacklevel=2)
        return numba.njit(cache=False, **options)(function)


def _adam(w: Any, g: Any, m: Any, v: Any, beta1: float, beta2: float, step_size: float,
          step_eps: float, weight_decay: float, shrink: float) -> None:
    for i in numba.prange(w.shape[0]):
        wi = w[i] * shrink                    # AdamW: w ← w (1 − α λ)   (else shrink = 1)
        gi = g[i] + weight_decay * wi         # Adam's L2:  g ← g + λ w  (else λ = 0)
        mi = beta1 * m[i] + gi                # m̃ ← β₁ m̃ + g
        vi = beta2 * v[i] + gi * gi           # ṽ ← β₂ ṽ + g²
        m[i] = mi
        v[i] = vi
        w[i] = wi - step_size * mi / (math.sqrt(vi) + step_eps)  # w ← w − α_t m̃ / (√ṽ + ε_t)


def _sgd(w: Any, g: Any, buffer: Any, lr: float, momentum: float, nesterov: bool,
         weight_decay: float) -> None:
    for i in numba.prange(w.shape[0]):
        gi = g[i] + weight_decay * w[i]       # g ← g + λ w
        if momentum != 0.0:
            bi = momentum * buffer[i] + gi    # b ← μ b + g
            buffer[i] = bi
            gi = gi + momentum * bi if nesterov else bi  # Nesterov: g + μ b;  else b
        w[i] = w[i] - lr * gi                 # w ← w − α g


def _rmsprop(w: Any, g: Any, square_avg: Any, buffer: Any, lr: float, alpha: float,
             eps: float, momentum: float, weight_decay: float) -> None:
    for i in numba.prange(w.shape[0]):
        gi = g[i] + weight_decay * w[i]              # g ← g + λ w
        si = alpha * square_avg[i] + (1 - alpha) * (gi * gi)  # v ← ρ v + (1 − ρ) g²
        square_avg[i] = si
        scaled = gi / (math.sqrt(si) + eps)          # g / (√v + ε)
        if momentum != 0.0:
            bi = momentum * buffer[i] + scaled       # b ← μ b + g / (√v + ε)
            buffer[i] = bi
            w[i] = w[i] - lr * bi                    # w ← w − α b
        else:
            w[i] = w[i] - lr * scaled                # w ← w − α g / (√v + ε)


if numba is not None:
    # (one thread, every core): numba compiles each on its first call, per dtype
    adam = (_compile(_adam, False), _compile(_adam))
    sgd = (_compile(_sgd, False), _compile(_sgd))
    rmsprop = (_compile(_rmsprop, False), _compile(_rmsprop))


def numba_update(rule: str, coefficients: tuple[float, ...], w: Any, g: Any,
                 state: dict[str, Any]) -> None:
    """One optimizer step over the NumPy arrays ``w`` (θ, updated in place), ``g`` (∇θ)
    and ``state`` (the optimizer's θ-sized state arrays, updated in place)."""
    with _LOCK:
        _numba_update(rule, coefficients, w, g, state)


def _numba_update(rule: str, coefficients: tuple[float, ...], w: Any, g: Any,
                  state: dict[str, Any]) -> None:
    scalar = w.dtype.type  # coefficients in θ's dtype: float32 θ computes in float32
    threaded = w.shape[0] >= PARALLEL_MIN
    if rule == "adam":
        adam[threaded](w, g, state["m_scaled"], state["v_scaled"], *map(scalar, coefficients))
    elif rule == "sgd":
        lr, momentum, nesterov, weight_decay = coefficients
        sgd[threaded](w, g, state.get("momentum_buffer", w), scalar(lr), scalar(momentum),
            bool(nesterov), scalar(weight_decay))
    elif rule == "rmsprop":
        rmsprop[threaded](w, g, state["square_avg"], state.get("momentum_buffer", w),
                *map(scalar, coefficients))
    else:
        raise ValueError(f"no fused kernel for the rule {rule!r}")


# -- CuPy: the same loops as elementwise GPU kernels -----------------------------------

# One thread per element of θ; ``W`` (the arrays' float type) keeps the arithmetic in
# float32 for float32 θ, as the standard path on the GPU computes it.
_CUDA_SOURCES = {
    "adam": (
        "W g, W beta1, W beta2, W step_size, W step_eps, W weight_decay, W shrink",
        "W w, W m, W v",
        """
        W wi = w * shrink;
        W gi = g + weight_decay * wi;
        W mi = beta1 * m + gi;
        W vi = beta2 * v + gi * gi;
        m = mi;
        v = vi;
        w = wi - step_size * mi / (sqrt(vi) + step_eps);
        """,
    ),
    "sgd": (
        "W g, W lr, W weight_decay",
        "W w",
        "w = w - lr * (g + weight_decay * w);",
    ),
    "sgd_momentum": (
        "W g, W lr, W momentum, int32 nesterov, W weight_decay",
        "W w, W buffer",
        """
        W gi = g + weight_decay * w;
        W bi = momentum * buffer + gi;
        buffer = bi;
        w = w - lr * (nesterov ? gi + momentum * bi : bi);
        """,
    ),
    "rmsprop": (
        "W g, W lr, W alpha, W eps, W weight_decay",
        "W w, W square_avg",
        """
        W gi = g + weight_decay * w;
        W si = alpha * square_avg + (1 - alpha) * (gi * gi);
        square_avg = si;
        w = w - lr * (gi / (sqrt(si) + eps));
        """,
    ),
    "rmsprop_momentum": (
        "W g, W lr, W alpha, W eps, W momentum, W weight_decay",
        "W w, W square_avg, W buffer",
        """
        W gi = g + weight_decay * w;
        W si = alpha * square_avg + (1 - alpha) * (gi * gi);
        square_avg = si;
        W bi = momentum * buffer + gi / (sqrt(si) + eps);
        buffer = bi;
        w = w - lr * bi;
        """,
    ),
}
_CUDA_KERNELS: dict[str, Any] = {}


def _cuda_kernel(name: str) -> Any:
    kernel = _CUDA_KERNELS.get(name)
    if kernel is None:
        import cupy

        inputs, outputs, body = _CUDA_SOURCES[name]
        kernel = _CUDA_KERNELS[name] = cupy.ElementwiseKernel(
            inputs, outputs, body, f"nnscratch_fused_{name}")
    return kernel


def cupy_update(rule: str, coefficients: tuple[float, ...], w: Any, g: Any,
                state: dict[str, Any]) -> None:
    """``numba_update`` for CuPy arrays: one kernel launch for the whole step."""
    scalar = w.dtype.type  # scalars in θ's dtype, so that ``W`` binds to it alone
    if rule == "adam":
        _cuda_kernel("adam")(g, *map(scalar, coefficients), w, state["m_scaled"],
                             state["v_scaled"])
    elif rule == "sgd":
        lr, momentum, nesterov, weight_decay = coefficients
        if momentum:
            _cuda_kernel("sgd_momentum")(g, scalar(lr), scalar(momentum), int(bool(nesterov)),
                                         scalar(weight_decay), w, state["momentum_buffer"])
        else:
            _cuda_kernel("sgd")(g, scalar(lr), scalar(weight_decay), w)
    elif rule == "rmsprop":
        lr, alpha, eps, momentum, weight_decay = coefficients
        if momentum:
            _cuda_kernel("rmsprop_momentum")(
                g, scalar(lr), scalar(alpha), scalar(eps), scalar(momentum),
                scalar(weight_decay), w, state["square_avg"], state["momentum_buffer"])
        else:
            _cuda_kernel("rmsprop")(g, scalar(lr), scalar(alpha), scalar(eps),
                                    scalar(weight_decay), w, state["square_avg"])
    else:
        raise ValueError(f"no fused kernel for the rule {rule!r}")
