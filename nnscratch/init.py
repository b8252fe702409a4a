"""Weight initializers.

Each initializer returns the starting weights of a ``(fan_in, fan_out)`` matrix as
samples drawn on the host from the seeded ``init`` stream (see ``nnscratch.random``),
so one seed gives one network on every backend. ``fan_in`` is the number of inputs of
a unit, ``fan_out`` the number of units.

=================  ==========================================  ==============================
name               distribution                                rationale
=================  ==========================================  ==============================
zeros              W = 0                                       biases only (symmetric!)
normal             W ~ N(0, std²), std = 0.01                  the course notes' 0.01·randn
glorot_uniform     W ~ U(−a, a),  a = √(6 / (fan_in+fan_out))  Glorot & Bengio 2010: keeps
glorot_normal      W ~ N(0, 2 / (fan_in+fan_out))              activation variance for tanh
he_uniform         W ~ U(−a, a),  a = √(6 / fan_in)            He et al. 2015: keeps variance
he_normal          W ~ N(0, 2 / fan_in)                        through ReLU units
=================  ==========================================  ==============================

The notes' ``0.01·randn`` is kept, but it is not the default: with such small weights
a sigmoid network starts with every unit near 0.5 and the XOR network stalls there.
``glorot_uniform`` (the default of ``Dense``) starts the same network where it learns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from . import random
from .errors import ConfigError

Initializer = Callable[[int, int], Any]


def zeros(fan_in: int, fan_out: int) -> Any:
    """All zeros (the usual start for biases)."""
    return random.constant((fan_in, fan_out), 0.0)


def normal(fan_in: int, fan_out: int, std: float = 0.01) -> Any:
    """N(0, std²); with the default std this is the course notes' ``0.01 * randn``."""
    return random.normal((fan_in, fan_out), std)


def glorot_uniform(fan_in: int, fan_out: int) -> Any:
    """U(−a, a) with a = √(6 / (fan_in + fan_out)) (Xavier uniform)."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return random.uniform((fan_in, fan_out), -limit, limit)


def glorot_normal(fan_in: int, fan_out: int) -> Any:
    """N(0, 2 / (fan_in + fan_out)) (Xavier normal)."""
    return random.normal((fan_in, fan_out), math.sqrt(2.0 / (fan_in + fan_out)))


def he_uniform(fan_in: int, fan_out: int) -> Any:
    """U(−a, a) with a = √(6 / fan_in) (Kaiming uniform, for ReLU)."""
    limit = math.sqrt(6.0 / fan_in)
    return random.uniform((fan_in, fan_out), -limit, limit)


def he_normal(fan_in: int, fan_out: int) -> Any:
    """N(0, 2 / fan_in) (Kaiming normal, for ReLU)."""
    return random.normal((fan_in, fan_out), math.sqrt(2.0 / fan_in))


INITIALIZERS: dict[str, Initializer] = {
    "zeros": zeros,
    "normal": normal,
    "glorot_uniform": glorot_uniform,
    "xavier_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "xavier_normal": glorot_normal,
    "he_uniform": he_uniform,
    "kaiming_uniform": he_uniform,
    "he_normal": he_normal,
    "kaiming_normal": he_normal,
}


def get_initializer(spec: str | Initializer) -> Initializer:
    """Look an initializer up by name, or accept any ``f(fan_in, fan_out)``."""
    if callable(spec):
        return spec
    if spec in INITIALIZERS:
        return INITIALIZERS[spec]
    raise ConfigError(
        f"unknown initializer {spec!r}; choose one of {', '.join(sorted(INITIALIZERS))}, "
        "or pass a function f(fan_in, fan_out) returning an array of that shape"
    )
