"""Loss functions: a scalar that measures how wrong the outputs are, and its gradient.

``forward(outputs, targets)`` returns the loss as a 0-d array (it stays on the device;
``float()`` it to print), ``backward()`` the gradient ``∂L/∂outputs`` of that last
forward. Reductions follow the course notes and PyTorch's defaults: MSE and binary
cross-entropy average over every element; the categorical cross-entropies over samples.

Notation: ``n`` samples, ``C`` classes, ``N`` elements, ``ŷ`` the outputs, ``y`` the
targets (integer class labels of shape (n,), or one-hot rows of shape (n, C)).
"""

from __future__ import annotations

import math
from typing import Any

from .activations import Sigmoid, Softmax, sigmoid
from .backend import namespace, traced
from .errors import ShapeError
from .layers import backward_before_forward


class Loss:
    """Base class. ``task`` tells ``fit`` which accuracy to report:
    ``"multiclass"`` (argmax), ``"binary"`` (threshold) or ``"regression"`` (none)."""

    task = "regression"
    #: For binary tasks: outputs at or above this are predicted as class 1.
    threshold = 0.5

    def forward(self, outputs: Any, targets: Any) -> Any:
        raise NotImplementedError

    def backward(self) -> Any:
        raise NotImplementedError

    def _cached(self, value: Any) -> Any:
        """``value``, cached by the last forward; ``StateError`` before any forward."""
        if value is None:
            raise backward_before_forward(self, "call forward(outputs, targets) first, "
                                                "then backward()")
        return value

    def fused_backward(self, last_layer: Any) -> Any:
        """``∂L/∂z`` for the input ``z`` of the network's ``last_layer``, when this loss
        knows it in closed form for that layer (see ``Sequential.backward_loss``);
        None when it does not, and the gradient must go through ``last_layer.backward``."""
        return None

    def __call__(self, outputs: Any, targets: Any) -> Any:
        return self.forward(outputs, targets)

    def config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _same_shape_targets(outputs: Any, targets: Any, loss: Loss) -> Any:
    """Targets as an array of the outputs' shape and dtype; (n,) targets fit (n, 1)."""
    xp = namespace(outputs)
    if targets.shape != outputs.shape:
        if outputs.ndim == 2 and outputs.shape[1] == 1 and targets.shape == outputs.shape[:1]:
            targets = xp.reshape(targets, outputs.shape)
        else:
            raise ShapeError(
                f"{type(loss).__name__}: targets of shape {tuple(targets.shape)} do not match "
                f"outputs of shape {tuple(outputs.shape)}"
            )
    if targets.dtype != outputs.dtype:
        targets = xp.astype(targets, outputs.dtype)
    return targets


_LIMITS: dict[tuple[type, Any], tuple[float, float]] = {}


def _float_limits(xp: Any, dtype: Any) -> tuple[float, float]:
    """``dtype``'s machine epsilon and smallest normal number, remembered per dtype:
    ``finfo`` costs a microsecond, and the losses ask on every step. The key holds the
    dtype's type first, so dtypes of different libraries are never compared."""
    key = (type(dtype), dtype)
    limits = _LIMITS.get(key)
    if limits is None:
        info = xp.finfo(dtype)
        limits = _LIMITS[key] = (float(info.eps), float(info.smallest_normal))
    return limits


def machine_epsilon(xp: Any, dtype: Any) -> float:
    """The gap between 1 and the next number of ``dtype``."""
    return _float_limits(xp, dtype)[0]


# PyTorch's floor for the denominators of the cross-entropy gradients of probabilities
GRADIENT_FLOOR = 1e-12


def one_hot(labels: Any, num_classes: int, dtype: Any) -> Any:
    """Rows of the identity matrix picked by integer ``labels``: shape (n, num_classes)."""
    xp = namespace(labels)
    classes = xp.arange(num_classes, dtype=labels.dtype, device=labels.device)
    return xp.astype(labels[:, None] == classes, dtype)


def _labels_or_none(outputs: Any, targets: Any, loss: Loss) -> Any:
    """``targets`` if they are integer labels, one per row of ``outputs``; None if they
    are target rows (checked by ``_class_targets``)."""
    if outputs.ndim != 2:
        raise ShapeError(
            f"{type(loss).__name__} expects outputs of shape (n, classes), "
            f"got {tuple(outputs.shape)}"
        )
    if targets.ndim == 1 and targets.shape[0] == outputs.shape[0] \
            and namespace(targets).isdtype(targets.dtype, "integral"):
        return targets
    return None


def _class_targets(outputs: Any, targets: Any, loss: Loss) -> Any:
    """One-hot targets of the outputs' dtype from integer labels or one-hot rows."""
    xp = namespace(outputs)
    if outputs.ndim != 2:
        raise ShapeError(
            f"{type(loss).__name__} expects outputs of shape (n, classes), "
            f"got {tuple(outputs.shape)}"
        )
    n, num_classes = outputs.shape
    if targets.ndim == 1 and targets.shape[0] == n and xp.isdtype(targets.dtype, "integral"):
        return one_hot(targets, num_classes, outputs.dtype)
    if targets.shape == outputs.shape:
        return targets if targets.dtype == outputs.dtype else xp.astype(targets, outputs.dtype)
    raise ShapeError(
        f"{type(loss).__name__}: targets must be integer labels of shape ({n},) or one-hot "
        f"rows of shape {tuple(outputs.shape)}, got shape {tuple(targets.shape)} "
        f"of dtype {targets.dtype}"
    )


class MeanSquaredError(Loss):
    """``L = (1/N) Σ (ŷ − y)²`` over all N elements;  ``∂L/∂ŷ = (2/N)(ŷ − y)``."""

    _difference: Any = None

    def forward(self, outputs: Any, targets: Any) -> Any:
        xp = namespace(outputs)
        targets = _same_shape_targets(outputs, targets, self)
        self._difference = outputs - targets
        return xp.sum(self._difference * self._difference) * (1.0 / element_count(outputs))

    def backward(self) -> Any:
        difference = self._cached(self._difference)
        return difference * (2.0 / element_count(difference))


class BinaryCrossEntropy(Loss):
    """The logistic loss, averaged over all N elements, targets y ∈ [0, 1].

    From probabilities p (after a Sigmoid):
        ``L = −(1/N) Σ [y ln p + (1 − y) ln(1 − p)]``,  ``∂L/∂p = (p − y) / (p(1 − p)) / N``
    The value clips p to [ε, 1 − ε] (ε the dtype's machine epsilon) so ln never sees 0;
    the gradient is that of the unclipped loss, its denominator floored at 1e-12 as in
    PyTorch, so that through a Sigmoid (times σ'(z) = p(1 − p)) it stays (p − y) / N.

    From logits z (``from_logits=True``, no Sigmoid layer; more stable):
        ``L = (1/N) Σ [max(z, 0) − z y + ln(1 + e^{−|z|})]``,  ``∂L/∂z = (σ(z) − y) / N``

    After a Sigmoid layer, p = σ(z) and σ'(z) = p(1 − p) cancels the denominator:
    ``∂L/∂z = (p − y) / N``. ``fused_backward`` returns that, and ``fit`` skips the
    division and the multiplication that would cancel.
    """

    task = "binary"
    _targets: Any = None

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = bool(from_logits)
        self.threshold = 0.0 if self.from_logits else 0.5

    def forward(self, outputs: Any, targets: Any) -> Any:
        xp = namespace(outputs)
        targets = _same_shape_targets(outputs, targets, self)
        self._targets = targets
        if self.from_logits:
            self._logits = outputs
            losses = xp.maximum(outputs, 0.0) - outputs * targets
            losses += xp.log1p(xp.exp(-xp.abs(outputs)))
            return xp.sum(losses) * (1.0 / element_count(losses))
        eps = machine_epsilon(xp, outputs.dtype)
        # maximum/minimum rather than clip: the same values, and much cheaper per call
        p = xp.minimum(xp.maximum(outputs, eps), 1.0 - eps)
        self._outputs = outputs
        # y ln p + (1 − y) ln(1 − p) = ln(1 − p) + y (ln p − ln(1 − p))
        log_q = xp.log1p(-p)
        losses = xp.log(p) - log_q
        losses *= targets
        losses += log_q
        return xp.sum(losses) * (-1.0 / element_count(losses))

    def backward(self) -> Any:
        targets = self._cached(self._targets)
        if self.from_logits:
            return (sigmoid(self._logits) - targets) * (1.0 / element_count(targets))
        p = self._outputs
        xp = namespace(p)
        denominator = xp.maximum(p * (1.0 - p), GRADIENT_FLOOR)
        return (p - targets) / denominator * (1.0 / element_count(targets))

    def fused_backward(self, last_layer: Any) -> Any:
        if self.from_logits or type(last_layer) is not Sigmoid:
            return None
        targets = self._cached(self._targets)
        gradient = self._outputs - targets
        gradient *= 1.0 / element_count(gradient)
        return gradient

    def config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits}

    def __repr__(self) -> str:
        return f"BinaryCrossEntropy(from_logits={self.from_logits})"


class CategoricalCrossEntropy(Loss):
    """Cross-entropy of probabilities p (after a Softmax), averaged over the n samples:

        ``L = −(1/n) Σᵢ Σ_c y_ic ln p_ic``,   ``∂L/∂p = −y / p / n``

    The value clips p below at ε (the dtype's machine epsilon) so ln never sees 0; the
    gradient is that of the unclipped loss, p floored only at the smallest normal
    number so that nothing divides by 0.

    After a Softmax layer, p = softmax(z), and the softmax Jacobian ``pᵢ(δᵢⱼ − pⱼ)``
    collapses the chain to ``∂L/∂z = (p Σ_c y_c − y) / n``, which is ``(p − y) / n``
    for one-hot rows: ``fused_backward`` returns that (as ``SoftmaxCrossEntropy`` does),
    without dividing by probabilities that may underflow.
    """

    task = "multiclass"
    _targets: Any = None

    def forward(self, outputs: Any, targets: Any) -> Any:
        xp = namespace(outputs)
        self._from_labels = targets.ndim == 1
        targets = _class_targets(outputs, targets, self)
        eps = machine_epsilon(xp, outputs.dtype)
        p = xp.maximum(outputs, eps)
        self._outputs, self._targets = outputs, targets
        return -xp.sum(targets * xp.log(p)) / outputs.shape[0]

    def backward(self) -> Any:
        targets = self._cached(self._targets)
        xp = namespace(self._outputs)
        tiny = _float_limits(xp, self._outputs.dtype)[1]
        p = xp.maximum(self._outputs, tiny)
        return targets / p * (-1.0 / targets.shape[0])

    def fused_backward(self, last_layer: Any) -> Any:
        if type(last_layer) is not Softmax:
            return None
        targets = self._cached(self._targets)
        xp = namespace(targets)  # given target rows need not sum to 1:
        row_weights = None if self._from_labels else xp.sum(targets, axis=1, keepdims=True)
        return _softmax_gradient(self._outputs, targets, row_weights)


class SoftmaxCrossEntropy(Loss):
    """Softmax and categorical cross-entropy fused, from logits z, averaged over n:

        ``ln sᵢ_c = z_ic − m_i − ln Σ_k e^{z_ik − m_i}``   (log-sum-exp, m_i = max_k z_ik)
        ``L = −(1/n) Σᵢ Σ_c y_ic ln s_ic``,     ``∂L/∂z = (s Σ_c y_ic − y) / n``

    which is ``(s − y) / n`` for one-hot rows (and any target rows that sum to 1). For
    integer labels yᵢ the sum over c has one term, picked by indexing:
    ``L = (1/n) Σᵢ (ln Σ_k e^{z_ik − m_i} − (z_{i,yᵢ} − m_i))``. The labels must lie in
    0..C−1 (``fit`` and ``evaluate`` check them once, not at every step).

    The fused gradient is exact and cheap, where chaining Softmax's Jacobian with the
    cross-entropy's ``−y/p`` would divide by probabilities that underflow to 0. It
    reuses the forward pass's exponentials: s = e^{z − m} / Σ_k e^{z_k − m}.
    """

    task = "multiclass"
    _exponentials: Any = None

    def forward(self, outputs: Any, targets: Any) -> Any:
        xp = namespace(outputs)
        labels = _labels_or_none(outputs, targets, self)
        shifted = outputs - xp.max(outputs, axis=1, keepdims=True)
        exponentials = xp.exp(shifted)
        sums = xp.sum(exponentials, axis=1)
        log_sums = xp.log(sums)
        n = outputs.shape[0]
        if labels is not None:
            picked = shifted[_arange(xp, n, outputs.device), labels]  # z_{i,yᵢ} − mᵢ
            value = xp.mean(log_sums - picked)
            self._targets = self._row_weights = None
        else:
            targets = _class_targets(outputs, targets, self)
            # Σ_c y_c (ln Σ e − shifted_c) for each row. Given target rows need not sum
            # to 1 (a zero row masks a sample out), so weigh each row by Σ_c y_c.
            self._row_weights = xp.sum(targets, axis=1, keepdims=True)
            value = (xp.sum(log_sums * self._row_weights[:, 0]) - xp.sum(targets * shifted)) \
                * (1.0 / n)
            self._targets = targets
        self._labels, self._exponentials, self._sums = labels, exponentials, sums
        return value

    def backward(self) -> Any:
        probabilities = self._cached(self._exponentials) / self._sums[:, None]
        if self._labels is None:
            return _softmax_gradient(probabilities, self._targets, self._row_weights)
        xp = namespace(probabilities)
        classes = _arange(xp, probabilities.shape[1], probabilities.device)
        is_label = self._labels[:, None] == classes  # the one-hot rows y, as booleans
        gradient = xp.where(is_label, probabilities - 1.0, probabilities)  # s − y
        gradient *= 1.0 / gradient.shape[0]
        return gradient


def _softmax_gradient(probabilities: Any, targets: Any, row_weights: Any) -> Any:
    """∂L/∂z of the cross-entropy of softmax(z), ``(p Σ_c y_c − y) / n``: ``row_weights``
    holds Σ_c y_c per row, or is None for rows that sum to 1 (from integer labels)."""
    if row_weights is not None:
        probabilities = probabilities * row_weights
    gradient = probabilities - targets
    gradient *= 1.0 / gradient.shape[0]
    return gradient


_ARANGES: dict[tuple[int, str, int], Any] = {}


def _arange(xp: Any, n: int, device: Any) -> Any:
    """``arange(n)`` on ``device``, made once: the row and class indices of the labels'
    fast path (a few sizes per run, so the cache stays small)."""
    key = (id(xp), str(device), n)  # namespaces are modules: one object each
    indices = _ARANGES.get(key)
    if indices is None:
        if len(_ARANGES) > 64:
            _ARANGES.clear()
        indices = xp.arange(n, device=device)
        if not traced(indices):  # made inside a step being compiled: that trace's only
            _ARANGES[key] = indices
    return indices


def element_count(array: Any) -> int:
    """The number of elements of ``array`` (the product of its shape)."""
    return math.prod(array.shape)


LOSSES: dict[str, type[Loss]] = {
    "mse": MeanSquaredError,
    "binary_cross_entropy": BinaryCrossEntropy,
    "categorical_cross_entropy": CategoricalCrossEntropy,
    "softmax_cross_entropy": SoftmaxCrossEntropy,
}
