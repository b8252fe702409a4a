"""Optimizers and learning-rate schedules.

An optimizer turns gradients into parameter updates. ``step(params)`` updates every
``Parameter`` in place from its ``.grad``. Each update rule below is the textbook
equation, with the conventions and defaults of ``torch.optim`` so that results can
be checked against it. The per-parameter state (momentum buffers, moment estimates)
lives in one place, ``optimizer.state[param]``, a dict of named arrays.

Notation: w a parameter, g = ∂L/∂w its gradient, α the learning rate, t the step
number (from 1), λ the weight decay.

Decaying state is flushed to 0 before it turns subnormal: where a gradient stays 0 (a
pixel never lit), a moment shrinks by β every step, and x86 processors compute many times
slower on subnormal numbers. Every ``flush_interval()`` steps, state entries below
``smallest_normal · 2²⁴`` are set to 0; such an entry moves a weight by less than
α/ε · 2e-31 (Adam, float32). The measurements are in bench/README.md.
"""

from __future__ import annotations

import math
from typing import Any

from .backend import fused_update, namespace
from .errors import ConfigError
from .parameters import Parameter, ParameterVector

# State entries below smallest_normal · 2**FLUSH_HEADROOM_BITS are flushed to 0.
FLUSH_HEADROOM_BITS = 24


def _positive(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) \
            or not 0 < value < math.inf:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _fraction(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def _non_negative(name: str, value: float) -> float:
    if not value >= 0.0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def _fused_rule_is_current(cls: type) -> bool:
    """True when ``cls.fused_rule`` describes ``cls.update``: both come from the same
    class (a subclass that overrides ``update`` alone keeps its own update)."""
    def owner(name: str) -> type:
        return next(base for base in cls.__mro__ if name in vars(base))
    return owner("update") is owner("fused_rule")


class Optimizer:
    """Base class: learning rate ``lr``, step counter ``t``, state per parameter.

    ``step(model.parameters())`` updates the model's whole parameter vector θ as one
    array (its parameters are windows of θ: see ``nnscratch.parameters``), so an update
    rule costs the same few array operations whatever the number of layers. Given any
    other list of parameters, it updates them one by one. Either way ``state[param]``
    holds each parameter's state arrays (windows of θ-sized state, for a model).
    """

    slot_names: tuple[str, ...] = ()

    def __init__(self, lr: float) -> None:
        self.lr = _positive("learning rate", lr)
        self.t = 0
        self.state: dict[Any, dict[str, Any]] = {}

    def step(self, params: list[Parameter]) -> None:
        """Apply one update to every parameter from its ``.grad``.

        Three parts: ``begin_step`` (on the host: t ← t + 1, the step's scalars),
        ``apply`` (the arrays: the part a compiled training step traces, see
        ``nnscratch.compile``) and ``end_step`` (on the host: the periodic flush).
        """
        self.begin_step()
        self.apply(params)
        self.end_step()

    def begin_step(self) -> None:
        """Count the step: ``t ← t + 1`` (subclasses add the scalars that depend on t)."""
        self.t += 1

    def step_scalars(self) -> dict[str, float]:
        """The attributes ``update`` reads that may change from one step to the next
        (the learning rate, set by schedules; Adam's α_t, ε_t): a compiled step takes
        them as arguments rather than baking them in as constants."""
        return {"lr": self.lr}

    def end_step(self) -> None:
        """Every ``flush_interval()`` steps, flush the vanishing state."""
        interval = self.flush_interval()
        if interval and self.t % interval == 0:
            self.flush_vanishing_state()

    def apply(self, params: list[Parameter]) -> None:
        """The update of every parameter that has a gradient: θ as one array where the
        parameters are windows of one (``update`` in place), else one by one, storing
        the new values (immutable arrays: JAX)."""
        vector = getattr(params, "vector", None)
        if vector is not None and vector.ready():
            rule = self.fused_rule() if _fused_rule_is_current(type(self)) else None
            if not fused_update(rule, vector.value, vector.grad, self.slots(vector)):
                self.update(vector, vector.value, vector.grad)  # θ ← update(θ, ∇θ), in place
        else:
            for param in params:
                if param.grad is not None:
                    new = self.update(param, param.value, param.grad)
                    if new is not param.value:  # an immutable array (JAX): the new value
                        param.value = new

    def update(self, param: Any, w: Any, g: Any) -> Any:
        """Update ``w`` (a parameter's value, or all of θ) from its gradient ``g`` and
        return it; ``param`` keys the state.

        Written with augmented assignments (``w -= α g``): in place where the array
        library allows (``w`` itself is returned), a new array where it does not (JAX),
        which ``step`` stores. State arrays are stored back into ``slots(param)`` alike.
        """
        raise NotImplementedError

    def fused_rule(self) -> tuple[str, tuple[float, ...]] | None:
        """This step's ``update`` as a rule name and its coefficients, for a backend that
        runs it as one fused loop over θ (``backend.fused_update``: the same equations,
        one pass, no temporaries); None where there is no fused form."""
        return None

    def decay_factors(self) -> tuple[float, ...]:
        """The factors by which this optimizer's state shrinks in a step with g = 0."""
        return ()

    def flush_interval(self) -> int:
        """Steps in which the fastest-decaying state falls by 2²⁴ (0: no decaying state):
        from the flush threshold it cannot reach a subnormal number before the next."""
        factors = [factor for factor in self.decay_factors() if factor > 0.0]
        if not factors:
            return 0
        return max(1, int(FLUSH_HEADROOM_BITS * math.log(2.0) / -math.log(min(factors))))

    def flush_vanishing_state(self) -> None:
        """Set to 0, in place, the state entries below ``smallest_normal · 2²⁴``."""
        for param, state in self.state.items():
            if getattr(param, "vector", None) is not None:
                continue  # windows of a vector's state, flushed with it
            for name, array in state.items():
                xp = namespace(array)
                floor = float(xp.finfo(array.dtype).smallest_normal) * 2.0**FLUSH_HEADROOM_BITS
                array *= xp.astype(xp.abs(array) >= floor, array.dtype)
                state[name] = array  # the same array, or (JAX) the new one

    def slots(self, param: Any) -> dict[str, Any]:
        """This parameter's state arrays, created as zeros on first use.

        For θ (a ``ParameterVector``) the arrays are θ-sized, and each of its parameters
        gets the windows of them as its own state; a parameter of a vector gets those
        windows, so both ways of stepping share one state.
        """
        state = self.state.get(param)
        if state is not None:
            return state
        vector = getattr(param, "vector", None)
        if vector is not None:  # a parameter laid out in θ: its windows of θ's state
            self.slots(vector)
            return self.state[param]
        xp = namespace(param.value)
        state = {name: xp.zeros_like(param.value) for name in self.slot_names}
        if isinstance(param, ParameterVector):
            for index, member in enumerate(param.parameters):
                earlier = self.state.get(member, {})  # e.g. restored from a checkpoint
                windows = {name: param.window(array, index) for name, array in state.items()}
                for name, window in windows.items():
                    if name in earlier:
                        window[...] = earlier[name]
                self.state[member] = windows
        self.state[param] = state
        return state

    def config(self) -> dict[str, Any]:
        return {"lr": self.lr}

    def __getstate__(self) -> dict[str, Any]:
        """For pickle and deepcopy. The state arrays of a θ's parameters are windows of
        θ-sized arrays: they are left out, and made again from the copied θ-sized arrays
        (else each would become a separate array, no longer updated by a step of θ).

        The state stays keyed by the parameter objects, which are copied with it: pickle
        or deep-copy a model and its optimizer *together* (``copy.deepcopy((model,
        optimizer))``) and the copied optimizer steps the copied model, state and all.
        An optimizer copied alone holds its own copies of the parameters: given the
        original model's parameters it starts from fresh state, as a new one would.
        """
        state = dict(self.__dict__)
        vectors = [param for param in self.state if isinstance(param, ParameterVector)]
        windowed = [(vector, index) for vector in vectors
                    for index, member in enumerate(vector.parameters)
                    if member.vector is vector and member in self.state]
        dropped = {id(vector.parameters[index]) for vector, index in windowed}
        state["state"] = {param: slots for param, slots in self.state.items()
                          if id(param) not in dropped}
        state["_windowed"] = windowed
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        windowed = state.pop("_windowed", [])
        self.__dict__.update(state)
        for vector, index in windowed:
            self.state[vector.parameters[index]] = {
                name: vector.window(array, index) for name, array in self.state[vector].items()}

    def state_dict(self, params: list[Parameter]) -> dict[str, Any]:
        """The step counter and every state array, keyed ``"<index>.<slot>"`` by the
        parameter's position in ``params`` (so it can be saved and restored)."""
        arrays = {
            f"{index}.{name}": array
            for index, param in enumerate(params)
            for name, array in self.state.get(param, {}).items()
        }
        return {"type": type(self).__name__, "t": self.t, "config": self.config(),
                "arrays": arrays}

    def load_state_dict(self, params: list[Parameter], state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned, onto ``params`` (same order)."""
        self.t = int(state["t"])
        self.lr = float(state["config"].get("lr", self.lr))
        self.state = {}
        for key, array in state["arrays"].items():
            index, name = key.split(".", 1)
            self.state.setdefault(params[int(index)], {})[name] = array

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum, Nesterov and L2 decay.

        g ← g + λw                           (weight_decay, i.e. L2 regularization)
        plain:      w ← w − α g
        momentum:   b ← μ b + g  (b = 0 before the first step),   w ← w − α b
        Nesterov:   w ← w − α (g + μ b)

    The course notes write momentum as ``m = βm − α∇J; w = w + m``: that is the same
    update with m = −α b (while α stays constant).
    """

    def __init__(
        self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        self.momentum = _fraction("momentum", momentum)
        self.nesterov = bool(nesterov)
        self.slot_names = ("momentum_buffer",) if self.momentum else ()
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        if self.nesterov and self.momentum == 0.0:
            raise ConfigError("Nesterov momentum needs momentum > 0")

    def decay_factors(self) -> tuple[float, ...]:
        return (self.momentum,)

    def fused_rule(self) -> tuple[str, tuple[float, ...]] | None:
        return "sgd", (self.lr, self.momentum, float(self.nesterov), self.weight_decay)

    def update(self, param: Any, w: Any, g: Any) -> Any:
        if self.weight_decay:
            g = g + self.weight_decay * w
        if self.momentum:
            buffer = self.slots(param)["momentum_buffer"]
            buffer *= self.momentum  # from b = 0, the first step gives b = g, as torch
            buffer += g
            self.slots(param)["momentum_buffer"] = buffer
            g = g + self.momentum * buffer if self.nesterov else buffer
        w -= self.lr * g
        return w

    def config(self) -> dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e): scale each step by a running RMS of gradients.

        g ← g + λw
        v ← ρ v + (1 − ρ) g²
        w ← w − α g / (√v + ε)          (ε outside the square root, as torch)

    With ``momentum`` μ > 0:  b ← μ b + g / (√v + ε),  w ← w − α b.
    """

    def __init__(
        self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
        momentum: float = 0.0, weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        self.alpha = _fraction("alpha", alpha)
        self.eps = _positive("eps", eps)
        self.momentum = _fraction("momentum", momentum)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        self.slot_names = ("square_avg", "momentum_buffer") if self.momentum else ("square_avg",)

    def decay_factors(self) -> tuple[float, ...]:
        return (self.alpha, self.momentum)

    def fused_rule(self) -> tuple[str, tuple[float, ...]] | None:
        return "rmsprop", (self.lr, self.alpha, self.eps, self.momentum, self.weight_decay)

    def update(self, param: Any, w: Any, g: Any) -> Any:
        xp = namespace(w)
        if self.weight_decay:
            g = g + self.weight_decay * w
        state = self.slots(param)
        square_avg = state["square_avg"]
        square_avg *= self.alpha
        square_avg += (1.0 - self.alpha) * (g * g)
        state["square_avg"] = square_avg
        denominator = xp.sqrt(square_avg)
        denominator += self.eps
        if self.momentum:
            buffer = state["momentum_buffer"]
            buffer *= self.momentum
            buffer += g / denominator
            state["momentum_buffer"] = buffer
            w -= self.lr * buffer
        else:
            w -= self.lr * (g / denominator)
        return w

    def config(self) -> dict[str, Any]:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps,
                "momentum": self.momentum, "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015): momentum and RMS scaling with bias correction.

        g ← g + λw                                   (weight_decay: L2, as torch's Adam)
        m ← β₁ m + (1 − β₁) g                        first-moment estimate
        v ← β₂ v + (1 − β₂) g²                       second-moment estimate
        m̂ = m / (1 − β₁ᵗ),   v̂ = v / (1 − β₂ᵗ)      bias corrections
        w ← w − α m̂ / (√v̂ + ε)

    The code keeps the moments scaled, m̃ = m / (1 − β₁) and ṽ = v / (1 − β₂) (state
    slots ``m_scaled`` and ``v_scaled``), and folds every constant into two scalars, with
    c = √((1 − β₂) / (1 − β₂ᵗ)):

        m̃ ← β₁ m̃ + g,      ṽ ← β₂ ṽ + g²
        w ← w − α_t m̃ / (√ṽ + ε_t),   α_t = α (1 − β₁) / ((1 − β₁ᵗ) c),   ε_t = ε / c

    the same w in ten array operations per step, for all of θ at once.
    """

    slot_names = ("m_scaled", "v_scaled")

    def __init__(
        self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        self.betas = (_fraction("beta1", betas[0]), _fraction("beta2", betas[1]))
        self.eps = _positive("eps", eps)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        self._step_size = self._step_eps = 0.0  # α_t and ε_t of the current step

    def begin_step(self) -> None:
        super().begin_step()
        beta1, beta2 = self.betas
        t = self.t
        c = math.sqrt((1.0 - beta2) / (1.0 - beta2**t))
        self._step_size = self.lr * (1.0 - beta1) / ((1.0 - beta1**t) * c)
        self._step_eps = self.eps / c

    def step_scalars(self) -> dict[str, float]:
        return {"lr": self.lr, "_step_size": self._step_size, "_step_eps": self._step_eps}

    def decay_factors(self) -> tuple[float, ...]:
        return self.betas

    def fused_rule(self) -> tuple[str, tuple[float, ...]] | None:
        # the last coefficient shrinks w first: 1 here, 1 − α λ in AdamW
        return "adam", (*self.betas, self._step_size, self._step_eps, self.weight_decay, 1.0)

    def update(self, param: Any, w: Any, g: Any) -> Any:
        beta1, beta2 = self.betas
        if self.weight_decay:
            g = g + self.weight_decay * w
        state = self.slots(param)
        m, v = state["m_scaled"], state["v_scaled"]
        m *= beta1  # m̃ ← β₁ m̃ + g
        m += g
        v *= beta2  # ṽ ← β₂ ṽ + g²
        v += g * g
        state["m_scaled"], state["v_scaled"] = m, v  # the same arrays, or (JAX) new ones
        denominator = namespace(v).sqrt(v)  # w ← w − α_t m̃ / (√ṽ + ε_t)
        denominator += self._step_eps
        w -= self._step_size * m / denominator
        return w

    def config(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019):

        w ← w (1 − α λ)          on every parameter, before the Adam step
        then Adam's update with no L2 term in g.
    """

    def __init__(
        self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(lr, betas, eps, 0.0)
        self.decoupled_weight_decay = _non_negative("weight_decay", weight_decay)

    def update(self, param: Any, w: Any, g: Any) -> Any:
        if self.decoupled_weight_decay:
            w *= 1.0 - self.lr * self.decoupled_weight_decay
        return super().update(param, w, g)

    def fused_rule(self) -> tuple[str, tuple[float, ...]] | None:
        beta1, beta2 = self.betas
        shrink = 1.0 - self.lr * self.decoupled_weight_decay
        return "adam", (beta1, beta2, self._step_size, self._step_eps, 0.0, shrink)

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["weight_decay"] = self.decoupled_weight_decay
        return config


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW,
}


class Schedule:
    """A learning-rate schedule: ``lr(epoch)`` from the optimizer's initial rate.
    ``fit`` sets ``optimizer.lr`` from it at the start of every epoch (from 0)."""

    def __call__(self, base_lr: float, epoch: int) -> float:
        raise NotImplementedError


class StepDecay(Schedule):
    """``α_e = α₀ · γ^⌊e / step_size⌋``: multiply by γ every ``step_size`` epochs."""

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        if not isinstance(step_size, int) or step_size <= 0:
            raise ConfigError(f"step_size must be a positive integer, got {step_size!r}")
        self.step_size, self.gamma = step_size, _positive("gamma", gamma)

    def __call__(self, base_lr: float, epoch: int) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialDecay(Schedule):
    """``α_e = α₀ · γ^e``."""

    def __init__(self, gamma: float) -> None:
        self.gamma = _positive("gamma", gamma)

    def __call__(self, base_lr: float, epoch: int) -> float:
        return base_lr * self.gamma**epoch


class CosineDecay(Schedule):
    """``α_e = α_min + (α₀ − α_min)(1 + cos(π e / T)) / 2``, then α_min after T epochs."""

    def __init__(self, total_epochs: int, min_lr: float = 0.0) -> None:
        if not isinstance(total_epochs, int) or total_epochs <= 0:
            raise ConfigError(f"total_epochs must be a positive integer, got {total_epochs!r}")
        self.total_epochs, self.min_lr = total_epochs, _non_negative("min_lr", min_lr)

    def __call__(self, base_lr: float, epoch: int) -> float:
        progress = min(epoch, self.total_epochs) / self.total_epochs
        return self.min_lr + (base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
