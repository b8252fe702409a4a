"""Finite-difference gradient checking: is backpropagation computing the right thing?

For every parameter element w, the central difference

    ∂L/∂w ≈ (L(w + h) − L(w − h)) / 2h

has error O(h²), against the analytic gradient from ``backward``. For each parameter
(and optionally the input) the check reports the relative error of the whole
gradient array,

    ‖g_analytic − g_numeric‖ / max(‖g_analytic‖ + ‖g_numeric‖, tiny),

which is ~1e-9 or less for a correct backward pass in float64, and ~1e-2 or more for
a wrong one. Run it in float64 (build layers with ``dtype="float64"``): in float32 the
difference quotient's rounding error alone is ~1e-3.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from .backend import namespace, set_element
from .errors import ConfigError
from .losses import Loss
from .model import Sequential


@dataclass
class GradcheckResult:
    """Relative error per checked array (``"0.weight"``, ..., ``"input"``), the worst one,
    and the largest absolute difference of any element."""

    errors: dict[str, float] = field(default_factory=dict)
    max_abs_error: float = 0.0

    @property
    def max_relative_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    def __repr__(self) -> str:
        worst = max(self.errors, key=self.errors.get) if self.errors else None
        return (f"GradcheckResult(max_relative_error={self.max_relative_error:.3e} at "
                f"{worst!r}, max_abs_error={self.max_abs_error:.3e})")


def gradcheck(model: Sequential, X: Any, y: Any, loss: Loss, *, h: float = 1e-6,
              check_input: bool = False, training: bool = False) -> GradcheckResult:
    """Compare ``model``'s backpropagated gradients of ``loss(model(X), y)`` (plus the
    layers' penalties) with central finite differences.

    ``X`` and ``y`` are arrays of the active backend; the model must be float64.
    ``training`` is passed to ``forward`` (keep False for layers with randomness).
    """
    xp = namespace(X)
    params = model.parameters()
    if any(p.value.dtype != xp.float64 for p in params) or X.dtype != xp.float64:
        raise ConfigError(
            "gradcheck needs float64 parameters and inputs: build the layers with "
            "dtype='float64' and pass float64 X; in float32 the finite differences are "
            "too coarse to judge the gradients"
        )

    def objective() -> float:
        value = loss.forward(model.forward(X, training), y) + model.regularization_loss()
        return float(value)

    objective()
    input_grad = model.backward(loss.backward(), need_input_grad=check_input)
    checked = [(f"{i}.{p.name}", p, p.grad) for i, p in _indexed(model)]
    result = GradcheckResult()
    for name, param, analytic in checked:
        numeric = _numeric_gradient(objective, param, "value", h)
        _record(result, name, xp, analytic, numeric)
    if check_input:
        holder = _Holder(X)  # a copy, perturbed in place below

        def objective_of_input() -> float:
            value = loss.forward(model.forward(holder.value, training), y)
            return float(value + model.regularization_loss())

        numeric = _numeric_gradient(objective_of_input, holder, "value", h)
        _record(result, "input", xp, input_grad, numeric)
    return result


class _Holder:
    def __init__(self, value: Any) -> None:
        self.value = namespace(value).asarray(value, copy=True)


def _indexed(model: Sequential) -> list[tuple[int, Any]]:
    return [(index, param) for index, layer in enumerate(model.layers)
            for param in layer.parameters()]


def _numeric_gradient(objective: Any, owner: Any, attribute: str, h: float) -> Any:
    """Central differences of ``objective`` w.r.t. every element of ``owner.<attribute>``,
    perturbing the array in place and restoring each element exactly."""
    xp = namespace(getattr(owner, attribute))

    def perturb(index: tuple[int, ...], value: float) -> None:
        array = getattr(owner, attribute)
        changed = set_element(array, index, value)  # in place, or (JAX) a new array
        if changed is not array:
            setattr(owner, attribute, changed)

    array = getattr(owner, attribute)
    numeric = xp.zeros(array.shape, dtype=array.dtype, device=array.device)
    for index in itertools.product(*(range(extent) for extent in array.shape)):
        original = float(getattr(owner, attribute)[index])
        perturb(index, original + h)
        plus = objective()
        perturb(index, original - h)
        minus = objective()
        perturb(index, original)
        numeric = set_element(numeric, index, (plus - minus) / (2.0 * h))
    return numeric


def _record(result: GradcheckResult, name: str, xp: Any, analytic: Any, numeric: Any) -> None:
    difference = float(xp.linalg.vector_norm(analytic - numeric))
    scale = float(xp.linalg.vector_norm(analytic)) + float(xp.linalg.vector_norm(numeric))
    result.errors[name] = difference / max(scale, 1e-300) if difference else 0.0
    result.max_abs_error = max(result.max_abs_error, float(xp.max(xp.abs(analytic - numeric))))
    if math.isnan(result.errors[name]):
        result.errors[name] = math.inf
