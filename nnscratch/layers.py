"""Layers: the building blocks of a network, each with its forward and backward pass.

Every layer maps a batch ``x`` of shape ``(batch, features)`` to an output, and in
``backward`` maps the gradient of the loss with respect to that output, ``g = ∂L/∂y``,
to the gradient with respect to its input, ``∂L/∂x``, filling its parameters'
gradients on the way. A layer caches in ``forward(x, training=True)`` what its
``backward`` needs; ``backward`` must follow the ``forward`` it differentiates (before
any forward, it raises ``StateError``).

The arithmetic uses only the Array API standard, through the namespace of the arrays.

Before ``fit``, ``evaluate`` and ``predict`` touch a model, ``check_model`` checks that it
has layers and that its parameters live on the active backend (once per call, never per
step).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from . import random
from .backend import (
    active_placement,
    describe_placement,
    get_backend,
    namespace,
    placement,
    use_backend_call,
)
from .errors import BackendError, ConfigError, ShapeError, StateError
from .init import INITIALIZERS, get_initializer
from .parameters import Parameter, Span

DTYPES = ("float32", "float64")

LAYERS: dict[str, type[Layer]] = {}
"""The layer classes a checkpoint can name, by class name (see ``register_layer``)."""


class Layer:
    """Base class. Subclasses implement ``forward`` and ``backward``.

    Two class attributes tell a model what input its first layers take:
    ``takes_images`` (the layer accepts a batch of images, ``(N, H, W)`` or
    ``(N, C, H, W)``, not only ``(N, features)`` rows) and ``keeps_size`` (the layer
    leaves the number of values per sample as it is, e.g. an activation or ``Flatten``,
    so a ``Dense`` after it still tells the width the model's input must have).

    One code path serves every backend, JAX's immutable arrays and a compiled step
    included (``fit(compile=...)``): change stored arrays by assignment
    (``self.running_mean *= m`` keeps the result; never ``x[...] = v``, see
    ``backend.set_all``), read no values to the host inside ``forward``/``backward``
    (``float(x)``), name in ``state_attributes`` the arrays besides the parameters that a
    training step changes, and draw random numbers through ``random.on_device``.
    """

    takes_images = False
    keeps_size = False
    state_attributes: tuple[str, ...] = ()  # arrays a training step changes, besides the
    # parameters (e.g. running statistics): a compiled step takes and returns them

    def forward(self, x: Any, training: bool = False) -> Any:
        raise NotImplementedError

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        """Return ∂L/∂x given ∂L/∂y. With ``need_input_grad=False`` (the first layer of
        a network, whose input is data) a layer may skip that product and return None."""
        raise NotImplementedError

    def parameters(self) -> list[Parameter]:
        return []

    def regularization_loss(self) -> Any:
        """The penalty this layer adds to the loss (L1/L2 on weights); 0 by default."""
        return 0.0

    def state(self) -> dict[str, Any]:
        """Arrays the layer computes with that are not trained, by name (e.g.
        ``BatchNorm``'s running statistics): checkpoints save them beside the parameters
        and a data-parallel ``fit`` starts every rank from rank 0's. None by default."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Put back what ``state()`` returned: the same names and shapes, arrays of the
        active backend."""
        self._check_state(state)

    def _check_state(self, state: dict[str, Any]) -> None:
        current = self.state()
        if set(state) != set(current):
            raise ConfigError(f"{self!r} keeps the state {sorted(current)}, got "
                              f"{sorted(state)}")
        for name, array in state.items():
            if tuple(array.shape) != tuple(current[name].shape):
                raise ShapeError(f"{self!r}: state {name!r} has shape "
                                 f"{tuple(current[name].shape)}, got {tuple(array.shape)}")

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this layer (saved in checkpoints)."""
        return {}

    def __call__(self, x: Any, training: bool = False) -> Any:
        return self.forward(x, training)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.config().items())
        return f"{type(self).__name__}({args})"


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Let checkpoints save and rebuild your own ``Layer`` subclass (by its class name).

    Its ``config()`` must return JSON-serializable constructor keyword arguments, and its
    parameters need distinct ``name``s. Usable as a class decorator. If the layer has
    parameters, give it a static (or class) method ``parameter_shapes(config)`` returning
    ``{parameter name: shape}``: loading then checks a file's tensors against its config
    before building the layer, as for ``Dense``; without it, the layer is built from the
    file's config first.
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise ConfigError(f"register_layer takes a Layer subclass, got {cls!r}")
    LAYERS[cls.__name__] = cls
    return cls


LAYER_ORDER = ("call forward(x, training=True) first, then backward with the gradient of "
               "its output")


def backward_before_forward(owner: Any, order: str = LAYER_ORDER) -> StateError:
    """The error of a ``backward`` with no ``forward`` to differentiate: the values it
    needs (the input, the output, the mask) are cached by that forward pass."""
    name = type(owner).__name__
    return StateError(
        f"{name}.backward was called before {name}.forward, whose cached values it needs: "
        f"{order}"
    )


def is_real_number(value: Any) -> bool:
    """True for ints and floats (NumPy's included); False for bools, strings, arrays."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_number(what: str, value: Any, *, positive: bool = False, hint: str = "") -> float:
    """``value`` as a float, if it is a finite real number ``>= 0`` (``> 0`` with
    ``positive``); otherwise ``ConfigError`` saying what is expected."""
    if not (is_real_number(value) and math.isfinite(value)
            and (value > 0 if positive else value >= 0)):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{what} must be a finite number {bound}, got {value!r}{hint}")
    return float(value)


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_dtype(dtype: Any) -> str:
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of the names {DTYPES}, got {dtype!r}; pass the "
                          "name as a string, e.g. dtype='float32'")
    return dtype


def _check_init(init: Any) -> None:
    if not (isinstance(init, str) or callable(init)):
        raise ConfigError(
            f"init must be an initializer name ({', '.join(sorted(INITIALIZERS))}) or a "
            f"function f(fan_in, fan_out) returning the weights, got {init!r}"
        )


# -- a model's layers, before fit, evaluate or predict -----------------------------------


def check_model(model: Any, action: str) -> None:
    """What ``fit``, ``evaluate`` and ``predict`` (the ``action``) check first, once per
    call: the model has layers, and its parameters live on the active backend, the library
    and device that the data will be moved to.

    A model computes where its parameters live. Built on NumPy and used after
    ``nn.use_backend("torch")``, it would fail deep inside the arithmetic, or compute on
    the old backend and silently return arrays of the new one. θ holds every parameter
    of a model, so this looks at one array (at each parameter where no θ holds them).
    """
    if not model.layers:
        raise ConfigError(
            f"cannot {action} an empty Sequential: add layers first, e.g. "
            "nn.Sequential(nn.Dense(4, 3)) or model.add(nn.Dense(4, 3))"
        )
    vector = model.parameters().vector
    where = placement(vector.value) if vector is not None else parameters_placement(model.layers)
    active = active_placement()
    if where is not None and where != active:
        library, device = active
        raise BackendError(
            f"this model's parameters are {describe_placement(where)}, but the active "
            f"backend is {library} on {device} (a model computes where its parameters "
            f"live). Switch back with {use_backend_call(where)}, or move the model to "
            f"{library}: nn.save(model, path), then nn.load(path) with {library} active "
            f"(or build the model again after {use_backend_call(active)})"
        )


def parameters_placement(layers: Sequence[Layer]) -> tuple[str | None, str] | None:
    """The library and device (``backend.placement``) of every parameter of ``layers``,
    None when they have no parameters; ``BackendError`` when they are not all on one
    (layers built under two backends cannot compute together)."""
    first = None
    for index, layer in enumerate(layers):
        for param in layer.parameters():
            where = placement(param.value)
            if first is None:
                first = index, layer, where
            elif where != first[2]:
                first_index, first_layer, first_where = first
                raise BackendError(
                    f"the layers are on different backends: layer {first_index} "
                    f"({first_layer!r}) holds {describe_placement(first_where)}, layer "
                    f"{index} ({layer!r}) holds {describe_placement(where)}; build every "
                    "layer with one backend active (nn.use_backend), or nn.save each model "
                    "and nn.load it under the backend you want"
                )
    return None if first is None else first[2]


@register_layer
class Dense(Layer):
    """Fully connected layer, batch first: ``y = x W + b``.

    Shapes: x (n, in), W (in, out), b (out,), y (n, out). With g = ∂L/∂y:

        ∂L/∂W = xᵀ g          ∂L/∂b = Σᵢ gᵢ (sum over the batch)          ∂L/∂x = g Wᵀ

    In a model, the bias rides along as one more row of the weights (the notes' x₀ = 1,
    placed last): W and b lie side by side in θ, as W̃ = [W; b], and with x̃ = [x, 1]

        y = x̃ W̃          ∂L/∂W̃ = x̃ᵀ g = [xᵀ g; Σᵢ gᵢ]

    so one matrix product gives both gradients, written straight into ∇θ.

    Optional penalties on the weights add ``l1·Σ|W| + l2·ΣW²`` to the loss, and
    ``l1·sign(W) + 2·l2·W`` to ∂L/∂W.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        init: Any = "glorot_uniform",
        dtype: str = "float32",
        l1: float = 0.0,
        l2: float = 0.0,
    ) -> None:
        self.in_features = _check_size("in_features", in_features)
        self.out_features = _check_size("out_features", out_features)
        self.dtype = _check_dtype(dtype)
        self.l1 = check_number("l1", l1, hint=" (the strength of the penalty l1·Σ|W|; 0: none)")
        self.l2 = check_number("l2", l2, hint=" (the strength of the penalty l2·ΣW²; 0: none)")
        _check_init(init)
        self.init = init if isinstance(init, str) else getattr(init, "__name__", "custom")
        weights = get_initializer(init)(in_features, out_features)
        if not hasattr(weights, "shape"):
            returned = "None" if weights is None else type(weights).__name__
            raise ConfigError(
                f"initializer {self.init!r} returned {returned}, not an array: it must "
                f"return an array of shape {(in_features, out_features)}"
            )
        if tuple(weights.shape) != (in_features, out_features):
            raise ConfigError(
                f"initializer {self.init!r} returned shape {tuple(weights.shape)}, "
                f"expected {(in_features, out_features)}"
            )
        backend = get_backend()
        self.weight = Parameter(backend.asarray(weights, dtype=dtype, copy=True), "weight")
        xp = backend.xp
        bias = xp.zeros((out_features,), dtype=getattr(xp, dtype), device=backend.device)
        self.bias = Parameter(bias, "bias")
        self._input: Any = None
        self._span: Span | None = None  # W̃, while weight and bias lie side by side in a θ
        self._weight_transposed: Any = None  # Wᵀ, a view of θ, with the span
        self._ones: dict[int, Any] = {}  # the column of ones of x̃, per batch size

    def forward(self, x: Any, training: bool = False) -> Any:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(
                f"Dense({self.in_features}, {self.out_features}) expects input of shape "
                f"(batch, {self.in_features}), got {tuple(x.shape)}"
            )
        stacked = self._stacked()
        if stacked is None:  # on its own: the two terms, as in the notes
            self._input = x
            output = x @ self.weight.value
            output += self.bias.value
            return output
        self._input = namespace(x).concat([x, self._ones_for(x)], axis=1)  # x̃ = [x, 1]
        return self._input @ stacked.value  # y = x̃ W̃

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        if self._input is None:
            raise backward_before_forward(self)
        xp = namespace(grad_output)
        stacked = self._stacked()
        if stacked is None:
            self.weight.grad = self._input.T @ grad_output
            self.bias.grad = xp.sum(grad_output, axis=0)
            weight_transposed = self.weight.value.T
        else:
            stacked.set_grad_product(self._input.T, grad_output)  # ∂L/∂W̃ = x̃ᵀ g
            weight_transposed = self._weight_transposed
        if self.l1:
            self.weight.grad += self.l1 * xp.sign(self.weight.value)
        if self.l2:
            self.weight.grad += (2.0 * self.l2) * self.weight.value
        if not need_input_grad:
            return None
        return grad_output @ weight_transposed

    def _stacked(self) -> Span | None:
        """W̃ = [W; b] as one view of the θ that holds this layer's weight and bias side
        by side (a model's), or None for a layer on its own."""
        vector = self.weight.vector
        if vector is None:
            return None
        if self._span is None or self._span.vector is not vector:
            self._span = vector.span([self.weight, self.bias],
                                     (self.in_features + 1, self.out_features))
            self._weight_transposed = self.weight.value.T
        return self._span

    def _ones_for(self, x: Any) -> Any:
        """An (n, 1) column of ones in the dtype and on the device of ``x``."""
        n = x.shape[0]
        ones = self._ones.get(n)
        if ones is None or ones.dtype != x.dtype:
            if len(self._ones) > 4:  # a few batch sizes: the training batch, the last one
                self._ones.clear()
            ones = self._ones[n] = namespace(x).ones((n, 1), dtype=x.dtype, device=x.device)
        return ones

    def parameters(self) -> list[Parameter]:
        return [self.weight, self.bias]

    def __getstate__(self) -> dict[str, Any]:
        """For pickle and deepcopy: the parameters and settings, without what a forward
        pass caches (W̃ and Wᵀ are views of θ, which a copy must take from its own θ)."""
        state = dict(self.__dict__)
        state.update(_input=None, _span=None, _weight_transposed=None, _ones={})
        return state

    @staticmethod
    def parameter_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """The shapes of the parameters a Dense of this ``config`` has, before it is
        built: weight (in, out), bias (out,) (a checkpoint's tensors are checked first)."""
        sizes = [config.get("in_features"), config.get("out_features")]
        in_features, out_features = (_check_size(key, size) for key, size in
                                     zip(("in_features", "out_features"), sizes))
        return {"weight": (in_features, out_features), "bias": (out_features,)}

    def regularization_loss(self) -> Any:
        if not (self.l1 or self.l2):
            return 0.0
        xp = namespace(self.weight.value)
        weight = self.weight.value
        penalty = 0.0
        if self.l1:
            penalty = penalty + self.l1 * xp.sum(xp.abs(weight))
        if self.l2:
            penalty = penalty + self.l2 * xp.sum(weight * weight)
        return penalty

    def config(self) -> dict[str, Any]:
        config = {"in_features": self.in_features, "out_features": self.out_features}
        config.update(init=self.init, dtype=self.dtype)
        if self.l1 or self.l2:
            config.update(l1=self.l1, l2=self.l2)
        return config


class _NoForward:
    """Dropout's mask before its first forward pass: one object, also once unpickled."""

    def __reduce__(self) -> str:
        return "_NO_FORWARD"  # pickle and deepcopy give back this module's object


_NO_FORWARD = _NoForward()


@register_layer
class Flatten(Layer):
    """Each sample laid out as one row: ``(N, d₁, d₂, ...) → (N, d₁·d₂·...)``, in the
    row-major order of ``reshape`` (a 28 × 28 image becomes its 784 pixels, row after
    row, as MNIST's files store them). Nothing is learned:

        y = reshape(x, (N, −1))          ∂L/∂x = reshape(g, shape of x)

    It lets images reach ``Dense`` layers (``Sequential(Flatten(), Dense(784, 10))``
    trains on ``(N, 28, 28)`` data) and joins a convolutional stack to its dense head.
    """

    takes_images = True
    keeps_size = True

    def __init__(self) -> None:
        self._input_shape: tuple[int, ...] | None = None

    def forward(self, x: Any, training: bool = False) -> Any:
        if x.ndim < 2:
            raise ShapeError(f"Flatten expects a batch (N, ...), got shape {tuple(x.shape)}")
        self._input_shape = tuple(x.shape)
        if x.ndim == 2:
            return x
        return namespace(x).reshape(x, (x.shape[0], math.prod(x.shape[1:])))

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        if self._input_shape is None:
            raise backward_before_forward(self)
        if not need_input_grad:
            return None
        return namespace(grad_output).reshape(grad_output, self._input_shape)


@register_layer
class Dropout(Layer):
    """Inverted dropout: in training each unit is kept with probability ``p = 1 − rate``
    and scaled by ``1/p``, so nothing needs rescaling at evaluation, where the layer is
    the identity.

        y = x ⊙ m / p,   m ~ Bernoulli(p)          ∂L/∂x = g ⊙ m / p

    Masks come from the seeded host ``dropout`` stream (same seed, same masks on
    every backend).
    """

    takes_images = True
    keeps_size = True

    def __init__(self, rate: float) -> None:
        if not (is_real_number(rate) and 0.0 <= rate < 1.0):
            raise ConfigError(f"dropout rate must be in [0, 1), got {rate!r}: the fraction "
                              "of units dropped in training, a number such as 0.5")
        self.rate = float(rate)
        self._scaled_mask: Any = _NO_FORWARD  # None after a forward that drops nothing

    def forward(self, x: Any, training: bool = False) -> Any:
        if not training or self.rate == 0.0:
            self._scaled_mask = None
            return x
        keep, shape = 1.0 - self.rate, tuple(x.shape)
        self._scaled_mask = random.on_device(lambda: random.bernoulli(shape, keep) / keep,
                                             shape, x.dtype)
        return x * self._scaled_mask

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        if self._scaled_mask is None:
            return grad_output
        if self._scaled_mask is _NO_FORWARD:
            raise backward_before_forward(self)
        return grad_output * self._scaled_mask

    def config(self) -> dict[str, Any]:
        return {"rate": self.rate}
