"""nnscratch against PyTorch and plain NumPy: the MNIST MLP 784-256-128-10.

    nox -s bench                                   # numpy + PyTorch + array-api-strict
    python bench/mlp.py --rounds 7 --steps 200     # the numbers in bench/README.md
    python bench/mlp.py --quick                    # a smoke test, under a minute
    python bench/mlp.py --profile                  # plus where a numpy step's time goes

Every implementation trains the same network (ReLU, softmax cross-entropy, Adam lr 1e-3,
float32) from the same initial weights (nnscratch's, copied), on the same MNIST samples
in the same shuffled order, with the data already resident on the device. Each round is
one epoch over ``steps × batch`` samples (one shuffle, then ``steps`` steps); the rounds
of all implementations are interleaved and the ratios taken per round (see common.py).

The implementations, per batch size:

* nnscratch on every installed backend, through the public ``model.fit`` (the number
  that matters), and through the course notes' loop written by hand (forward, loss,
  backward, step) as a second row; array-api-strict runs fewer steps (it is a
  correctness tool, its row is informational);
* PyTorch ``nn.Sequential`` + ``torch.optim.Adam`` (default, and ``fused=True`` where
  supported), on the CPU and on CUDA where there is one; its loop also accumulates the
  loss and the correct count on the device, as ``fit`` does;
* a plain NumPy reference written the obvious way (``NumpyMLP`` below): what the Array
  API layer costs;
* the step's eight matrix products alone in plain NumPy: the floor for the CPU.

A step's matmul FLOPs (a multiply-add counts 2), for batch B and layers (in_l, out_l):

    forward                 3 matmuls   2·B·Σ_l in_l·out_l
    weight gradients        3 matmuls   2·B·Σ_l in_l·out_l
    input gradients         2 matmuls   2·B·Σ_{l≥2} in_l·out_l   (layer 1's is not needed)
    total = 3 · 2B·(784·256 + 256·128 + 128·10) − 2B·784·256 = 1,007,104 · B

``% peak`` divides that rate by the device's best large-matmul rate (float32, 2048² on
the CPU with numpy and torch, 8192² on a GPU), timed as one more candidate in the same
rounds: a per-round ratio like the others.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    DEFAULT_DATA,
    Candidate,
    environment,
    format_range,
    gpu_name,
    limit_threads,
    load_average,
    nothing,
    now,
    print_flush,
    ratio,
    run_interleaved,
    spread,
    table,
    timed,
    verdict,
    write_results,
)
from common import default_results_path as results_path_for
from opcount import ops_per_step, pytorch_ops

import nnscratch as nn
from nnscratch import random as nn_random
from nnscratch.errors import NNScratchError

LAYER_SIZES = (784, 256, 128, 10)
TRAIN_SAMPLES = 60_000
SEED = 0
LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8

PYTORCH_CPU = "PyTorch cpu (Adam)"
PYTORCH_CUDA = "PyTorch cuda (Adam)"
REFERENCE = "NumPy reference"
MATMULS = "NumPy matmuls only"
FLOOR = "NumPy floor (out=, no temporaries)"

# Targets (issue): numpy backend at batch 128 against PyTorch CPU, the reference, the
# matmuls alone; peak memory against what must be resident.
TARGET_BATCH = 128
TARGET_VS_PYTORCH = 2 / 3  # issue 12: an epoch at least 1.5x faster than PyTorch CPU
TARGET_VS_REFERENCE = 1.0
TARGET_VS_MATMULS = 1.3
TARGET_MEMORY = 1.5


def step_flops(batch: int, sizes: tuple[int, ...] = LAYER_SIZES) -> int:
    """Matmul FLOPs of one training step (see the module docstring)."""
    products = [fan_in * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    return 2 * batch * (3 * sum(products) - products[0])


def steps_per_epoch(batch: int) -> int:
    return -(-TRAIN_SAMPLES // batch)


# -- data ------------------------------------------------------------------------------


def load_data(path: str | None, download: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """MNIST's training set as host arrays (from ``path``, else ``NNSCRATCH_DATA``, else
    ../shared/data/mnist), or random data of the same shape (the step time does not
    depend on pixel values) when MNIST cannot be found."""
    root = path or os.environ.get("NNSCRATCH_DATA") or (
        str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None)
    try:
        from nnscratch.datasets import load

        data = load("mnist", root, download=download, progress=False, report=None)
    except (ImportError, NNScratchError) as exc:
        print_flush(f"note: MNIST not available ({exc}); timing on random data of the "
                    "same shape instead")
        rng = np.random.default_rng(SEED)
        X = rng.random((TRAIN_SAMPLES, LAYER_SIZES[0]), dtype=np.float32)
        y = rng.integers(0, LAYER_SIZES[-1], TRAIN_SAMPLES).astype(np.int64)
        return X, y, "synthetic (MNIST not found)"
    return data.x_train, data.y_train, f"MNIST train ({data.source})"


def sample_subset(X: np.ndarray, y: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``samples`` samples, wrapping around when more are asked than exist."""
    if samples <= X.shape[0]:
        return X[:samples], y[:samples]
    index = np.arange(samples) % X.shape[0]
    return X[index], y[index]


def shuffle_order(samples: int) -> np.ndarray:
    """The permutation ``fit(seed=SEED)`` draws for an epoch of ``samples`` samples."""
    return nn_random.permutation(samples, nn_random.make_generator(SEED, "shuffle"))


def initial_weights() -> list[tuple[np.ndarray, np.ndarray]]:
    """nnscratch's initial (weight, bias) per Dense layer, as float32 host arrays."""
    with nn.use_backend("numpy"):
        nn.seed(SEED)
        model = build_model()
        return [(np.array(layer.weight.value), np.array(layer.bias.value))
                for layer in model.layers if isinstance(layer, nn.Dense)]


def build_model(initial: list[tuple[np.ndarray, np.ndarray]] | None = None) -> nn.Sequential:
    """The MLP on the active backend, optionally starting from the given weights."""
    layers: list[nn.Layer] = []
    for fan_in, fan_out in zip(LAYER_SIZES[:-1], LAYER_SIZES[1:]):
        layers += [nn.Dense(fan_in, fan_out), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    if initial is not None:
        backend = nn.get_backend()
        dense = [layer for layer in model.layers if isinstance(layer, nn.Dense)]
        for layer, (weight, bias) in zip(dense, initial):
            layer.weight.value = backend.asarray(weight, dtype="float32", copy=True)
            layer.bias.value = backend.asarray(bias, dtype="float32", copy=True)
    return model


# -- the plain NumPy reference ---------------------------------------------------------


class NumpyMLP:
    """The same network, written the obvious way in plain NumPy.

    ReLU hidden layers, softmax cross-entropy on the logits, Adam as torch computes it.
    Only Python floats meet the arrays (never NumPy float64 scalars, which NumPy 2
    would let upcast the float32 arrays), so everything stays float32.
    """

    def __init__(self, initial: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.weights = [np.array(weight, dtype=np.float32) for weight, _ in initial]
        self.biases = [np.array(bias, dtype=np.float32) for _, bias in initial]
        self.m = [np.zeros_like(p) for p in self.weights + self.biases]
        self.v = [np.zeros_like(p) for p in self.weights + self.biases]
        self.t = 0

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Affine layers with ReLU between; keeps each layer's input for backward."""
        self.inputs = []
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            self.inputs.append(x)
            x = x @ weight + bias
            if index < last:
                x = np.maximum(x, 0.0)
        return x

    def loss(self, logits: np.ndarray, labels: np.ndarray) -> tuple[Any, np.ndarray]:
        """Mean softmax cross-entropy and its gradient (softmax − onehot) / n."""
        n = logits.shape[0]
        rows = np.arange(n)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exponentials = np.exp(shifted)
        sums = exponentials.sum(axis=1, keepdims=True)
        value = np.mean(np.log(sums[:, 0]) - shifted[rows, labels])
        gradient = exponentials / sums
        gradient[rows, labels] -= 1.0
        gradient *= 1.0 / n
        return value, gradient

    def backward(self, gradient: np.ndarray) -> list[np.ndarray]:
        """Weight and bias gradients (weights first, as ``self.weights + self.biases``)."""
        weight_grads, bias_grads = [], []
        for index in range(len(self.weights) - 1, -1, -1):
            layer_input = self.inputs[index]
            weight_grads.append(layer_input.T @ gradient)
            bias_grads.append(gradient.sum(axis=0))
            if index > 0:  # the first layer's input is data: no gradient needed
                gradient = (gradient @ self.weights[index].T) * (layer_input > 0.0)
        return weight_grads[::-1] + bias_grads[::-1]

    def adam(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        beta1, beta2 = BETAS
        step_size = LR / (1.0 - beta1**self.t)
        correction = math.sqrt(1.0 - beta2**self.t)
        for param, grad, m, v in zip(self.weights + self.biases, grads, self.m, self.v):
            m *= beta1
            m += (1.0 - beta1) * grad
            v *= beta2
            v += (1.0 - beta2) * (grad * grad)
            param -= step_size * m / (np.sqrt(v) / correction + EPS)

    def epoch(self, X: np.ndarray, y: np.ndarray, batch: int) -> tuple[float, int]:
        """One shuffled epoch; the mean loss and the number classified right."""
        order = shuffle_order(X.shape[0])
        losses, correct = [], 0
        for start in range(0, X.shape[0], batch):
            index = order[start:start + batch]
            xb, yb = X[index], y[index]
            logits = self.forward(xb)
            value, gradient = self.loss(logits, yb)
            self.adam(self.backward(gradient))
            losses.append(value)
            correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
        return float(np.mean(losses)), correct

    def parameters(self) -> list[np.ndarray]:
        return [p for pair in zip(self.weights, self.biases) for p in pair]


class NumpyFloor:
    """The same step as ``NumpyMLP`` with every array written into a buffer allocated
    once (``out=``, in-place ReLU, Adam with scaled moments): no temporaries at all.

    NumPy-only code that the Array API cannot express (it has no ``out=``); it is here
    to measure the lowest a NumPy step reaches on this machine, against which the
    target "within 1.3x of the matmuls alone" can be judged. The elementwise work
    (bias adds, ReLU, softmax, and Adam's ~11 passes over every weight) runs on one
    core, while the products use all of them.
    """

    def __init__(self, initial: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.weights = [np.array(weight, dtype=np.float32) for weight, _ in initial]
        self.biases = [np.array(bias, dtype=np.float32) for _, bias in initial]
        self.params = self.weights + self.biases
        self.grads = [np.empty_like(p) for p in self.params]
        self.m = [np.zeros_like(p) for p in self.params]  # m / (1 − β₁)
        self.v = [np.zeros_like(p) for p in self.params]  # v / (1 − β₂)
        self.scratch = [np.empty_like(p) for p in self.params]
        self.t = 0
        self.buffers: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    def step(self, X: np.ndarray, y: np.ndarray, index: np.ndarray) -> tuple[float, int]:
        n = index.shape[0]
        if n not in self.buffers:  # activations and their gradients, per batch size
            self.buffers[n] = ([np.empty((n, width), np.float32) for width in LAYER_SIZES],
                               [np.empty((n, width), np.float32) for width in LAYER_SIZES])
        h, d = self.buffers[n]
        np.take(X, index, axis=0, out=h[0], mode="clip")  # "raise" would buffer a copy
        labels = y[index]
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            np.matmul(h[i], weight, out=h[i + 1])
            h[i + 1] += bias
            if i < last:
                np.maximum(h[i + 1], 0.0, out=h[i + 1])
        logits, gradient = h[-1], d[-1]
        correct = int(np.count_nonzero(logits.argmax(axis=1) == labels))
        np.subtract(logits, logits.max(axis=1, keepdims=True), out=gradient)
        picked = gradient[np.arange(n), labels]
        np.exp(gradient, out=gradient)
        sums = gradient.sum(axis=1, keepdims=True)
        value = float(np.mean(np.log(sums[:, 0]) - picked))
        gradient /= sums
        gradient[np.arange(n), labels] -= 1.0
        gradient *= 1.0 / n
        for i in range(last, -1, -1):
            np.matmul(h[i].T, d[i + 1], out=self.grads[i])
            np.sum(d[i + 1], axis=0, out=self.grads[last + 1 + i])
            if i > 0:
                np.matmul(d[i + 1], self.weights[i].T, out=d[i])
                d[i] *= h[i] > 0.0
        self.adam()
        return value, correct

    def adam(self) -> None:
        self.t += 1
        beta1, beta2 = BETAS
        c = math.sqrt((1.0 - beta2) / (1.0 - beta2**self.t))
        step_size = LR * (1.0 - beta1) / ((1.0 - beta1**self.t) * c)
        for param, grad, m, v, s in zip(self.params, self.grads, self.m, self.v,
                                        self.scratch):
            m *= beta1
            m += grad
            np.multiply(grad, grad, out=s)
            v *= beta2
            v += s
            np.sqrt(v, out=s)
            s += EPS / c
            np.divide(m, s, out=s)
            s *= step_size
            param -= s

    def epoch(self, X: np.ndarray, y: np.ndarray, batch: int) -> tuple[float, int]:
        order = shuffle_order(X.shape[0])
        losses, correct = [], 0
        for start in range(0, X.shape[0], batch):
            value, right = self.step(X, y, order[start:start + batch])
            losses.append(value)
            correct += right
        return float(np.mean(losses)), correct

    def parameters(self) -> list[np.ndarray]:
        return [p for pair in zip(self.weights, self.biases) for p in pair]


class MatmulsOnly:
    """The eight matrix products of one training step in plain NumPy, nothing else.

    They write into preallocated outputs (``out=``): this row is BLAS alone. Allocating
    the outputs would add the allocator's cost, which on glibc can exceed the products'
    own when a freed block is handed back to the OS and faulted in again on the next
    step; the real steps pay that or not depending on what else they allocate.
    """

    def __init__(self, X: np.ndarray, initial: list[tuple[np.ndarray, np.ndarray]],
                 batch: int) -> None:
        rng = np.random.default_rng(SEED)
        x = np.ascontiguousarray(X[:batch])
        W1, W2, W3 = (weight for weight, _ in initial)
        h1, h2 = (rng.random((batch, width), dtype=np.float32) for width in LAYER_SIZES[1:-1])
        g1, g2, g3 = (rng.standard_normal((batch, width), dtype=np.float32)
                      for width in LAYER_SIZES[1:])
        self.products = [
            (x, W1), (h1, W2), (h2, W3),             # forward
            (h2.T, g3), (h1.T, g2), (x.T, g1),       # weight gradients
            (g3, W3.T), (g2, W2.T),                  # input gradients of layers 3 and 2
        ]
        self.outputs = [np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
                        for a, b in self.products]

    def step(self) -> None:
        for (a, b), out in zip(self.products, self.outputs):
            np.matmul(a, b, out=out)

    def flops(self) -> int:
        return sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in self.products)


# -- PyTorch ---------------------------------------------------------------------------


def torch_model(torch: Any, initial: list[tuple[np.ndarray, np.ndarray]], device: str) -> Any:
    layers: list[Any] = []
    for weight, bias in initial:
        linear = torch.nn.Linear(*weight.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.T)))
            linear.bias.copy_(torch.from_numpy(bias))
        layers += [linear, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1]).to(device)


def torch_epoch(torch: Any, model: Any, optimizer: Any, X: Any, y: Any,
                batch: int) -> tuple[float, int]:
    """One shuffled epoch, the loss and the correct count summed on the device (as
    ``fit`` does) and read once at the end."""
    device = X.device
    order = torch.from_numpy(shuffle_order(X.shape[0])).to(device)
    total = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, X.shape[0], batch):
        index = order[start:start + batch]
        xb, yb = X[index], y[index]
        outputs = model(xb)
        loss = torch.nn.functional.cross_entropy(outputs, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        correct += (outputs.argmax(dim=1) == yb).sum()
    return float(total), int(correct)


# -- nnscratch -------------------------------------------------------------------------


def manual_epoch(model: nn.Sequential, loss: nn.Loss, optimizer: nn.Optimizer, X: Any, y: Any,
                 batch: int) -> float:
    """The course notes' loop by hand: gather, forward, loss, backward, step."""
    backend = nn.get_backend()
    xp = backend.xp
    parameters = model.parameters()
    order = backend.asarray(shuffle_order(X.shape[0]))
    losses = []
    samples = X.shape[0]
    for start in range(0, samples, batch):
        index = order[start:min(start + batch, samples)]  # the standard has no overshoot
        xb, yb = xp.take(X, index, axis=0), xp.take(y, index, axis=0)
        outputs = model.forward(xb, training=True)
        losses.append(loss.forward(outputs, yb))
        model.backward(loss.backward(), need_input_grad=False)
        optimizer.step(parameters)
    return float(xp.sum(xp.stack(losses)))


def count_ops(name: str, device: str | None, loop: str, batch: int,
              initial: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Array operations per step of one nnscratch row (see opcount.py). The torch and
    array-api-strict backends are counted as they run; NumPy's and CuPy's operators
    cannot be intercepted, so their rows show the count of the same calls on
    array-api-strict."""
    counter = name if name in ("torch", "array_api_strict") else "array_api_strict"
    with nn.use_backend(counter, device if counter == name else None):
        model, optimizer = build_model(initial), nn.Adam(lr=LR, betas=BETAS, eps=EPS)
        loss = nn.SoftmaxCrossEntropy()

        def epoch(X: Any, y: Any) -> None:
            if loop == "fit":
                model.fit(X, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=batch,
                          seed=SEED)
            else:
                manual_epoch(model, loss, optimizer, X, y, batch)

        counted = ops_per_step(counter, epoch, steps=3, batch=batch)
    return {"per_step": counted["per_step"], "per_epoch": counted["per_epoch"],
            "counted_on": counter, "same_backend": counter == name}


def parse_backend(spec: str) -> tuple[str, str | None]:
    name, _, device = spec.partition(":")
    return name.strip(), (device.strip() or None)


def backend_label(name: str, device: str | None) -> str:
    if name == "torch":
        return f"torch:{device or 'cpu'}"
    return name if device is None else f"{name}:{device}"


def device_kind(name: str, device: str | None) -> str:
    if name == "cupy" or (device or "").startswith("cuda"):
        return "cuda"
    return "cpu"


# -- matmul peak -----------------------------------------------------------------------


class PeakMatmul:
    """A large float32 matmul of one library on one device: the rate the machine can
    reach, timed as one more candidate in every round (so ``% peak`` compares runs that
    sat next to each other in time, like the ratios)."""

    def __init__(self, label: str, device: str, size: int, multiply: Any, make: Any,
                 sync: Any) -> None:
        self.label, self.device, self.size = label, device, size
        self.multiply, self.sync = multiply, sync
        self.a, self.b = make(size), make(size)
        self.multiply(self.a, self.b)
        self.count = 1  # products per timing: at least 50 ms of work
        while timed(self.run, sync) < 0.05 and self.count < 64:
            self.count *= 2

    def run(self) -> None:
        for _ in range(self.count):
            self.multiply(self.a, self.b)

    def flops(self) -> int:
        return 2 * self.size**3


def peak_matmuls(torch: Any, cupy: Any, quick: bool) -> list[PeakMatmul]:
    """numpy (and torch) on the CPU, 2048²; torch and cupy on a GPU, 8192²."""
    rng = np.random.default_rng(SEED)
    cpu, gpu = (1024, 4096) if quick else (2048, 8192)

    def host(size: int) -> np.ndarray:
        return rng.random((size, size), dtype=np.float32)

    peaks = [PeakMatmul("numpy cpu", "cpu", cpu, np.matmul, host, nothing)]
    if torch is not None:
        peaks.append(PeakMatmul("torch cpu", "cpu", cpu, torch.matmul,
                                lambda n: torch.from_numpy(host(n)), nothing))
        if torch.cuda.is_available():
            peaks.append(PeakMatmul("torch cuda", "cuda", gpu, torch.matmul,
                                    lambda n: torch.rand((n, n), device="cuda"),
                                    torch.cuda.synchronize))
    if cupy is not None:
        peaks.append(PeakMatmul("cupy cuda", "cuda", gpu, cupy.matmul,
                                lambda n: cupy.random.random((n, n), dtype=cupy.float32),
                                lambda: cupy.cuda.Device().synchronize()))
    return peaks


# -- one batch size --------------------------------------------------------------------


class BatchRun:
    """The candidates of one batch size, their warm-up, and their weights afterwards.

    Every implementation warms up on the same first ``warmup × batch`` samples in the
    same order, from the same initial weights, so their weights after warm-up must agree
    (to float32 rounding): ``max|dW|`` in the table checks that they do the same work.
    """

    def __init__(self, args: argparse.Namespace, X: np.ndarray, y: np.ndarray,
                 initial: list[tuple[np.ndarray, np.ndarray]], batch: int,
                 torch: Any) -> None:
        self.args, self.batch, self.torch, self.initial = args, batch, torch, initial
        most = max(args.steps, args.strict_steps, args.warmup)
        self.X_host, self.y_host = sample_subset(X, y, most * batch)
        self.candidates: list[Candidate] = []
        self.skipped: list[dict[str, str]] = []
        self.weights_after_warmup: dict[str, list[np.ndarray]] = {}

    def host_data(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``steps`` batches' samples (views of one host array)."""
        samples = steps * self.batch
        return self.X_host[:samples], self.y_host[:samples]

    def add(self, candidate: Candidate, warm_up: Any, weights: Any) -> None:
        """Warm ``candidate`` up and keep its weights for the comparison; and warm it
        up again, untimed, before each of its timed runs. Without that, whichever runs
        first in a round (after the large matmuls of the peak rows) was measured ~10%
        slower than the same code run second: caches and allocator state left behind by
        the previous run are part of a run's time, so each run first makes its own."""
        setup = candidate.setup
        candidate.setup()
        warm_up()
        candidate.sync()
        # copies: numpy and torch CPU hand back views of the live, still-training arrays
        self.weights_after_warmup[candidate.name] = [np.array(w, copy=True) for w in weights()]

        def prepare() -> None:
            setup()
            warm_up()
            candidate.sync()

        candidate.setup = prepare
        self.candidates.append(candidate)

    # nnscratch, one backend: fit, and the loop by hand
    def add_nnscratch(self, name: str, device: str | None) -> None:
        label = backend_label(name, device)
        try:
            backend = nn.use_backend(name, device).backend
        except NNScratchError as exc:
            self.skipped.append({"name": f"nnscratch {label}", "reason": str(exc)})
            return
        strict = name == "array_api_strict"
        steps = self.args.strict_steps if strict else self.args.steps
        data = [tuple(backend.asarray(array) for array in self.host_data(count))
                for count in (steps, self.args.warmup)]
        loops = ["fit"] if strict or self.args.fit_only else ["fit", "manual loop"]
        for loop in loops:
            self._add_nnscratch_loop(backend, name, device, loop, data, steps, strict)

    def _add_nnscratch_loop(self, backend: nn.Backend, name: str, device: str | None,
                            loop: str, data: list[tuple[Any, ...]], steps: int,
                            strict: bool) -> None:
        batch = self.batch

        def activate() -> None:
            nn.use_backend(name, device)

        activate()
        model = build_model(self.initial)
        optimizer = nn.Adam(lr=LR, betas=BETAS, eps=EPS)
        loss = nn.SoftmaxCrossEntropy()

        def train(X: Any, y: Any) -> None:
            if loop == "fit":
                model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer,
                          epochs=1, batch_size=batch, seed=SEED, verbose=0)
            else:
                manual_epoch(model, loss, optimizer, X, y, batch)

        (X, y), warm = data
        ops = count_ops(name, device, loop, batch, self.initial)
        activate()
        candidate = Candidate(
            name=f"nnscratch {backend_label(name, device)} ({loop})", run=lambda: train(X, y),
            steps=steps, sync=backend.synchronize, setup=activate,
            device=device_kind(name, device), informational=strict,
            meta={"implementation": "nnscratch", "backend": backend_label(name, device),
                  "loop": loop, "ops_per_step": ops})
        self.add(candidate, lambda: train(*warm),
                 lambda: [backend.to_numpy(p.value) for p in model.parameters()])

    # PyTorch
    def add_pytorch(self, device: str, fused: bool) -> None:
        torch = self.torch
        name = f"PyTorch {device} (Adam{', fused' if fused else ''})"
        if torch is None:
            self.skipped.append({"name": name, "reason": "torch is not installed "
                                 "(pip install -r backends/torch-cpu.txt)"})
            return
        if device == "cuda" and not torch.cuda.is_available():
            return
        model = torch_model(torch, self.initial, device)
        try:
            optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS,
                                         **({"fused": True} if fused else {}))
        except (RuntimeError, TypeError, ValueError) as exc:
            self.skipped.append({"name": name, "reason": f"not supported here: {exc}"})
            return
        X, y = (torch.from_numpy(a).to(device) for a in self.host_data(self.args.steps))
        X_warm, y_warm = (torch.from_numpy(a).to(device)
                          for a in self.host_data(self.args.warmup))
        sync = torch.cuda.synchronize if device == "cuda" else nothing
        batch = self.batch
        ops = {"per_step": pytorch_ops(batch=batch, fused=fused, device=device),
               "counted_on": "torch (ATen, autograd included)"}
        candidate = Candidate(
            name=name, run=lambda: torch_epoch(torch, model, optimizer, X, y, batch),
            steps=self.args.steps, sync=sync, device=device,
            meta={"implementation": "pytorch", "backend": f"torch:{device}",
                  "optimizer": "Adam(fused=True)" if fused else "Adam()",
                  "ops_per_step": ops})
        try:
            self.add(candidate,
                     lambda: torch_epoch(torch, model, optimizer, X_warm, y_warm, batch),
                     lambda: [p.detach().cpu().numpy().T for p in model.parameters()])
        except RuntimeError as exc:  # e.g. a fused kernel missing for this device
            self.skipped.append({"name": name, "reason": f"failed: {exc}"})

    # plain NumPy
    def add_reference(self) -> None:
        reference = NumpyMLP(self.initial)
        self._add_numpy(REFERENCE, reference, "numpy-reference")
        drifted = [str(p.dtype) for p in reference.parameters() if p.dtype != np.float32]
        if drifted:
            print_flush(f"warning: the NumPy reference left float32: {drifted}")

    def add_floor(self) -> None:
        self._add_numpy(FLOOR, NumpyFloor(self.initial), "numpy-floor")

    def _add_numpy(self, name: str, implementation: NumpyMLP | NumpyFloor,
                   kind: str) -> None:
        """A plain NumPy row: ``implementation.epoch`` over host data."""
        (X, y), (X_warm, y_warm) = self.host_data(self.args.steps), self.host_data(
            self.args.warmup)
        batch = self.batch
        candidate = Candidate(name=name, run=lambda: implementation.epoch(X, y, batch),
                              steps=self.args.steps,
                              meta={"implementation": kind, "backend": "numpy"})
        self.add(candidate, lambda: implementation.epoch(X_warm, y_warm, batch),
                 implementation.parameters)

    def add_peaks(self, peaks: list[PeakMatmul]) -> None:
        for peak in peaks:
            self.candidates.append(Candidate(
                name=f"peak {peak.label}", run=peak.run, steps=peak.count, sync=peak.sync,
                device=peak.device, meta={"peak": peak}))

    def add_matmuls(self) -> None:
        matmuls = MatmulsOnly(self.X_host, self.initial, self.batch)
        if matmuls.flops() != step_flops(self.batch):
            print_flush(f"warning: the eight products count {matmuls.flops()} FLOPs, the "
                        f"formula {step_flops(self.batch)}")
        steps = self.args.steps

        def run() -> None:
            for _ in range(steps):
                matmuls.step()

        candidate = Candidate(name=MATMULS, run=run, steps=steps,
                              meta={"implementation": "numpy-matmuls", "backend": "numpy"})
        self.add(candidate, run, list)


def build_candidates(args: argparse.Namespace, X: np.ndarray, y: np.ndarray,
                     initial: list[tuple[np.ndarray, np.ndarray]], batch: int,
                     torch: Any, backends: list[tuple[str, str | None]],
                     peaks: list[PeakMatmul]) -> BatchRun:
    """In the order they run within a round: the target's pairs side by side first."""
    run = BatchRun(args, X, y, initial, batch, torch)
    first, rest = backends[:1], backends[1:]
    for name, device in first:
        run.add_nnscratch(name, device)
    if not args.gpu_only:
        run.add_pytorch("cpu", fused=False)
        run.add_reference()
        run.add_matmuls()
        run.add_floor()
        run.add_pytorch("cpu", fused=True)
    for name, device in rest:
        run.add_nnscratch(name, device)
    if torch is not None and torch.cuda.is_available():
        run.add_pytorch("cuda", fused=False)
        run.add_pytorch("cuda", fused=True)
    run.add_peaks([peak for peak in peaks if peak.device == "cuda" or not args.gpu_only])
    return run


def peak_rates(run: BatchRun) -> dict[str, dict[str, Any]]:
    """Per library: the large matmul's GFLOP/s in every round."""
    rates = {}
    for candidate in run.candidates:
        peak = candidate.meta.get("peak")
        if peak is not None:
            rates[peak.label] = spread([peak.flops() / s / 1e9 for s in candidate.seconds])
    return rates


def summarize(run: BatchRun) -> list[dict[str, Any]]:
    candidates = [c for c in run.candidates if "peak" not in c.meta]
    by_name = {candidate.name: candidate for candidate in candidates}
    reference_weights = run.weights_after_warmup.get(REFERENCE)
    rates = peak_rates(run)
    flops = step_flops(run.batch)
    rows = []
    for candidate in candidates:
        seconds = candidate.seconds
        peer = by_name.get(PYTORCH_CUDA if candidate.device == "cuda" else PYTORCH_CPU)
        # the device's best library in each round
        device_peaks = [max(per_round) for per_round in zip(*(
            stats["samples"] for label, stats in rates.items()
            if label.endswith(candidate.device)))]
        achieved = [flops / s / 1e9 for s in seconds]
        row = {
            "name": candidate.name, **candidate.meta, "device": candidate.device,
            "steps": candidate.steps, "informational": candidate.informational,
            "ms_per_step": spread([s * 1e3 for s in seconds]),
            "ops_per_step": candidate.meta.get("ops_per_step"),
            "epoch_s": spread([s * steps_per_epoch(run.batch) for s in seconds]),
            "ratio_to_pytorch": ratio(seconds, peer.seconds) if peer else None,
            "ratio_to_reference": (ratio(seconds, by_name[REFERENCE].seconds)
                                   if REFERENCE in by_name else None),
            "ratio_to_matmuls": (ratio(seconds, by_name[MATMULS].seconds)
                                 if MATMULS in by_name else None),
            "matmul_gflops": spread(achieved),
            "share_of_peak": ratio(achieved, device_peaks) if device_peaks else None,
        }
        weights = run.weights_after_warmup.get(candidate.name)
        if reference_weights is not None and weights:
            row["max_abs_weight_diff_after_warmup"] = max(
                float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)))
                for a, b in zip(weights, reference_weights))
        rows.append(row)
    return rows


def print_batch_table(batch: int, rows: list[dict[str, Any]], peaks: dict[str, dict],
                      args: argparse.Namespace) -> None:
    print_flush(
        f"\nbatch {batch}: {args.rounds} rounds of {args.steps} steps (array-api-strict "
        f"{args.strict_steps}) after {args.warmup} warm-up steps; "
        f"{steps_per_epoch(batch)} steps per MNIST epoch; "
        f"{step_flops(batch) / 1e6:.1f} MFLOP of matmuls per step")
    body = []
    for row in rows:
        diff = row.get("max_abs_weight_diff_after_warmup")
        body.append([
            row["name"] + (" *" if row["informational"] else ""),
            format_range(row["ms_per_step"], 3 if row["ms_per_step"]["median"] < 10 else 1),
            _ops(row.get("ops_per_step")),
            f"{row['epoch_s']['median']:.2f}",
            format_range(row["ratio_to_pytorch"]),
            format_range(row["ratio_to_reference"]),
            format_range(row["ratio_to_matmuls"]),
            (f"{100 * row['share_of_peak']['median']:.0f}%" if row["share_of_peak"]
             else "-"),
            "-" if diff is None else f"{diff:.1e}",
        ])
    print_flush(table(["implementation", "ms/step [min-max]", "ops/step", "epoch s", "x PyTorch",
                       "x NumPy ref", "x matmuls", "% peak", "max|dW|"], body))
    if peaks:
        print_flush("large float32 matmul in the same rounds, GFLOP/s: " + ", ".join(
            f"{label} {format_range(stats, 0)}" for label, stats in peaks.items()))


def _ops(ops: dict[str, Any] | None) -> str:
    """The ops/step cell: the count, with a † where it was counted on another backend."""
    if not ops:
        return "-"
    mark = "" if ops.get("same_backend", True) else "†"
    return f"{ops['per_step']:.0f}{mark}"


def measure_memory(X_host: np.ndarray, y_host: np.ndarray, samples: int) -> dict[str, Any]:
    """Peak traced memory of ``fit`` (numpy backend, batch 128, one epoch) against the
    bytes that must be resident: parameters, Adam's two moments, the dataset. NumPy
    reports its allocations to tracemalloc, so the dataset is allocated once tracing is
    on and counts in the peak, as it would on a device."""
    with nn.use_backend("numpy") as backend:
        nn.seed(SEED)
        tracemalloc.start()
        try:
            X = backend.asarray(X_host[:samples], dtype="float32", copy=True)
            y = backend.asarray(y_host[:samples], copy=True)
            model = build_model()
            optimizer = nn.Adam(lr=LR)
            start = time.perf_counter()
            model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=1,
                      batch_size=TARGET_BATCH, seed=SEED, verbose=0)
            seconds = time.perf_counter() - start
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        parameters = sum(p.value.nbytes for p in model.parameters())
        state = sum(array.nbytes for param, slots in optimizer.state.items()
                    if getattr(param, "vector", None) is None  # not a window of θ's state
                    for array in slots.values())
        dataset = X.nbytes + y.nbytes
    budget = parameters + state + dataset
    return {"samples": samples, "batch_size": TARGET_BATCH, "peak_bytes": peak,
            "parameter_bytes": parameters, "optimizer_state_bytes": state,
            "dataset_bytes": dataset, "budget_bytes": budget, "ratio": peak / budget,
            "beyond_budget_bytes": peak - budget, "seconds_traced": seconds}


# -- where the time goes (--profile) ---------------------------------------------------


def profile_step(X_host: np.ndarray, y_host: np.ndarray,
                 initial: list[tuple[np.ndarray, np.ndarray]], batch: int, steps: int,
                 rounds: int) -> dict[str, Any]:
    """Microseconds per step of each phase, nnscratch (numpy backend) and the reference,
    clocked between phases (NumPy runs synchronously); medians over rounds."""
    from nnscratch.data import prepare_features
    from nnscratch.metrics import correct_count

    nn.use_backend("numpy")
    backend = nn.get_backend()
    xp = backend.xp
    X, y = sample_subset(X_host, y_host, steps * batch)
    model = build_model(initial)
    loss = nn.SoftmaxCrossEntropy()
    optimizer = nn.Adam(lr=LR, betas=BETAS, eps=EPS)
    parameters = model.parameters()
    labels = [f"{index + 1} {type(layer).__name__}"
              + (f" {layer.in_features}->{layer.out_features}" if isinstance(layer, nn.Dense)
                 else "") for index, layer in enumerate(model.layers)]
    reference = NumpyMLP(initial)
    clock = time.perf_counter
    phases: dict[str, dict[str, list[float]]] = {"nnscratch": {}, "reference": {}}

    def record(table_: dict[str, list[float]], key: str, seconds: float) -> None:
        table_.setdefault(key, []).append(seconds)

    for round_index in range(rounds + 1):  # round 0 warms up
        order = shuffle_order(X.shape[0])
        sums: dict[str, dict[str, float]] = {"nnscratch": {}, "reference": {}}

        def add(which: str, key: str, seconds: float, sums: dict = sums) -> None:
            sums[which][key] = sums[which].get(key, 0.0) + seconds

        start = clock()
        order_device = backend.asarray(order)
        add("nnscratch", "shuffle (once per epoch)", clock() - start)
        for step in range(steps):
            index_host = order[step * batch:(step + 1) * batch]
            index = order_device[step * batch:(step + 1) * batch]
            t0 = clock()
            xb, yb = xp.take(X, index, axis=0), xp.take(y, index, axis=0)
            t1 = clock()
            add("nnscratch", "gather batch", t1 - t0)
            out = xb
            for layer, label in zip(model.layers, labels):
                t0 = clock()
                out = layer.forward(out, True)
                add("nnscratch", f"forward {label}", clock() - t0)
            t0 = clock()
            loss.forward(out, yb)
            t1 = clock()
            grad = loss.backward()
            t2 = clock()
            add("nnscratch", "loss forward", t1 - t0)
            add("nnscratch", "loss backward", t2 - t1)
            for position in range(len(model.layers) - 1, -1, -1):
                t0 = clock()
                grad = model.layers[position].backward(grad, position > 0)
                add("nnscratch", f"backward {labels[position]}", clock() - t0)
            t0 = clock()
            optimizer.step(parameters)
            t1 = clock()
            correct_count(out, yb, loss.task, loss.threshold)
            add("nnscratch", "Adam step", t1 - t0)
            add("nnscratch", "fit only: correct count", clock() - t1)

            t0 = clock()
            rxb, ryb = X[index_host], y[index_host]
            t1 = clock()
            logits = reference.forward(rxb)
            t2 = clock()
            _, rgrad = reference.loss(logits, ryb)
            t3 = clock()
            grads = reference.backward(rgrad)
            t4 = clock()
            reference.adam(grads)
            t5 = clock()
            np.count_nonzero(logits.argmax(axis=1) == ryb)
            t6 = clock()
            for key, seconds in (("gather batch", t1 - t0), ("forward", t2 - t1),
                                 ("loss", t3 - t2), ("backward", t4 - t3),
                                 ("Adam step", t5 - t4), ("correct count", t6 - t5)):
                add("reference", key, seconds)
        if round_index == 0:
            continue
        t0 = clock()
        prepare_features(X, LAYER_SIZES[0], "float32")
        add("nnscratch", "fit only: input checks (per fit, / steps)", clock() - t0)
        for which, totals in sums.items():
            for key, seconds in totals.items():
                record(phases[which], key, seconds / steps)
    return {
        which: {key: spread([s * 1e6 for s in samples]) for key, samples in table_.items()}
        for which, table_ in phases.items()
    } | {"batch_size": batch, "steps": steps, "rounds": rounds, "unit": "microseconds/step"}


def print_profile(profile: dict[str, Any]) -> None:
    print_flush(f"\nwhere a step's time goes, batch {profile['batch_size']} "
                f"(µs/step, median of {profile['rounds']} rounds of {profile['steps']} steps)")
    for which in ("nnscratch", "reference"):
        body = [[key, f"{stats['median']:.1f}"] for key, stats in profile[which].items()]
        total = sum(stats["median"] for stats in profile[which].values())
        body.append(["total", f"{total:.1f}"])
        print_flush(table([f"{which} phase", "µs/step"], body))


# -- main ------------------------------------------------------------------------------


def installed_backends(torch: Any) -> list[str]:
    specs = ["numpy", "torch", "array_api_strict", "cupy"]
    if torch is not None and torch.cuda.is_available():
        specs.append("torch:cuda")
    return specs


def optional_import(name: str) -> Any:
    """The module, or None where it is not installed (its rows say so as skipped)."""
    try:
        return __import__(name)
    except ImportError:
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="auto",
                        help="comma-separated nnscratch backends, name[:device] (e.g. "
                             "numpy,torch,array_api_strict,cupy,torch:cuda); default: all, "
                             "those not installed are reported as skipped")
    parser.add_argument("--batch-sizes", default="64,128,512",
                        help="comma-separated batch sizes (default 64,128,512)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per round (default 100; 10 with --quick)")
    parser.add_argument("--strict-steps", type=int, default=None,
                        help="steps per round for array-api-strict (default steps/10, >= 3)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved timed rounds (default 5; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up steps per implementation (default 10; 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run for smoke tests (seconds; numbers meaningless)")
    parser.add_argument("--profile", action="store_true",
                        help="also time each phase of a numpy step at batch 128")
    parser.add_argument("--fit-only", action="store_true",
                        help="leave out the hand-written nnscratch loop rows")
    parser.add_argument("--gpu-only", action="store_true",
                        help="only the GPU rows: nnscratch on --backends, PyTorch CUDA")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurement")
    parser.add_argument("--threads", type=int, default=None,
                        help="cap numpy's and torch's CPU threads (default: as installed)")
    parser.add_argument("--data", default=None,
                        help="MNIST folder (default: NNSCRATCH_DATA, ../shared/data/mnist)")
    parser.add_argument("--download", action="store_true",
                        help="download MNIST if it is not found (else random data)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default bench/results/<machine>-<date>.json)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.steps = args.steps or (10 if quick else 100)
    args.rounds = args.rounds or (2 if quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (3 if quick else 10)
    args.strict_steps = args.strict_steps or max(3, args.steps // 10)
    args.batch_sizes = [int(size) for size in args.batch_sizes.split(",") if size.strip()]
    for name in ("steps", "rounds", "warmup", "strict_steps"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup == 0:
        parser.error("--warmup must be at least 1: the first step of every "
                     "implementation is never timed")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_at_start = load_average()
    torch, cupy = optional_import("torch"), optional_import("cupy")
    thread_note = limit_threads(args.threads)
    if thread_note:
        print_flush(f"note: {thread_note}")
    specs = installed_backends(torch) if args.backends == "auto" else [
        spec.strip() for spec in args.backends.split(",") if spec.strip()]
    backends = [parse_backend(spec) for spec in specs]
    X, y, data_source = load_data(args.data, args.download)
    gpu = gpu_name()
    print_flush(f"nnscratch MLP benchmark {'-'.join(map(str, LAYER_SIZES))}: {data_source}; "
                f"backends {', '.join(specs)}; GPU: {gpu or 'none'}")

    peaks = peak_matmuls(torch, cupy if gpu else None, args.quick)
    initial = initial_weights()

    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    for batch in args.batch_sizes:
        run = build_candidates(args, X, y, initial, batch, torch, backends, peaks)
        for entry in run.skipped:
            skipped.setdefault(entry["name"], entry["reason"])
        run_interleaved(run.candidates, args.rounds, progress=lambda text, b=batch: print(
            f"  batch {b}: {text}", file=sys.stderr, flush=True))
        rows, rates = summarize(run), peak_rates(run)
        print_batch_table(batch, rows, rates, args)
        results.append({"batch_size": batch, "steps_per_epoch": steps_per_epoch(batch),
                        "step_matmul_flops": step_flops(batch),
                        "matmul_peak_gflops": rates, "rows": rows})
    nn.use_backend("numpy")
    for name, reason in skipped.items():
        print_flush(f"skipped: {name}: {reason}")
    print_flush("* informational (array-api-strict checks portability, not speed)")
    print_flush("ops/step: ATen operators per step on torch (autograd included), array-api-"
                "strict calls elsewhere; † counted on array-api-strict (NumPy's and CuPy's "
                "operators cannot be intercepted; the calls are the same); - not countable "
                "(plain NumPy)")

    memory = None
    if not args.no_memory:
        memory = measure_memory(X, y, 6_400 if args.quick else TRAIN_SAMPLES)
    targets = evaluate_targets(results, memory)
    print_targets(targets, memory)

    profile = None
    if args.profile:
        profile = profile_step(X, y, initial, TARGET_BATCH, args.steps, args.rounds)
        print_profile(profile)

    out = args.out or results_path_for(gpu)
    write_results(out, "mlp", {
        "date": now(), "environment": environment(gpu, load_at_start),
        "config": {"layers": LAYER_SIZES, "steps": args.steps, "rounds": args.rounds,
                   "warmup": args.warmup, "strict_steps": args.strict_steps,
                   "batch_sizes": args.batch_sizes, "quick": args.quick, "seed": SEED,
                   "optimizer": f"Adam(lr={LR}, betas={BETAS}, eps={EPS})",
                   "data": data_source, "threads": args.threads},
        "flops_formula": "2*B*(3*(784*256 + 256*128 + 128*10) - 784*256) = 1007104*B",
        "matmul_peak_sizes": {peak.label: peak.size for peak in peaks},
        "results": results, "skipped": skipped,
        "memory": memory, "targets": targets, "profile": profile,
        "wall_seconds": time.perf_counter() - started,
    })
    print_flush(f"\nresults written to {out}")
    return 0


def evaluate_targets(results: list[dict[str, Any]],
                     memory: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = next((r["rows"] for r in results if r["batch_size"] == TARGET_BATCH), [])
    ours = next((row for row in rows if row["name"] == "nnscratch numpy (fit)"), None)

    def median(key: str) -> float | None:
        return ours[key]["median"] if ours and ours.get(key) else None

    checks = [
        (f"numpy epoch at batch {TARGET_BATCH} vs PyTorch CPU", median("ratio_to_pytorch"),
         TARGET_VS_PYTORCH),
        (f"numpy epoch at batch {TARGET_BATCH} vs plain NumPy reference",
         median("ratio_to_reference"), TARGET_VS_REFERENCE),
        (f"numpy epoch at batch {TARGET_BATCH} vs its matmuls alone",
         median("ratio_to_matmuls"), TARGET_VS_MATMULS),
        ("peak memory of fit vs params + Adam state + dataset",
         memory["ratio"] if memory else None, TARGET_MEMORY),
    ]
    cupy = next((row for row in rows if row["name"] == "nnscratch cupy (fit)"), None)
    if cupy and cupy.get("ratio_to_pytorch"):
        checks.append((f"cupy step at batch {TARGET_BATCH} vs PyTorch CUDA eager",
                       cupy["ratio_to_pytorch"]["median"], 1.0))
    targets = [{"target": name, "value": value, "at_most": limit,
                "verdict": verdict(value, limit)} for name, value, limit in checks]
    floor = next((row for row in rows if row["name"] == FLOOR), None)
    if floor and floor.get("ratio_to_matmuls"):  # context for the matmul target
        targets.append({"target": "for scale: NumPy floor (no temporaries) vs matmuls",
                        "value": floor["ratio_to_matmuls"]["median"], "at_most": None,
                        "verdict": "info"})
    return targets


def print_targets(targets: list[dict[str, Any]], memory: dict[str, Any] | None) -> None:
    print_flush("\ntargets (median of per-round ratios)")
    body = [[t["target"], "-" if t["value"] is None else f"{t['value']:.2f}x",
             "" if t["at_most"] is None else f"<= {t['at_most']}x", t["verdict"]]
            for t in targets]
    print_flush(table(["target", "measured", "goal", ""], body))
    if memory:
        mib = 2.0**20
        print_flush(f"memory: peak {memory['peak_bytes'] / mib:.1f} MiB during fit on "
                    f"{memory['samples']} samples; resident: params "
                    f"{memory['parameter_bytes'] / mib:.1f} + Adam "
                    f"{memory['optimizer_state_bytes'] / mib:.1f} + data "
                    f"{memory['dataset_bytes'] / mib:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
