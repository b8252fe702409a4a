"""Batch normalization (Ioffe & Szegedy, 2015), with its running statistics as state.

Each feature (a column of a ``(N, F)`` batch, or a channel of a ``(N, C, H, W)`` batch,
over all its pixels) is normalized with the batch's own mean and variance in training,
and with running estimates of them in inference, then scaled and shifted by learned
γ and β. The running statistics are not trained: they are the layer's *state*
(``Layer.state()``), which checkpoints save beside the parameters and which a
data-parallel ``fit`` starts from rank 0's (see ``BatchNorm``).
"""

from __future__ import annotations

import math
from typing import Any

from .backend import get_backend, namespace
from .errors import ConfigError, ShapeError
from .layers import (
    Layer,
    Parameter,
    _check_dtype,
    _check_size,
    backward_before_forward,
    check_number,
    register_layer,
)


@register_layer
class BatchNorm(Layer):
    """Normalize each feature over the batch, then scale and shift:

        μ = (1/m) Σ x          σ² = (1/m) Σ (x − μ)²          x̂ = (x − μ) / √(σ² + ε)
        y = γ ⊙ x̂ + β

    with the sums over the m = N values of a feature of an ``(N, F)`` batch, or the
    m = N·H·W values of a channel of an ``(N, C, H, W)`` batch (after ``Conv2D``). With
    g = ∂L/∂y and means ⟨·⟩ over the same m values:

        ∂L/∂γ = Σ g ⊙ x̂          ∂L/∂β = Σ g
        ∂L/∂x = γ / √(σ² + ε) ⊙ (g − ⟨g⟩ − x̂ ⊙ ⟨g ⊙ x̂⟩)

    (the last two terms are the paths through μ and σ²). In inference (``training=False``)
    μ and σ² are the running estimates, constants, so ∂L/∂x = γ / √(σ² + ε) ⊙ g.

    The running estimates are kept as PyTorch keeps them: after every training batch

        running_mean ← (1 − momentum) · running_mean + momentum · μ
        running_var  ← (1 − momentum) · running_var  + momentum · σ² · m / (m − 1)

    (the batch normalizes with its biased variance, the running estimate takes the
    unbiased one), from 0 and 1. They are the layer's ``state()``: saved by ``nn.save``
    and ``nn.Checkpoint`` and restored by ``nn.load`` and ``nn.resume``. Under MPI data
    parallelism ``fit`` broadcasts rank 0's at the start; after that each rank
    normalizes with the statistics of its own share of the batch (as PyTorch's
    ``BatchNorm`` without ``SyncBatchNorm``) and updates its own running estimates, and
    what rank 0 saves is rank 0's.
    """

    takes_images = True
    keeps_size = True
    state_attributes = ("running_mean", "running_var")  # threaded through a compiled step

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, *,
                 dtype: str = "float32") -> None:
        self.num_features = _check_size("num_features", num_features)
        self.momentum = check_number("momentum", momentum,
                                     hint=" (the weight of a batch in the running statistics)")
        if self.momentum > 1:
            raise ConfigError(f"momentum must be in [0, 1], got {momentum!r}")
        self.eps = check_number("eps", eps, positive=True,
                                hint=" (added to the variance, e.g. 1e-5)")
        self.dtype = _check_dtype(dtype)
        backend = get_backend()
        xp = backend.xp
        kind = getattr(xp, dtype)
        self.weight = Parameter(xp.ones((num_features,), dtype=kind, device=backend.device),
                                "weight")  # γ
        self.bias = Parameter(xp.zeros((num_features,), dtype=kind, device=backend.device),
                              "bias")  # β
        self.running_mean = xp.zeros((num_features,), dtype=kind, device=backend.device)
        self.running_var = xp.ones((num_features,), dtype=kind, device=backend.device)
        self._cache: tuple[Any, ...] | None = None

    def _layout(self, x: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The axes a feature's values lie along, and the shape γ, μ, ... broadcast as."""
        if x.ndim == 2 and x.shape[1] == self.num_features:
            return (0,), (1, self.num_features)
        if x.ndim == 4 and x.shape[1] == self.num_features:
            return (0, 2, 3), (1, self.num_features, 1, 1)
        raise ShapeError(f"{self!r} expects (N, {self.num_features}) or (N, "
                         f"{self.num_features}, H, W), got shape {tuple(x.shape)}")

    def forward(self, x: Any, training: bool = False) -> Any:
        xp = namespace(x)
        axes, shape = self._layout(x)
        count = math.prod(x.shape) // self.num_features  # m, the values per feature
        if training:
            if count < 2:
                raise ShapeError(f"{self!r} needs more than one value per feature to "
                                 f"normalize in training, got shape {tuple(x.shape)}")
            mean = xp.mean(x, axis=axes, keepdims=True)
            centered = x - mean
            variance = xp.mean(centered * centered, axis=axes, keepdims=True)
            momentum = self.momentum
            self.running_mean = ((1.0 - momentum) * self.running_mean
                                 + momentum * xp.reshape(mean, (-1,)))
            self.running_var = ((1.0 - momentum) * self.running_var
                                + (momentum * count / (count - 1)) * xp.reshape(variance, (-1,)))
        else:
            centered = x - xp.reshape(self.running_mean, shape)
            variance = xp.reshape(self.running_var, shape)
        inv_std = 1.0 / xp.sqrt(variance + self.eps)
        normalized = centered * inv_std  # x̂
        self._cache = (normalized, inv_std, axes, shape, training)
        return normalized * xp.reshape(self.weight.value, shape) \
            + xp.reshape(self.bias.value, shape)

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        if self._cache is None:
            raise backward_before_forward(self)
        normalized, inv_std, axes, shape, training = self._cache
        xp = namespace(grad_output)
        self.weight.grad = xp.sum(grad_output * normalized, axis=axes)
        self.bias.grad = xp.sum(grad_output, axis=axes)
        if not need_input_grad:
            return None
        scale = xp.reshape(self.weight.value, shape) * inv_std  # γ / √(σ² + ε)
        if not training:
            return grad_output * scale
        mean_grad = xp.mean(grad_output, axis=axes, keepdims=True)
        mean_projection = xp.mean(grad_output * normalized, axis=axes, keepdims=True)
        return scale * (grad_output - mean_grad - normalized * mean_projection)

    def parameters(self) -> list[Parameter]:
        return [self.weight, self.bias]

    @staticmethod
    def parameter_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """γ ("weight") and β ("bias"), (num_features,) each."""
        features = _check_size("num_features", config.get("num_features"))
        return {"weight": (features,), "bias": (features,)}

    def state(self) -> dict[str, Any]:
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def load_state(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        self.running_mean, self.running_var = state["running_mean"], state["running_var"]

    def config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "momentum": self.momentum,
                "eps": self.eps, "dtype": self.dtype}
