"""Data augmentation: random distortions of a batch of images, resampled on the device.

The course notes' remedy for overfitting that needs no change to the network: train on
new versions of the images, each slightly rotated, shifted, scaled, sheared
(``RandomAffine``) or elastically warped (``ElasticDistortion``, Simard, Steinkraus &
Platt 2003). A transform takes a batch of images of the active backend, ``(N, H, W)``
or ``(N, C, H, W)`` (real floating), and returns a new batch of the same shape and
dtype; the input is never changed. Every image gets its own random transform::

    augment = nn.augment.RandomAffine(rotation=10, translate=0.1, scale=0.1) \\
        + nn.augment.ElasticDistortion(alpha=34, sigma=4)
    model.fit(X_images, y, ..., augment=augment)   # each training batch, freshly drawn

**Coordinates.** A pixel (row i, column j) of an H × W image sits at the centred
coordinates ``x = j − (W − 1)/2`` (to the right), ``y = i − (H − 1)/2`` (down). A
transform is a map ``m`` from the output's coordinates to the input's: output pixel
``u`` takes the input's value at ``m(u)``,

    out(u) = in(m(u)),

read by bilinear interpolation from the four pixels around ``m(u)``, where pixels outside
the image count as 0. A chain ``t₁ + t₂`` (first t₁, then t₂) is ``out(u) =
in(m₁(m₂(u)))``: the maps compose, and the whole chain is ONE resampling of the input
(one gather, no blur piled on blur) — except that an elastic map is known at the pixel
grid only, so a chain resamples again after each ``ElasticDistortion`` that is not last.

**On the device, at once.** The random parameters are drawn on the host from the seeded
``augment`` stream (``nn.seed``; checkpoints keep its position, so a resumed run draws
what an uninterrupted one would), moved to the device (a few numbers per image, and the
elastic field), and the whole batch is resampled with array operations of the standard:
the source coordinates of every output pixel of every image, then the four neighbours'
values by ``take`` on the flattened (zero-bordered) batch. No Python loop over images,
no round trip of the images to the host.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import random
from .backend import check_array, get_backend, namespace
from .errors import ConfigError, DataError, ShapeError
from .layers import Flatten, is_real_number
from .model import Sequential, mlp

Coordinates = tuple[Any, Any]
"""Centred (x, y) coordinate arrays that broadcast to (N, H, W)."""


class Transform:
    """A random distortion of a batch of images; ``t(images)`` applies it, ``t₁ + t₂``
    chains two (first t₁, then t₂: see ``Compose``).

    A subclass implements ``draw(n, height, width, dtype, device)``: it draws the random
    parameters of n images and returns their coordinate map, a function taking the
    output's centred coordinates (x, y) to the input's. ``grid_only`` marks a map that
    is known on the pixel grid only (it can be the first map applied, not a later one).
    """

    grid_only = False

    def draw(self, n: int, height: int, width: int, dtype: Any, device: Any) -> Any:
        raise NotImplementedError

    def __call__(self, images: Any) -> Any:
        return Compose([self])(images)

    def __add__(self, other: Transform) -> Compose:
        if not isinstance(other, Transform):
            return NotImplemented
        return Compose([self, other])


class RandomAffine(Transform):
    """Rotate, shear, scale and shift each image by its own random amounts.

    ``rotation`` and ``shear`` are in degrees, ``translate`` a fraction of the width
    (x) and height (y), ``scale`` a factor. A number d means uniform in [−d, d] (for
    ``scale``: factors in [1 − d, 1 + d]); a pair ``(lo, hi)`` is the range itself
    (``rotation=(90, 90)``: every image a quarter turn). Per image, θ (rotation), φ
    (shear), s (scale) and the shift t = (tₓ, t_y) in pixels give the map from output
    to input coordinates

        m(u) = (1/s) · R(θ) · [[1, tan φ], [0, 1]] · (u − t),
        R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]],

    so the content moves by +t (right, down), grows by s, and turns by θ counter-
    clockwise as the image is displayed (row 0 at the top): θ = 90° is ``rot90``
    (``numpy.rot90(image)``, axes (−2, −1)). Zero ranges (the defaults) are the identity,
    exactly.
    """

    def __init__(self, rotation: float | tuple[float, float] = 0.0,
                 translate: float | tuple[float, float] = 0.0,
                 scale: float | tuple[float, float] | None = None,
                 shear: float | tuple[float, float] = 0.0) -> None:
        self.rotation = _range(rotation, "rotation", "degrees, e.g. rotation=10")
        self.translate = _range(translate, "translate",
                                "a fraction of the image size, e.g. translate=0.1")
        self.shear = _range(shear, "shear", "degrees, e.g. shear=10")
        if not -90 < self.shear[0] <= self.shear[1] < 90:
            raise ConfigError(f"shear={shear!r}: the angles must lie strictly between −90 "
                              "and 90 degrees (tan 90° is infinite)")
        if scale is None:
            self.scale = (1.0, 1.0)
        elif is_real_number(scale):
            if not 0 <= scale < 1:
                raise ConfigError(f"scale={scale!r}: a number d means factors in [1 − d, "
                                  "1 + d], so it must be in [0, 1); or give a pair of "
                                  "factors, e.g. scale=(0.9, 1.1)")
            self.scale = (1.0 - float(scale), 1.0 + float(scale))
        else:
            self.scale = _range(scale, "scale", "a pair of factors, e.g. scale=(0.9, 1.1)")
            if self.scale[0] <= 0:
                raise ConfigError(f"scale={scale!r}: the factors must be positive")

    def draw(self, n: int, height: int, width: int, dtype: Any, device: Any) -> Any:
        """Per image (θ, φ, s, tₓ, t_y), uniform in their ranges; returns the map."""
        backend = get_backend()
        xp = backend.xp
        low = [self.rotation[0], self.shear[0], self.scale[0],
               self.translate[0] * width, self.translate[0] * height]
        high = [self.rotation[1], self.shear[1], self.scale[1],
                self.translate[1] * width, self.translate[1] * height]
        # the parameters' arithmetic in float64 (exact zeros: cos 90° is 6e-17, which
        # vanishes beside a pixel coordinate in float32), the maps in the images' dtype
        unit = backend.asarray(random.uniform((n, 5), 0.0, 1.0, stream="augment"),
                               dtype=xp.float64)
        lo = xp.asarray(low, dtype=xp.float64, device=device)
        span = xp.asarray([h - lo_ for lo_, h in zip(low, high)], dtype=xp.float64,
                          device=device)
        values = lo + span * unit
        theta, phi = values[:, 0] * (math.pi / 180), values[:, 1] * (math.pi / 180)
        inverse_scale, shift_x, shift_y = 1.0 / values[:, 2], values[:, 3], values[:, 4]
        cos, sin, tan = xp.cos(theta), xp.sin(theta), xp.tan(phi)
        # m(u) = A·u + b with A = (1/s)·R(θ)·shear, b = −A·t
        a, b = cos * inverse_scale, (cos * tan - sin) * inverse_scale
        c, d = sin * inverse_scale, (sin * tan + cos) * inverse_scale
        e, f = -(a * shift_x + b * shift_y), -(c * shift_x + d * shift_y)
        coefficients = xp.astype(xp.stack([a, b, c, d, e, f], axis=0), dtype)
        a, b, c, d, e, f = (xp.reshape(coefficients[k, :], (n, 1, 1)) for k in range(6))

        def affine_map(x: Any, y: Any) -> Coordinates:
            return a * x + b * y + e, c * x + d * y + f

        return affine_map

    def __repr__(self) -> str:
        return (f"RandomAffine(rotation={self.rotation}, translate={self.translate}, "
                f"scale={self.scale}, shear={self.shear})")


class ElasticDistortion(Transform):
    """Simard's elastic distortion: each image warped by its own smooth random field.

    Per image, a displacement field of uniform values r(i, j) ∈ [−1, 1] (one for x, one
    for y) is smoothed by a Gaussian of width σ pixels and scaled by α:

        Δ = α · G_H · r · G_Wᵀ,     G_n[i, k] = exp(−(i − k)² / 2σ²) / Σ_m exp(−m² / 2σ²)

    (a separable convolution, written as two matrix products with the n × n matrix G_n;
    the kernel sums to 1, and pixels beyond the border count as 0), and the image is
    read at the displaced positions, m(u) = u + Δ(u). A small σ is noise, a large one
    a near-uniform shift; α sets the size (Simard: σ = 4, α = 34 on 28 × 28 digits).
    ``alpha=0`` is the identity, exactly.

    The field lives on the pixel grid: in a chain, a distortion that is not the last
    is resampled on its own (see the module's docstring).
    """

    grid_only = True

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0) -> None:
        if not is_real_number(alpha) or not alpha >= 0 or not math.isfinite(alpha):
            raise ConfigError(f"alpha must be a finite number >= 0 (pixels), got {alpha!r}")
        if not is_real_number(sigma) or not sigma > 0 or not math.isfinite(sigma):
            raise ConfigError(f"sigma must be a positive number (pixels), got {sigma!r}")
        self.alpha, self.sigma = float(alpha), float(sigma)
        self._kernels: dict[tuple[int, str, str], Any] = {}

    def kernel(self, size: int, dtype: Any, device: Any) -> Any:
        """The (size, size) Gaussian matrix G_size of the docstring, on the device."""
        key = (size, str(dtype), str(device))
        if key not in self._kernels:
            xp = get_backend().xp
            norm = sum(math.exp(-m * m / (2 * self.sigma ** 2)) for m in range(-size, size + 1))
            k = xp.arange(size, dtype=xp.float64, device=device)
            distance = xp.reshape(k, (size, 1)) - xp.reshape(k, (1, size))
            gauss = xp.exp(-(distance * distance) / (2 * self.sigma ** 2)) / norm
            self._kernels[key] = xp.astype(gauss, dtype)
        return self._kernels[key]

    def draw(self, n: int, height: int, width: int, dtype: Any, device: Any) -> Any:
        """Per image the field r (2, H, W), uniform in [−1, 1]; returns the map."""
        backend = get_backend()
        xp = backend.xp
        draw = random.uniform((n, 2, height, width), -1.0, 1.0, stream="augment",
                              dtype="float32" if dtype == xp.float32 else "float64")
        field = backend.asarray(draw, dtype=dtype)
        # G_H · r · G_Wᵀ as two plain matrix products over the whole batch: the rows of
        # every field times G_Wᵀ, then (transposed) its columns times G_Hᵀ
        rows = xp.reshape(field, (n * 2 * height, width)) \
            @ xp.matrix_transpose(self.kernel(width, dtype, device))
        columns = xp.reshape(xp.matrix_transpose(xp.reshape(rows, (n * 2, height, width))),
                             (n * 2 * width, height)) \
            @ xp.matrix_transpose(self.kernel(height, dtype, device))
        smooth = xp.matrix_transpose(xp.reshape(columns, (n, 2, width, height)))
        shift = self.alpha * smooth
        shift_x, shift_y = shift[:, 0, ...], shift[:, 1, ...]

        def elastic_map(x: Any, y: Any) -> Coordinates:
            return x + shift_x, y + shift_y

        return elastic_map

    def __repr__(self) -> str:
        return f"ElasticDistortion(alpha={self.alpha}, sigma={self.sigma})"


class Compose(Transform):
    """Transforms applied one after the other: ``Compose([t₁, t₂])`` is t₂(t₁(images)),
    also written ``t₁ + t₂``. Each draws its parameters in that order; their coordinate
    maps are composed and the batch resampled once (one more time after each elastic
    distortion that is not last, whose field is known on the grid only)."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        flat: list[Transform] = []
        for transform in transforms:
            if not isinstance(transform, Transform):
                raise ConfigError(f"Compose takes transforms (e.g. nn.augment.RandomAffine"
                                  f"(rotation=10)), got {transform!r}")
            flat += transform.transforms if isinstance(transform, Compose) else [transform]
        self.transforms = flat

    def draw(self, n: int, height: int, width: int, dtype: Any, device: Any) -> Any:
        raise NotImplementedError("a Compose resamples through __call__")

    def __call__(self, images: Any) -> Any:
        images = check_array(images, "images")
        xp = namespace(images)
        if images.ndim not in (3, 4):
            raise ShapeError(
                f"augmentation takes a batch of images, (N, H, W) or (N, C, H, W); got shape "
                f"{tuple(images.shape)}. Rows of pixels? Reshape them, e.g. "
                "X.reshape(-1, 28, 28), and start the model with nn.Flatten()")
        if not xp.isdtype(images.dtype, "real floating"):
            raise DataError(f"augmentation takes real floating images, got dtype "
                            f"{images.dtype}; convert them first (e.g. to float32 in [0, 1])")
        n, height, width = images.shape[0], images.shape[-2], images.shape[-1]
        device = images.device
        maps = [(t.draw(n, height, width, images.dtype, device), t.grid_only)
                for t in self.transforms]  # drawn in the order they apply
        passes, current = [], []
        for coordinate_map, grid_only in maps:
            current.append(coordinate_map)
            if grid_only:  # it must be the first map applied: resample after it
                passes.append(current)
                current = []
        if current:
            passes.append(current)
        for group in passes:
            images = _resample(images, group)
        return images

    def __add__(self, other: Transform) -> Compose:
        if not isinstance(other, Transform):
            return NotImplemented
        return Compose([self, other])

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


def _resample(images: Any, maps: list[Any]) -> Any:
    """``out(u) = in(m₁(m₂(…mₖ(u))))``, bilinear, 0 outside the image, for the whole
    batch at once.

    With (x, y) = the composed map's source position in pixel units (column, row), x₀ =
    ⌊x⌋, fₓ = x − x₀ (likewise y₀, f_y):

        out = (1 − f_y)·[(1 − fₓ)·in(y₀, x₀) + fₓ·in(y₀, x₀+1)]
              + f_y·[(1 − fₓ)·in(y₀+1, x₀) + fₓ·in(y₀+1, x₀+1)]

    The batch gets a border of zeros one pixel wide, and positions are clipped to it
    (x ∈ [−1, W]), so every neighbour is a valid index and a position outside the image
    reads zeros; the four neighbours are gathered by ``take`` on the flattened batch.
    """
    xp = namespace(images)
    dtype, device = images.dtype, images.device
    shape = tuple(images.shape)
    n, height, width = shape[0], shape[-2], shape[-1]
    channels = shape[1] if len(shape) == 4 else 1
    x = xp.reshape(xp.arange(width, dtype=dtype, device=device) - (width - 1) / 2,
                   (1, 1, width))
    y = xp.reshape(xp.arange(height, dtype=dtype, device=device) - (height - 1) / 2,
                   (1, height, 1))
    for coordinate_map in reversed(maps):  # the last transform's map meets the grid first
        x, y = coordinate_map(x, y)
    x = xp.clip(x + (width - 1) / 2, -1.0, float(width))
    y = xp.clip(y + (height - 1) / 2, -1.0, float(height))
    x0 = xp.clip(xp.floor(x), -1.0, float(width - 1))  # x = W: x₀ = W − 1, fₓ = 1
    y0 = xp.clip(xp.floor(y), -1.0, float(height - 1))
    fx, fy = x - x0, y - y0
    # index of (y₀, x₀) in the flattened bordered batch, (N, 1, H, W) for all channels
    # (made in floating point, exact: below (H + 2)·(W + 2) ≪ 2²⁴, then one conversion)
    padded_width, plane = width + 2, (height + 2) * (width + 2)
    position = xp.astype((y0 + 1) * padded_width + (x0 + 1), xp.int64)
    position = xp.reshape(position, (n, 1, height, width))
    first = xp.reshape(xp.arange(n * channels, dtype=xp.int64, device=device) * plane,
                       (n, channels, 1, 1))
    index = xp.reshape(first + position, (-1,))
    flat = xp.reshape(_bordered(xp, xp.reshape(images, (n, channels, height, width))), (-1,))

    def neighbour(offset: int) -> Any:  # the pixel `offset` places on: a view, no addition
        return xp.reshape(xp.take(flat[offset:], index), (n, channels, height, width))

    fx = xp.reshape(fx, (n, 1, height, width))
    fy = xp.reshape(fy, (n, 1, height, width))
    gx = 1 - fx
    top = gx * neighbour(0) + fx * neighbour(1)
    bottom = gx * neighbour(padded_width) + fx * neighbour(padded_width + 1)
    out = (1 - fy) * top + fy * bottom
    return xp.reshape(out, shape)


def _bordered(xp: Any, images: Any) -> Any:
    """(N, C, H, W) → (N, C, H + 2, W + 2) with a border of zeros (a new array)."""
    n, channels, height, width = images.shape
    column = xp.zeros((n, channels, height, 1), dtype=images.dtype, device=images.device)
    images = xp.concat([column, images, column], axis=3)
    row = xp.zeros((n, channels, 1, width + 2), dtype=images.dtype, device=images.device)
    return xp.concat([row, images, row], axis=2)


def _range(value: Any, name: str, example: str) -> tuple[float, float]:
    """A number d as (−d, d), a pair (lo, hi) as itself, checked."""
    if is_real_number(value):
        d = float(value)
        if not (d >= 0 and math.isfinite(d)):
            raise ConfigError(f"{name}={value!r}: a number d means uniform in [−d, d], so it "
                              f"must be finite and >= 0 ({example})")
        return (-d, d)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(map(is_real_number, value)):
        lo, hi = float(value[0]), float(value[1])
        if math.isfinite(lo) and math.isfinite(hi) and lo <= hi:
            return (lo, hi)
    raise ConfigError(f"{name}={value!r}: give a number d (uniform in [−d, d]) or a pair "
                      f"(lo, hi) with lo <= hi, in {example}")


@dataclass(frozen=True)
class Recipe:
    """A training run that augmentation suits: the distortions, and the network and
    schedule that can use them (more units and epochs than an MLP trained on the plain
    images needs, since every epoch shows new versions of the digits).

    ``settings`` are the example's flags (``hidden``, ``epochs``, ``batch_size``, ``lr``
    of Adam along a cosine to 0); ``model(sizes)`` builds the MLP of those widths
    behind a ``Flatten``; ``images(X)`` makes rows of square images into images.
    """

    transform: Transform
    settings: dict[str, Any] = field(default_factory=dict)

    def model(self, sizes: Sequence[int]) -> Sequential:
        """``Flatten`` then ``mlp(sizes)``: the MLP, taking images."""
        return Sequential(Flatten(), *mlp(sizes).layers)

    @staticmethod
    def images(rows: Any) -> Any:
        """(N, side²) rows of square images → (N, side, side) (a view where it can)."""
        xp = namespace(rows)
        side = math.isqrt(rows.shape[1])
        if rows.ndim != 2 or side * side != rows.shape[1]:
            raise ShapeError(f"rows of square images expected, got shape {tuple(rows.shape)}")
        return xp.reshape(rows, (rows.shape[0], side, side))


def mnist_recipe() -> Recipe:
    """``examples/mnist.py --augment``: 28 × 28 digits (MNIST, and the other MNIST-
    shaped sets), each training batch rotated (±10°), sheared (±5°), scaled (±10%),
    shifted (±8% of the size) and elastically distorted (α = 30, σ = 4, near Simard's
    34 and 4), an MLP 784-800-800-10 trained 30 epochs by Adam (lr 1e-3 along a cosine
    to 0, batches of 128). What it reaches is in the README."""
    transform = RandomAffine(rotation=10, translate=0.08, scale=0.1, shear=5) \
        + ElasticDistortion(alpha=30, sigma=4)
    return Recipe(transform, {"hidden": [800, 800], "epochs": 30, "batch_size": 128,
                              "lr": 1e-3})


__all__ = ["Compose", "ElasticDistortion", "RandomAffine", "Recipe", "Transform",
           "mnist_recipe"]
