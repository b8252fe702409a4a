"""Counting the array operations of a training step.

On a GPU every array operation costs at least one kernel launch, microseconds of host
time, more than the arithmetic of a small network's layer: a step costs about (array
operations per step) × (per-operation overhead). Unlike a time, a count is stable, so
tests can pin it. Two counters:

* torch (the nnscratch torch backend, and PyTorch's own autograd step):
  ``TorchDispatchMode`` sees every ATen operator, including those that autograd runs
  from C++ in ``backward`` and those that array-api-compat adds around a call (e.g. the
  index checks of ``take``). Views (``permute``, ``slice``, ``view``) count too: they
  launch no kernel but cost host time like the others.
* array-api-strict: the namespace's functions and the ``Array`` operators (``@``,
  ``+=``, indexing), wrapped while the counter is active; a call made from inside
  another counted call is not counted again.

``fit_ops`` measures ``fit`` on the benchmark network with the difference of two epochs
of different lengths, which separates the cost of a step from the cost of an epoch
(its shuffle, the loss read-back) exactly::

    ops(epoch of 2k steps) − ops(epoch of k steps) = k × (operations per step)

    python bench/opcount.py            # the table, on the installed backends
"""

from __future__ import annotations

import collections
import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import nnscratch as nn

LAYER_SIZES = (784, 256, 128, 10)
BATCH = 128


@contextlib.contextmanager
def torch_ops() -> Iterator[collections.Counter]:
    """Count every ATen operator run inside the block, by name."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counts: collections.Counter = collections.Counter()

    class Counting(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            counts[str(func)] += 1
            return func(*args, **(kwargs or {}))

    with Counting():
        yield counts


_STRICT_OPERATORS = (
    "__add__", "__sub__", "__mul__", "__truediv__", "__matmul__", "__pow__", "__neg__",
    "__radd__", "__rsub__", "__rmul__", "__rtruediv__", "__rmatmul__", "__rpow__",
    "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ipow__",
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__invert__", "__abs__",
    "__and__", "__or__", "__getitem__", "__setitem__",
)


@contextlib.contextmanager
def strict_ops() -> Iterator[collections.Counter]:
    """Count the array-api-strict functions and operators called inside the block."""
    import array_api_strict as strict
    from array_api_strict._array_object import Array

    counts: collections.Counter = collections.Counter()
    depth = [0]

    def counting(name: str, function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if depth[0] == 0:
                counts[name] += 1
            depth[0] += 1
            try:
                return function(*args, **kwargs)
            finally:
                depth[0] -= 1
        return wrapper

    saved: list[tuple[Any, str, Any]] = []
    for name in dir(strict):
        value = getattr(strict, name)
        if callable(value) and not isinstance(value, type) and not name.startswith("_"):
            saved.append((strict, name, value))
    for name in _STRICT_OPERATORS:
        if name in vars(Array):
            saved.append((Array, name, vars(Array)[name]))
    for owner, name, value in saved:
        setattr(owner, name, counting(name, value))
    try:
        yield counts
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def counter_for(backend: str) -> Callable[[], Any]:
    return {"torch": torch_ops, "array_api_strict": strict_ops}[backend]


def bench_data(samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped random data: the operations of a step do not depend on the values."""
    rng = np.random.default_rng(seed)
    return (rng.random((samples, LAYER_SIZES[0]), dtype=np.float32),
            rng.integers(0, LAYER_SIZES[-1], samples).astype(np.int64))


def bench_model() -> nn.Sequential:
    nn.seed(0)
    layers: list[nn.Layer] = []
    for fan_in, fan_out in zip(LAYER_SIZES[:-2], LAYER_SIZES[1:-1]):
        layers += [nn.Dense(fan_in, fan_out, init="he_normal"), nn.ReLU()]
    layers.append(nn.Dense(LAYER_SIZES[-2], LAYER_SIZES[-1], init="he_normal"))
    return nn.Sequential(*layers)


def ops_per_step(backend: str, epoch: Callable[[Any, Any], Any], steps: int = 20,
                 batch: int = BATCH) -> dict[str, Any]:
    """Array operations of ``epoch(X, y)`` (one training epoch in batches of ``batch``,
    on the active ``backend``), per step and per epoch, by the difference of an epoch of
    ``2·steps`` and one of ``steps`` steps; each length is run once untimed first."""
    device = nn.get_backend()
    counted = {}
    for k in (steps, 2 * steps):
        X, y = (device.asarray(a) for a in bench_data(k * batch))
        epoch(X, y)
        with counter_for(backend)() as counts:
            epoch(X, y)
        counted[k] = counts
    per_step = collections.Counter(counted[2 * steps])
    per_step.subtract(counted[steps])
    total = sum(per_step.values())
    return {
        "per_step": total / steps,
        "per_epoch": sum(counted[steps].values()) - total,
        "by_operation": {name: count / steps for name, count in per_step.most_common()
                         if count},
    }


def fit_ops(backend: str = "torch", steps: int = 20, batch: int = BATCH,
            optimizer: Callable[[], nn.Optimizer] = nn.Adam) -> dict[str, Any]:
    """Array operations of ``fit`` on the benchmark network (ReLU, softmax
    cross-entropy, ``optimizer``), per step and per epoch, counted on ``backend``."""
    with nn.use_backend(backend):
        model, adam, loss = bench_model(), optimizer(), nn.SoftmaxCrossEntropy()
        return ops_per_step(backend, lambda X, y: model.fit(
            X, y, loss=loss, optimizer=adam, epochs=1, batch_size=batch, seed=1),
            steps, batch)


def pytorch_ops(steps: int = 4, batch: int = BATCH, fused: bool = False,
                device: str = "cpu") -> float:
    """ATen operators per step of PyTorch's own loop on the same network (autograd,
    ``torch.optim.Adam``; forward, loss, backward, step, the loss kept on the device)."""
    import torch

    torch.manual_seed(0)
    sizes = LAYER_SIZES
    modules: list[Any] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        modules += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    modules.append(torch.nn.Linear(sizes[-2], sizes[-1]))
    model = torch.nn.Sequential(*modules).to(device)
    adam = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    X, y = (torch.as_tensor(a, device=device) for a in bench_data(steps * batch))

    def step(index: int) -> Any:
        xb, yb = X[index * batch:(index + 1) * batch], y[index * batch:(index + 1) * batch]
        adam.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        adam.step()
        return loss.detach()

    for index in range(steps):  # warm-up: Adam's state exists from here on
        step(index)
    with torch_ops() as counts:
        for index in range(steps):
            step(index)
    return sum(counts.values()) / steps


def main(argv: list[str] | None = None) -> int:
    import importlib.util

    rows = []
    for backend in ("torch", "array_api_strict"):
        if importlib.util.find_spec(backend) is None:
            continue
        for name, factory in (("Adam", nn.Adam), ("SGD", nn.SGD)):
            result = fit_ops(backend, optimizer=factory)
            rows.append((f"nnscratch fit, {backend} backend, {name}", result["per_step"],
                         result["per_epoch"]))
            if backend == "torch" and name == "Adam":
                breakdown = result["by_operation"]
    if importlib.util.find_spec("torch") is not None:
        rows.append(("PyTorch autograd + Adam (foreach)", pytorch_ops(), None))
        rows.append(("PyTorch autograd + Adam (fused)", pytorch_ops(fused=True), None))
    print(f"{'implementation':<46}{'ops/step':>10}{'ops/epoch':>11}")
    for name, per_step, per_epoch in rows:
        epoch = "" if per_epoch is None else f"{per_epoch:>11.0f}"
        print(f"{name:<46}{per_step:>10.1f}{epoch}")
    if importlib.util.find_spec("torch") is not None:
        print("\nnnscratch fit (torch, Adam), per step:")
        for name, count in breakdown.items():
            print(f"  {count:5.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
