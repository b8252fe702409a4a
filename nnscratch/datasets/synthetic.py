"""Small synthetic datasets for examples and tests: the XOR truth table and the spiral.

Both are made on the host with NumPy (the one place, beside the backend boundary, where
nnscratch may use it): random numbers come from ``Generator(PCG64(seed))``, so one seed
gives one dataset everywhere.
"""

from __future__ import annotations

import numpy as np

from nnscratch.errors import ConfigError


def make_xor() -> tuple[np.ndarray, np.ndarray]:
    """The XOR truth table: ``X`` (4, 2) float32 with rows 00, 01, 10, 11 and ``y`` (4, 1)
    float32 with 0, 1, 1, 0, the classic problem a single layer cannot solve."""
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    y = np.array([[0.0], [1.0], [1.0], [0.0]], dtype=np.float32)
    return X, y


def make_spiral(points_per_class: int = 100, classes: int = 3, noise: float = 0.2,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved spiral arms, one per class (the CS231n toy problem), not linearly
    separable.

    Arm ``k`` has ``points_per_class`` points at radius ``r`` evenly spaced in [0, 1] and
    angle ``θ = 4(k + r) + noise·N(0, 1)``, placed at ``(r sin θ, r cos θ)``. Returns ``X``
    (n, 2) float32 and integer labels ``y`` (n,) int64, n = points_per_class · classes,
    ordered class by class.
    """
    for name, value in (("points_per_class", points_per_class), ("classes", classes)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if not noise >= 0.0:
        raise ConfigError(f"noise must be >= 0, got {noise!r}")
    rng = np.random.Generator(np.random.PCG64(seed))
    radius = np.linspace(0.0, 1.0, points_per_class)
    features, labels = [], []
    for label in range(classes):
        angle = np.linspace(4.0 * label, 4.0 * (label + 1), points_per_class)
        angle = angle + noise * rng.standard_normal(points_per_class)
        features.append(np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1))
        labels.append(np.full(points_per_class, label, dtype=np.int64))
    return np.concatenate(features).astype(np.float32), np.concatenate(labels)


__all__ = ["make_spiral", "make_xor"]
