"""Activation functions, each a parameter-free layer with its derivative.

For an elementwise activation ``y = f(z)`` the backward pass is ``∂L/∂z = g ⊙ f'(z)``
with ``g = ∂L/∂y``. Each class writes ``f`` and ``f'`` side by side, in forms that do
not overflow for large ``|z|``.
"""

from __future__ import annotations

from typing import Any

from .backend import namespace
from .errors import ConfigError, NotDifferentiableError
from .layers import Layer, backward_before_forward, check_number, register_layer


class Activation(Layer):
    """Base of the elementwise activations: caches its input or output for backward."""

    takes_images = True  # elementwise: any shape (Softmax, over the last axis, too)
    keeps_size = True

    def __init__(self) -> None:
        self._cache: Any = None

    def _cached(self) -> Any:
        """What the last forward cached for backward; ``StateError`` before any forward."""
        if self._cache is None:
            raise backward_before_forward(self)
        return self._cache

    def config(self) -> dict[str, Any]:
        return {}


class Identity(Activation):
    """The linear activation: ``f(z) = z``, ``f'(z) = 1``."""

    def forward(self, x: Any, training: bool = False) -> Any:
        self._cache = True  # nothing to keep for backward, only that forward ran
        return x

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        self._cached()
        return grad_output


class Step(Activation):
    """Heaviside step, the perceptron's activation: ``f(z) = 1 if z ≥ 0 else 0``.

    Its derivative is 0 almost everywhere, so gradient descent cannot learn through
    it: ``backward`` raises ``NotDifferentiableError``.
    """

    def forward(self, x: Any, training: bool = False) -> Any:
        xp = namespace(x)
        return xp.astype(x >= 0, x.dtype)

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        raise NotDifferentiableError(
            "Step has zero gradient almost everywhere, so a network cannot be trained "
            "through it by backpropagation; use Sigmoid (its smooth version) for training"
        )


class Sigmoid(Activation):
    """Logistic function ``σ(z) = 1 / (1 + e^{−z})``, ``σ'(z) = σ(z)(1 − σ(z))``.

    Computed as ``σ(z) = e^{min(z, 0)} / (1 + e^{−|z|})``: for z ≥ 0 that is
    ``1 / (1 + e^{−z})``, for z < 0 it is ``e^{z} / (1 + e^{z})``. Neither exponent is
    ever positive, so nothing overflows, and σ(−50) ≈ 1.9e-22 keeps all its digits
    (``½(1 + tanh(z/2))`` would round it to 0).
    """

    def forward(self, x: Any, training: bool = False) -> Any:
        y = sigmoid(x)
        self._cache = y
        return y

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        y = self._cached()
        return grad_output * (y * (1.0 - y))


def sigmoid(x: Any) -> Any:
    """The logistic function, computed without overflow (see ``Sigmoid``)."""
    xp = namespace(x)
    denominator = xp.exp(-xp.abs(x))
    denominator += 1.0
    return xp.exp(xp.minimum(x, 0.0)) / denominator


class Tanh(Activation):
    """``tanh(z)``, ``tanh'(z) = 1 − tanh²(z)``."""

    def forward(self, x: Any, training: bool = False) -> Any:
        xp = namespace(x)
        self._cache = xp.tanh(x)
        return self._cache

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        y = self._cached()
        return grad_output * (1.0 - y * y)


class ReLU(Activation):
    """Rectified linear unit: ``f(z) = max(z, 0)``, ``f'(z) = 1 if z > 0 else 0``.

    Backward multiplies g by the 0/1 mask of y = f(z) > 0: the same as
    ``where(y > 0, g, 0)`` for finite g, and several times faster on NumPy.
    """

    def __init__(self) -> None:
        super().__init__()
        self._zero: Any = None  # a 0-d zero of the input's dtype, made once

    def forward(self, x: Any, training: bool = False) -> Any:
        xp = namespace(x)
        zero = self._zero
        if zero is None or zero.dtype != x.dtype or zero.device != x.device:
            zero = self._zero = xp.zeros((), dtype=x.dtype, device=x.device)
        y = xp.maximum(x, zero)
        self._cache = y
        return y

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        gradient = namespace(grad_output).astype(self._cached() > 0.0, grad_output.dtype)
        gradient *= grad_output
        return gradient


class LeakyReLU(Activation):
    """``f(z) = z if z > 0 else α·z``, ``f'(z) = 1 if z > 0 else α``."""

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        self.alpha = check_number("LeakyReLU alpha", alpha,
                                  hint=" (the slope for z < 0, e.g. 0.01)")

    def forward(self, x: Any, training: bool = False) -> Any:
        xp = namespace(x)
        self._cache = x > 0.0
        return xp.where(self._cache, x, self.alpha * x)

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        xp = namespace(grad_output)
        return xp.where(self._cached(), grad_output, self.alpha * grad_output)

    def config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


class ELU(Activation):
    """Exponential linear unit: ``f(z) = z if z > 0 else α(eᶻ − 1)``;
    ``f'(z) = 1 if z > 0 else f(z) + α``. ``expm1`` of ``min(z, 0)`` never overflows."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_number("ELU alpha", alpha, positive=True,
                                  hint=" (f(z) tends to −alpha as z → −∞; e.g. 1.0)")

    def forward(self, x: Any, training: bool = False) -> Any:
        xp = namespace(x)
        y = xp.where(x > 0.0, x, self.alpha * xp.expm1(xp.minimum(x, 0.0)))
        self._cache = y
        return y

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        xp = namespace(grad_output)
        y = self._cached()
        return xp.where(y > 0.0, grad_output, grad_output * (y + self.alpha))


class Softplus(Activation):
    """``f(z) = ln(1 + eᶻ)``, a smooth ReLU; ``f'(z) = σ(z)``.

    Computed as ``max(z, 0) + ln(1 + e^{−|z|})``, which never overflows.
    """

    def forward(self, x: Any, training: bool = False) -> Any:
        xp = namespace(x)
        self._cache = x
        return xp.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        return grad_output * sigmoid(self._cached())


class Softmax(Activation):
    """Softmax over the last axis: ``sᵢ = e^{zᵢ − m} / Σⱼ e^{zⱼ − m}`` with ``m = maxⱼ zⱼ``
    (subtracting the row maximum changes nothing but prevents overflow).

    Jacobian ``∂sᵢ/∂zⱼ = sᵢ(δᵢⱼ − sⱼ)``, so ``∂L/∂z = s ⊙ (g − Σⱼ gⱼ sⱼ)`` row by row.
    For classification prefer ``SoftmaxCrossEntropy`` on the logits, which fuses the
    two and is both faster and more accurate.
    """

    def forward(self, x: Any, training: bool = False) -> Any:
        xp = namespace(x)
        e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
        e /= xp.sum(e, axis=-1, keepdims=True)
        self._cache = e
        return e

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        xp = namespace(grad_output)
        s = self._cached()
        return s * (grad_output - xp.sum(grad_output * s, axis=-1, keepdims=True))


ACTIVATIONS: dict[str, type[Activation]] = {
    "identity": Identity,
    "linear": Identity,
    "step": Step,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "elu": ELU,
    "softplus": Softplus,
    "softmax": Softmax,
}


for _activation in set(ACTIVATIONS.values()):  # checkpoints rebuild them by class name
    register_layer(_activation)


def get_activation(spec: str | Activation) -> Activation:
    """An activation layer from its name (``"relu"``) or as given."""
    if isinstance(spec, Activation):
        return spec
    key = str(spec).lower()
    if key not in ACTIVATIONS:
        raise ConfigError(
            f"unknown activation {spec!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[key]()
