"""Parameters, and θ: all of a model's parameters as one vector.

The course notes write gradient descent for the whole model at once,

    θ ← θ − α ∇J(θ),

with θ every weight and bias of the network laid end to end. A ``Sequential`` keeps its
parameters exactly so: one flat array θ (``ParameterVector.value``) and one flat array
∇θ (``ParameterVector.grad``), each layer's weight and bias being *windows* of them,
``reshape(θ[start:stop], shape)``. Layers read and write their windows as if they were
their own arrays; an optimizer updates θ as one array, so a step of Adam is ten array
operations for the whole model, however many layers it has. (On a GPU every array
operation is a kernel launch that costs microseconds of host time, more than a small
layer's arithmetic: the number of operations per step is what sets the speed.)

Windows rely on slicing and reshaping returning *views* that share memory with θ, as
they do in NumPy, CuPy, PyTorch and array-api-strict. The Array API standard does not
promise views, so ``views_alias`` checks it once per namespace and device; where writes
do not pass through, a model keeps separate arrays and optimizers update them one by one.

JAX is such a library: its arrays are immutable, so a window could never be written.
There each parameter is an array of its own, replaced (not changed) by every update, and
an optimizer's step returns the new values. θ as one vector exists to cut the number of
array operations of an eager step; a JAX step is compiled (``fit(compile=...)``), and
the compiler fuses the per-parameter updates anyway.
"""

from __future__ import annotations

import math
from typing import Any

from .backend import matmul_into, mutable, namespace
from .errors import DataError, ShapeError


class Parameter:
    """A trainable array (``value``) and the gradient of the loss with respect to it
    (``grad``, overwritten by every ``backward``; no accumulation, no zero_grad).

    In a model, ``value`` and ``grad`` are windows of the model's θ and ∇θ: assigning
    to them writes into those windows (``param.value = array`` copies ``array`` in).
    """

    def __init__(self, value: Any, name: str = "") -> None:
        self.name = name
        self._value = value
        self._grad: Any = None
        self.vector: ParameterVector | None = None  # the θ this parameter is a window of
        self._grad_window: Any = None

    @property
    def value(self) -> Any:
        return self._value

    @value.setter
    def value(self, new: Any) -> None:
        if self.vector is None:
            if self._value is not None and hasattr(new, "shape"):
                _check_shape(self._value, new, f"parameter {self.name!r}")
            self._value = new
        else:
            _copy_into(self._value, new, f"parameter {self.name!r}")

    @property
    def grad(self) -> Any:
        return self._grad

    @grad.setter
    def grad(self, new: Any) -> None:
        if self.vector is None or new is None:
            if new is not None and self._value is not None and hasattr(new, "shape"):
                _check_shape(self._value, new, f"the gradient of parameter {self.name!r}")
            self._grad = new
        else:
            _copy_into(self._grad_window, new, f"the gradient of parameter {self.name!r}")
            self._grad = self._grad_window

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._value.shape)

    def __getstate__(self) -> dict[str, Any]:
        """For pickle and deepcopy: a parameter of a θ keeps no arrays of its own (its
        windows would travel as separate copies, no longer sharing θ's memory); the
        ``ParameterVector`` gives them back when it is rebuilt."""
        if self.vector is None:
            return dict(self.__dict__)
        return {"name": self.name, "vector": self.vector}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.vector is None:
            return
        self._value = self._grad = self._grad_window = None
        if hasattr(self.vector, "value"):  # θ already rebuilt (else it binds us later)
            self.vector.bind(self)

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.shape}, dtype={self._value.dtype})"


def _check_shape(current: Any, new: Any, what: str) -> None:
    """Another shape or dtype is refused: another dtype would be rounded silently into a
    float32 θ (a float64 gradient check would lose nine digits)."""
    if tuple(new.shape) != tuple(current.shape):
        raise ShapeError(
            f"cannot assign an array of shape {tuple(new.shape)} to {what}, of shape "
            f"{tuple(current.shape)}"
        )
    if new.dtype != current.dtype:
        raise DataError(
            f"cannot assign an array of dtype {new.dtype} to {what}, of dtype "
            f"{current.dtype} (values are not rounded silently): convert the array to "
            f"{current.dtype} first, or build the model in the array's dtype, e.g. "
            'nn.Dense(..., dtype="float64") or nn.mlp(..., dtype="float64")'
        )


def _copy_into(window: Any, new: Any, what: str) -> None:
    """``window[...] = new``, with the shape and dtype checked first."""
    _check_shape(window, new, what)
    window[...] = new


class ParameterVector:
    """θ and ∇θ for a list of parameters of one dtype, on one device.

    ``value`` is θ, ``grad`` is ∇θ (both 1-D). Parameter ``i`` is the window
    ``θ[start_i : start_i + size_i]`` reshaped to its shape, and likewise for its
    gradient. Building the vector copies the parameters' current values in and rebinds
    each parameter to its windows; the parameter objects themselves stay the same.
    """

    name = "θ"

    def __init__(self, parameters: list[Parameter]) -> None:
        first = parameters[0].value
        xp = namespace(first)
        self.xp = xp
        self.parameters = list(parameters)
        self.spans: list[tuple[int, int, tuple[int, ...]]] = []
        start = 0
        for param in parameters:
            size = math.prod(param.shape)
            self.spans.append((start, start + size, param.shape))
            start += size
        self.value = xp.empty((start,), dtype=first.dtype, device=first.device)
        self.grad = xp.zeros((start,), dtype=first.dtype, device=first.device)
        for param, (begin, end, _) in zip(self.parameters, self.spans):
            self.value[begin:end] = xp.reshape(param.value, (-1,))
        for index, param in enumerate(self.parameters):
            gradient = param._grad  # a gradient already computed moves in with the value
            param.vector = self
            param._value = self.window(self.value, index)
            param._grad_window = self.window(self.grad, index)
            param._grad = None
            if gradient is not None:
                param.grad = gradient

    def __getstate__(self) -> dict[str, Any]:
        """For pickle and deepcopy: θ and ∇θ as their library pickles arrays (the library
        and device travel with them), the layout, and which parameters are windows of
        this θ and have a gradient. ``xp``, a module, is not kept: ``__setstate__`` finds
        it again from θ, and lays every parameter out again as windows of the new θ."""
        return {"value": self.value, "grad": self.grad, "spans": self.spans,
                "parameters": self.parameters,
                "bound": [(param.vector is self, param._grad is not None)
                          for param in self.parameters]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.value, self.grad = state["value"], state["grad"]
        self.spans, self.parameters = state["spans"], state["parameters"]
        self.xp = namespace(self.value)
        self._bound = {id(param): has_grad for param, (held, has_grad)
                       in zip(self.parameters, state["bound"]) if held}
        for param in self.parameters:
            if id(param) in self._bound:
                self.bind(param)

    def bind(self, param: Parameter) -> None:
        """Make ``param`` (one of this vector's, being unpickled) a window of θ and ∇θ
        again, with its gradient if it had one."""
        index = next(i for i, member in enumerate(self.parameters) if member is param)
        param.vector = self
        param._value = self.window(self.value, index)
        param._grad_window = self.window(self.grad, index)
        param._grad = param._grad_window if self._bound[id(param)] else None

    def window(self, flat: Any, index: int) -> Any:
        """Parameter ``index``'s part of the flat array ``flat``, in its own shape."""
        start, stop, shape = self.spans[index]
        return self.xp.reshape(flat[start:stop], shape)

    def span(self, members: list[Parameter], shape: tuple[int, ...]) -> Span | None:
        """Consecutive ``members`` of this vector seen as one array of ``shape`` (see
        ``Span``); None if they do not lie side by side in it."""
        ids = [id(param) for param in self.parameters]
        try:
            first = ids.index(id(members[0]))
        except ValueError:
            return None
        if ids[first:first + len(members)] != [id(param) for param in members]:
            return None
        start, stop = self.spans[first][0], self.spans[first + len(members) - 1][1]
        if stop - start != math.prod(shape):
            return None
        return Span(self, members, self.xp.reshape(self.value[start:stop], shape),
                    self.xp.reshape(self.grad[start:stop], shape))

    def holds_all(self) -> bool:
        """True while every parameter is still a window of this vector (a parameter
        moves to another vector when a second model is built around its layer)."""
        return all(param.vector is self for param in self.parameters)

    def ready(self) -> bool:
        """True when an optimizer may update θ as one array: every parameter is still a
        window of it and has a gradient (a backward has filled ∇θ)."""
        return all(param.vector is self and param._grad is not None
                   for param in self.parameters)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    def __len__(self) -> int:
        return len(self.parameters)

    def __repr__(self) -> str:
        return (f"ParameterVector({len(self.parameters)} parameters, {self.shape[0]:,} "
                f"values, dtype={self.value.dtype})")


class Span:
    """Consecutive parameters of one vector seen as a single array, e.g. a Dense layer's
    weight W (in, out) and bias b (out,), side by side in θ, as the rows of
    W̃ = [W; b] (in + 1, out). ``value`` is that view of θ; assigning ``grad`` writes
    the gradients of all of them at once into ∇θ."""

    def __init__(self, vector: ParameterVector, members: list[Parameter], value: Any,
                 grad_window: Any) -> None:
        self.vector, self.members = vector, members
        self.value, self._grad_window = value, grad_window

    @property
    def grad(self) -> Any:
        return self._grad_window

    @grad.setter
    def grad(self, new: Any) -> None:
        _copy_into(self._grad_window, new, "the gradient of " + ", ".join(
            repr(param.name) for param in self.members))
        self._mark_gradients()

    def set_grad_product(self, a: Any, b: Any) -> None:
        """``grad = a @ b``, the product written straight into ∇θ where the library
        allows (``backend.matmul_into``)."""
        matmul_into(a, b, self._grad_window)
        self._mark_gradients()

    def _mark_gradients(self) -> None:
        for param in self.members:
            param._grad = param._grad_window


class Parameters(list):
    """``model.parameters()``: the parameters in layer order, and (``vector``) the θ they
    are windows of, or None. An optimizer given this list updates θ in one go."""

    def __init__(self, parameters: list[Parameter], vector: ParameterVector | None) -> None:
        super().__init__(parameters)
        self.vector = vector


_ALIASING: dict[tuple[int, str], bool] = {}


def views_alias(xp: Any, dtype: Any, device: Any) -> bool:
    """Whether, on this namespace and device, a reshaped slice shares memory with the
    array it was cut from, both ways: a write into the array shows in the window, and an
    in-place operation on the window shows in the array. Checked once per namespace and
    device (one small host read)."""
    key = (id(xp), str(device))  # namespaces are modules: one object each
    aliasing = _ALIASING.get(key)
    if aliasing is None:
        flat = xp.zeros((6,), dtype=dtype, device=device)
        if not mutable(flat):  # JAX: immutable arrays, each parameter an array of its own
            _ALIASING[key] = False
            return False
        window = xp.reshape(flat[2:6], (2, 2))
        flat[...] = 1.0  # seen through the window: window sums to 4
        seen = float(xp.sum(window)) == 4.0
        window += 1.0  # seen in the flat array: 1 + 1 + 4 · 2 = 10
        aliasing = _ALIASING[key] = seen and float(xp.sum(flat)) == 10.0
    return aliasing


def pack(parameters: list[Parameter]) -> ParameterVector | None:
    """θ for ``parameters``, or None where one flat vector cannot hold them (none, mixed
    dtypes or libraries, or a namespace whose slices are not views)."""
    if not parameters:
        return None
    first = parameters[0].value
    for param in parameters:
        value = param.value
        if type(value) is not type(first) or value.dtype != first.dtype \
                or value.device != first.device:
            return None
    if not views_alias(namespace(first), first.dtype, first.device):
        return None
    return ParameterVector(parameters)
