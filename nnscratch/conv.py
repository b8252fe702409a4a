"""Convolution and pooling over batches of images laid out ``(N, C, H, W)``, as PyTorch and
cuDNN lay them out.

A convolution is one matrix product over patches (im2col). Every output pixel is the dot
product of a filter with the kh × kw × C patch of input under it; laying every patch out
as a column turns the whole layer into one product. The standard has no "unfold", but the
patches are kh·kw strided slices of the (padded) input: slice (i, j) holds, for every
output pixel (p, q), the input pixel (s·p + i, s·q + j). Stacking the slices gives the
patch matrix; the backward pass adds the patch gradients back slice by slice (the
standard has no scatter-add either). No Python loop runs over images or pixels, only over
the kh·kw kernel offsets.

Internally the layers compute in the layout ``(C, H, W, N)``, the batch last: the patches
of all images form one matrix ``(C·kh·kw, Ho·Wo·N)``, so the layer is one large product
rather than N small ones, and each strided slice moves runs of N contiguous values. They
hand their outputs on as ``(N, C, H, W)`` views of that layout, so the next such layer
gets its layout back without a copy.

Every accumulating write into a slice goes through ``_add_into``: the one place a library
with immutable arrays (JAX) swaps for a functional update.
"""

from __future__ import annotations

import math
from typing import Any

from .backend import add_at, get_backend, namespace
from .errors import ConfigError, ShapeError
from .init import get_initializer
from .layers import (
    Layer,
    Parameter,
    _check_dtype,
    _check_init,
    _check_size,
    backward_before_forward,
    register_layer,
)
from .parameters import Span


def _add_into(target: Any, key: tuple[Any, ...], values: Any) -> Any:
    """``target[key] += values``, returning the updated ``target``.

    The only write of this module, on arrays the layers allocate themselves (a zero
    gradient, a zero-padded image): in place where the library allows, a new array from
    a functional update where arrays are immutable (JAX's ``target.at[key].add``), as
    ``backend.add_at`` does. Keep the result: ``grad = _add_into(grad, key, part)``.
    """
    return add_at(target, key, values)


def _pair(name: str, value: Any) -> tuple[int, int]:
    """An int, or a pair of ints, as ``(height, width)``; each must be a positive int."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (_check_size(name, value[0]), _check_size(name, value[1]))
    size = _check_size(name, value)
    return (size, size)


def _output_size(size: int, kernel: int, stride: int) -> int:
    """Output length of a window of ``kernel`` sliding by ``stride`` over ``size``."""
    return (size - kernel) // stride + 1


def _window(start: int, count: int, stride: int) -> slice:
    """The ``count`` positions ``start, start + stride, ...`` as a slice that stops at
    the last of them (the standard forbids slicing past the end)."""
    return slice(start, start + stride * (count - 1) + 1, stride)


def _offsets(kernel: tuple[int, int], stride: tuple[int, int], out: tuple[int, int]
             ) -> list[tuple[slice, slice]]:
    """The kh·kw strided slices (rows, columns) of an image whose offset (i, j) picks,
    for every output pixel (p, q), the input pixel (s_h·p + i, s_w·q + j)."""
    return [(_window(i, out[0], stride[0]), _window(j, out[1], stride[1]))
            for i in range(kernel[0]) for j in range(kernel[1])]


def _channels_first(x: Any) -> Any:
    """(N, C, H, W) seen as (C, H, W, N), the layout these layers compute in: a strided
    slice of it moves whole runs of N contiguous values (the batch last), where slicing
    (N, C, H, W) would move a few pixels of a row at a time. Free where the array came
    from one of these layers (``_batch_first``'s view); otherwise one transposing copy,
    made by flattening (a reshape copies only what is not laid out so already)."""
    xp = namespace(x)
    view = xp.permute_dims(x, (1, 2, 3, 0))
    return xp.reshape(xp.reshape(view, (-1,)), tuple(view.shape))


def _batch_first(x: Any) -> Any:
    """(C, H, W, N) seen as (N, C, H, W), without a copy: the layers' output."""
    return namespace(x).permute_dims(x, (3, 0, 1, 2))


def _image_batch(layer: Layer, x: Any, channels: int | None) -> Any:
    """``x`` as (N, C, H, W): a (N, H, W) batch of one-channel images gains its axis."""
    if x.ndim == 3 and channels in (None, 1):
        return namespace(x).reshape(x, (x.shape[0], 1, x.shape[1], x.shape[2]))
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        expected = "(N, C, H, W)" if channels is None else f"(N, {channels}, H, W)"
        raise ShapeError(
            f"{layer!r} expects a batch of images {expected}, got shape {tuple(x.shape)}"
            + (" (rows of pixels? reshape them, e.g. X.reshape(-1, 1, 28, 28))"
               if x.ndim == 2 else ""))
    return x


@register_layer
class Conv2D(Layer):
    """2-D convolution (strictly: cross-correlation, as in every framework):

        y[n, o, p, q] = b[o] + Σ_c Σ_i Σ_j  W[o, c, i, j] · x̄[n, c, s·p + i, s·q + j]

    with x̄ the input zero-padded by ``padding`` on each side, W (out, in, kh, kw) and
    b (out,) in PyTorch's layout. Output size Ho = ⌊(H + 2·pad − kh) / s⌋ + 1 (and so Wo).
    ``padding="same"`` (stride 1 only) pads kh − 1 rows in all, ⌊(kh − 1)/2⌋ on top, so
    the output keeps the input's size.

    As matrices: the patch matrix X (C·kh·kw, Ho·Wo·N) holds every patch as a column (row
    (c, i, j) is slice (i, j) of channel c), W₂ = reshape(W, (out, C·kh·kw)), and

        Y = W₂ X + b 1ᵀ                      (out, Ho·Wo·N)

    With G = ∂L/∂Y in the same layout, the backward pass is two products and a sum:

        ∂L/∂W₂ = G Xᵀ          ∂L/∂b = G 1          ∂L/∂X = W₂ᵀ G

    and ∂L/∂x̄ is ∂L/∂X's row (c, i, j) added into slice (i, j) of channel c, for every
    offset (a pixel under several patches gathers the gradient of each); ∂L/∂x is the
    unpadded part of it.

    ``init`` is called as ``f(C·kh·kw, out)`` (fan in, units), and its matrix's column o
    becomes filter o. The default he_uniform keeps the activations' variance through
    ReLU units.
    """

    takes_images = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, *, init: Any = "he_uniform", dtype: str = "float32") -> None:
        self.in_channels = _check_size("in_channels", in_channels)
        self.out_channels = _check_size("out_channels", out_channels)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.stride = _pair("stride", stride)
        self.padding = self._check_padding(padding)
        self.dtype = _check_dtype(dtype)
        _check_init(init)
        self.init = init if isinstance(init, str) else getattr(init, "__name__", "custom")
        kh, kw = self.kernel_size
        fan_in = in_channels * kh * kw
        weights = get_initializer(init)(fan_in, out_channels)
        if not hasattr(weights, "shape") or tuple(weights.shape) != (fan_in, out_channels):
            raise ConfigError(
                f"initializer {self.init!r} returned "
                f"{tuple(weights.shape) if hasattr(weights, 'shape') else type(weights).__name__}"
                f", expected an array of shape {(fan_in, out_channels)}")
        backend = get_backend()
        xp = backend.xp
        filters = xp.reshape(xp.permute_dims(backend.asarray(weights, dtype=dtype), (1, 0)),
                             (out_channels, in_channels, kh, kw))
        self.weight = Parameter(backend.asarray(filters, dtype=dtype, copy=True), "weight")
        self.bias = Parameter(xp.zeros((out_channels,), dtype=getattr(xp, dtype),
                                       device=backend.device), "bias")
        self._cache: tuple[Any, ...] | None = None
        self._span: Span | None = None  # W₂, a view of θ whose gradient goes into ∇θ

    def _check_padding(self, padding: Any) -> Any:
        if padding == "same":
            if self.stride != (1, 1):
                raise ConfigError(f"padding='same' needs stride 1, got stride {self.stride}; "
                                  "give the padding as a number instead")
            return "same"
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ConfigError(f"padding must be an integer >= 0 or 'same', got {padding!r}")
        return padding

    def _pads(self) -> tuple[int, int, int, int]:
        """Zero rows and columns added (top, bottom, left, right)."""
        if self.padding == "same":
            (kh, kw) = self.kernel_size
            return ((kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2)
        pad = self.padding
        return (pad, pad, pad, pad)

    def _matrix(self) -> Any:
        """W₂ = reshape(W, (out, C·kh·kw)), as a window of θ where the layer is in one
        (its gradient is then written straight into ∇θ)."""
        shape = (self.out_channels, math.prod(self.weight.shape[1:]))
        vector = self.weight.vector
        if vector is None:
            self._span = None
            return namespace(self.weight.value).reshape(self.weight.value, shape)
        if self._span is None or self._span.vector is not vector:
            self._span = vector.span([self.weight], shape)
        return self._span.value

    def forward(self, x: Any, training: bool = False) -> Any:
        x = _image_batch(self, x, self.in_channels)
        xp = namespace(x)
        n, channels, height, width = x.shape
        (kh, kw), stride = self.kernel_size, self.stride
        top, bottom, left, right = self._pads()
        padded_size = (height + top + bottom, width + left + right)
        out = (_output_size(padded_size[0], kh, stride[0]),
               _output_size(padded_size[1], kw, stride[1]))
        if min(out) <= 0:
            raise ShapeError(f"{self!r}: the {height}×{width} input (padded "
                             f"{padded_size[0]}×{padded_size[1]}) is smaller than the kernel")
        image = _channels_first(x)  # (C, H, W, N)
        if top or bottom or left or right:
            zeros = xp.zeros((channels, *padded_size, n), dtype=x.dtype, device=x.device)
            image = _add_into(zeros, (slice(None), slice(top, top + height),
                                      slice(left, left + width), slice(None)), image)
        offsets = _offsets(self.kernel_size, stride, out)
        patches = xp.stack([image[:, rows, cols, :] for rows, cols in offsets], axis=1)
        patches = xp.reshape(patches, (channels * kh * kw, out[0] * out[1] * n))  # X
        product = self._matrix() @ patches  # W₂ X: (out, Ho·Wo·N)
        product += xp.reshape(self.bias.value, (self.out_channels, 1))
        self._cache = (patches, tuple(x.shape), padded_size, out, offsets)
        return _batch_first(xp.reshape(product, (self.out_channels, *out, n)))

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        if self._cache is None:
            raise backward_before_forward(self)
        patches, (n, channels, height, width), padded_size, out, offsets = self._cache
        xp = namespace(grad_output)
        grad = xp.reshape(_channels_first(grad_output),
                          (self.out_channels, out[0] * out[1] * n))  # G
        matrix = self._matrix()
        if self._span is not None:
            self._span.set_grad_product(grad, patches.T)  # ∂L/∂W₂ = G Xᵀ, into ∇θ
        else:
            self.weight.grad = xp.reshape(grad @ patches.T, self.weight.shape)
        self.bias.grad = xp.sum(grad, axis=1)
        if not need_input_grad:
            return None
        kh, kw = self.kernel_size
        grad_patches = xp.reshape(matrix.T @ grad, (channels, kh * kw, *out, n))  # ∂L/∂X
        grad_image = xp.zeros((channels, *padded_size, n), dtype=grad_output.dtype,
                              device=grad_output.device)
        for k, (rows, cols) in enumerate(offsets):
            grad_image = _add_into(grad_image, (slice(None), rows, cols, slice(None)),
                                   grad_patches[:, k, ...])
        top, _, left, _ = self._pads()
        if padded_size != (height, width):
            grad_image = grad_image[:, top:top + height, left:left + width, :]
        return _batch_first(grad_image)

    def parameters(self) -> list[Parameter]:
        return [self.weight, self.bias]

    @staticmethod
    def parameter_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """weight (out, in, kh, kw) and bias (out,) of a Conv2D of this ``config``."""
        in_channels = _check_size("in_channels", config.get("in_channels"))
        out_channels = _check_size("out_channels", config.get("out_channels"))
        kh, kw = _pair("kernel_size", config.get("kernel_size"))
        return {"weight": (out_channels, in_channels, kh, kw), "bias": (out_channels,)}

    def output_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C_out, Ho, Wo) for an input of ``height`` × ``width``."""
        top, bottom, left, right = self._pads()
        return (self.out_channels,
                _output_size(height + top + bottom, self.kernel_size[0], self.stride[0]),
                _output_size(width + left + right, self.kernel_size[1], self.stride[1]))

    def config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding, "init": self.init, "dtype": self.dtype}


class _Pool2D(Layer):
    """A window of kh × kw sliding by the stride (default: the window, so windows tile
    the image without overlap) over each channel; no padding, and rows or columns left
    over at the bottom or right edge are dropped (Ho = ⌊(H − kh) / s⌋ + 1), as PyTorch
    does by default."""

    takes_images = True

    def __init__(self, kernel_size: Any, stride: Any = None) -> None:
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else _pair("stride", stride)
        self._cache: tuple[Any, ...] | None = None

    def _windows(self, x: Any) -> tuple[Any, list[Any]]:
        """``x`` in the layers' layout (C, H, W, N), and the kh·kw strided slices of it
        (each (C, Ho, Wo, N)) whose k-th holds entry k (row-major) of every window."""
        x = _image_batch(self, x, None)
        (kh, kw), stride = self.kernel_size, self.stride
        out = (_output_size(x.shape[2], kh, stride[0]), _output_size(x.shape[3], kw, stride[1]))
        if min(out) <= 0:
            raise ShapeError(f"{self!r}: the {x.shape[2]}×{x.shape[3]} input is smaller "
                             "than the window")
        image = _channels_first(x)
        keys = [(slice(None), rows, cols, slice(None))
                for rows, cols in _offsets(self.kernel_size, stride, out)]
        return image, keys

    def _gradient(self, parts: Any, keys: list[Any], image_shape: tuple[int, ...]) -> Any:
        """∂L/∂x, (N, C, H, W), from the gradient of each window entry: ``parts(k)`` (C,
        Ho, Wo, N) added back into the slice ``keys[k]`` it was taken from."""
        grad = None
        for k, key in enumerate(keys):
            part = parts(k)
            if grad is None:
                grad = namespace(part).zeros(image_shape, dtype=part.dtype, device=part.device)
            grad = _add_into(grad, key, part)
        return _batch_first(grad)

    def output_shape(self, height: int, width: int, channels: int = 1) -> tuple[int, int, int]:
        """(C, Ho, Wo) for ``channels`` maps of ``height`` × ``width``."""
        return (channels, _output_size(height, self.kernel_size[0], self.stride[0]),
                _output_size(width, self.kernel_size[1], self.stride[1]))

    def config(self) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride)}


@register_layer
class MaxPool2D(_Pool2D):
    """The largest value of each window:

        y[n, c, p, q] = max_{i, j} x[n, c, s·p + i, s·q + j]

    ∂L/∂x gets each window's g[n, c, p, q] at one of the window's maxima, the first in
    row-major order when several are equal (as PyTorch does), and nothing elsewhere; a
    pixel that is the chosen maximum of several overlapping windows gathers each one's.

    The maximum is taken entry by entry, y = max(x₀, max(x₁, ...)) over the window's
    kh·kw slices. Backward walks the entries in order, handing the gradient still
    unplaced to entry k where x_k = y, so a tie gives it to the first maximum only.
    """

    def forward(self, x: Any, training: bool = False) -> Any:
        image, keys = self._windows(x)
        xp = namespace(image)
        output = image[keys[0]]
        for key in keys[1:]:
            output = xp.maximum(output, image[key])
        self._cache = (image, keys, output)
        return _batch_first(output)

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        if self._cache is None:
            raise backward_before_forward(self)
        if not need_input_grad:
            return None
        image, keys, output = self._cache
        xp = namespace(grad_output)
        unplaced = _channels_first(grad_output)

        def part(k: int) -> Any:  # entry k's share: what is left where it is the maximum
            nonlocal unplaced
            placed = unplaced * xp.astype(image[keys[k]] == output, unplaced.dtype)
            if k < len(keys) - 1:
                unplaced = unplaced - placed  # exactly 0 where placed, else unchanged
            return placed

        return self._gradient(part, keys, tuple(image.shape))


@register_layer
class AvgPool2D(_Pool2D):
    """The mean of each window of K = kh·kw values:

        y[n, c, p, q] = (1/K) Σ_{i, j} x[n, c, s·p + i, s·q + j]

    so each pixel of a window gets g[n, c, p, q] / K, summed over the windows it is in.
    """

    def forward(self, x: Any, training: bool = False) -> Any:
        image, keys = self._windows(x)
        total = image[keys[0]]
        for key in keys[1:]:
            total = total + image[key]
        self._cache = (keys, tuple(image.shape))
        return _batch_first(total / len(keys))

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        if self._cache is None:
            raise backward_before_forward(self)
        if not need_input_grad:
            return None
        keys, image_shape = self._cache
        share = _channels_first(grad_output) / len(keys)
        return self._gradient(lambda k: share, keys, image_shape)


CNN_TRAINING = {"epochs": 12, "lr": 2e-3, "batch_size": 128}
"""What ``cnn()``'s network is trained with in ``examples/mnist.py --model cnn``: Adam at
this rate, decayed along a cosine to 0 over the epochs, in batches of this size."""


def cnn(input_shape: tuple[int, int, int] = (1, 28, 28), classes: int = 10,
        channels: tuple[int, ...] = (16, 32), kernel_size: int = 5, hidden: int = 128,
        dropout: float = 0.25, dtype: str = "float32") -> Any:
    """A small convolutional network for images of ``input_shape`` (C, H, W): per entry
    of ``channels``, a stage

        Conv2D(k × k, no padding) → BatchNorm → ReLU → MaxPool2D(2)

    then ``Flatten`` → ``Dense(hidden)`` → ReLU → ``Dropout(dropout)`` → ``Dense(classes)``
    (logits, for ``SoftmaxCrossEntropy``). On 28 × 28 digits the default is
    28 → 24 → 12 → 8 → 4: 32·4·4 = 512 features into the dense head. Train it with
    ``CNN_TRAINING``'s settings.
    """
    from .activations import ReLU
    from .layers import Dense, Dropout, Flatten
    from .model import Sequential
    from .normalization import BatchNorm

    depth, height, width = (int(size) for size in input_shape)
    layers: list[Layer] = []
    for width_out in channels:
        conv = Conv2D(depth, width_out, kernel_size, init="he_uniform", dtype=dtype)
        depth, height, width = conv.output_shape(height, width)
        if min(height, width) < 2:
            raise ConfigError(f"images of {tuple(input_shape)} are too small for "
                              f"{len(channels)} stages of {kernel_size}×{kernel_size} "
                              "convolutions and 2×2 pooling; use fewer channels entries")
        height, width = height // 2, width // 2
        layers += [conv, BatchNorm(depth, dtype=dtype), ReLU(), MaxPool2D(2)]
    layers += [Flatten(), Dense(depth * height * width, hidden, init="he_normal", dtype=dtype),
               ReLU(), Dropout(dropout), Dense(hidden, classes, dtype=dtype)]
    return Sequential(*layers)


def image_side(model: Any, largest: int = 512) -> int | None:
    """The side of the square images a convolutional ``model`` takes (its first layer a
    ``Conv2D``): the one whose feature maps, through its convolutions and poolings,
    flatten to the width its first ``Dense`` expects; None if no side up to ``largest``
    does (or the model does not start with a convolution)."""
    from .layers import Dense

    if not model.layers or not isinstance(model.layers[0], Conv2D):
        return None
    for side in range(1, largest + 1):
        shape = (model.layers[0].in_channels, side, side)
        for layer in model.layers:
            if isinstance(layer, (Conv2D, _Pool2D)):
                shape = (layer.output_shape(shape[1], shape[2]) if isinstance(layer, Conv2D)
                         else layer.output_shape(shape[1], shape[2], shape[0]))
                if min(shape) <= 0:
                    break
            elif isinstance(layer, Dense):
                if layer.in_features == math.prod(shape):
                    return side
                break
    return None
