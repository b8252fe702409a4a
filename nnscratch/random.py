"""Seeded random numbers, made on the host and moved to the device.

The Array API standard has no random numbers, and every library draws differently.
So every random number nnscratch uses (initial weights, shuffles, dropout masks, the
distortions of data augmentation) comes from a NumPy ``Generator(PCG64(...))`` on the
host: the same seed gives the same network and the same training run on every backend.

``nn.seed(n)`` resets the four independent streams below; each is its own PCG64
generator seeded from ``(n, stream number)``, so drawing more dropout masks never
changes the shuffles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

STREAMS = ("init", "shuffle", "dropout", "augment")

# While a training step is being traced for compilation (nnscratch.compile), the function
# that turns a host draw into an argument of the step; None otherwise.
_traced_draws: Callable[[Callable[[], np.ndarray], tuple[int, ...], Any], Any] | None = None

_seed = 0
_generators: dict[str, np.random.Generator] = {}


def seed(value: int) -> None:
    """Seed every random stream of nnscratch: initial weights, shuffles, dropout masks,
    augmentation."""
    global _seed
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        from .errors import ConfigError

        raise ConfigError(f"seed must be a non-negative integer, got {value!r}")
    _seed = int(value)
    _generators.clear()


def make_generator(seed_value: int, stream: str = "shuffle") -> np.random.Generator:
    """A fresh generator for ``stream`` from an explicit seed (e.g. ``fit(seed=...)``)."""
    return np.random.Generator(np.random.PCG64([int(seed_value), STREAMS.index(stream)]))


def generator(stream: str) -> np.random.Generator:
    """The shared generator of one stream, created from the current seed on first use."""
    if stream not in _generators:
        _generators[stream] = make_generator(_seed, stream)
    return _generators[stream]


def get_state() -> dict:
    """The seed and the position of every stream drawn from so far, as plain JSON data:
    a checkpoint keeps it, so that a resumed run draws the same numbers (e.g. dropout
    masks) as an uninterrupted one."""
    return {"seed": _seed,
            "streams": {name: gen.bit_generator.state for name, gen in _generators.items()}}


def set_state(state: dict) -> None:
    """Put every stream back where ``get_state`` saw it; a malformed state raises
    ``ConfigError`` and changes nothing."""
    from .errors import ConfigError

    try:
        value, streams = state["seed"], state["streams"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 \
                or not isinstance(streams, dict) or not set(streams) <= set(STREAMS):
            raise ValueError("unexpected seed or stream names")
        restored = {}
        for name, position in streams.items():
            bits = np.random.PCG64()
            bits.state = position  # checks the algorithm and the fields
            restored[name] = np.random.Generator(bits)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"not a random state saved by nnscratch.random.get_state: {exc}") \
            from exc
    global _seed
    _seed = value
    _generators.clear()
    _generators.update(restored)


def constant(shape: tuple[int, ...], value: float) -> np.ndarray:
    """A host float64 array filled with ``value`` (draws nothing)."""
    return np.full(shape, value, dtype=np.float64)


def normal(shape: tuple[int, ...], std: float = 1.0, stream: str = "init") -> np.ndarray:
    """Host float64 samples of N(0, std²) from the named stream."""
    return generator(stream).normal(0.0, std, size=shape)


def uniform(shape: tuple[int, ...], low: float, high: float, stream: str = "init",
            dtype: str = "float64") -> np.ndarray:
    """Host samples of U(low, high) from the named stream, float64 (or float32: drawn
    as such, half the bits and time, for many numbers that float32 data will use)."""
    if dtype == "float32":
        unit = generator(stream).random(size=shape, dtype=np.float32)
        return unit * np.float32(high - low) + np.float32(low)
    return generator(stream).uniform(low, high, size=shape)


def permutation(n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """A host int64 permutation of range(n), from ``rng`` or the shuffle stream."""
    return (rng or generator("shuffle")).permutation(n).astype(np.int64)


def bernoulli(shape: tuple[int, ...], keep_probability: float) -> np.ndarray:
    """Host boolean mask, True with probability ``keep_probability`` (dropout stream)."""
    return generator("dropout").random(size=shape) < keep_probability


def on_device(draw: Callable[[], np.ndarray], shape: tuple[int, ...], dtype: Any) -> Any:
    """``draw()`` (host numbers of shape ``shape`` from a seeded stream) as an array of
    the active backend, in ``dtype``.

    In a training step being compiled (``fit(compile=True)``), the numbers cannot be
    drawn inside the trace (they would be baked in as constants): the draw becomes an
    argument of the compiled step, made by the same ``draw`` on the host before every
    call, in the same order as an eager step makes it, so both see the same numbers.
    """
    if _traced_draws is not None:
        return _traced_draws(draw, shape, dtype)
    from .backend import get_backend

    return get_backend().asarray(draw(), dtype=dtype)
