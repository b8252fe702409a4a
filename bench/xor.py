"""nnscratch against PyTorch autograd on the XOR network of the course notes.

    python bench/xor.py                 # 5 rounds of 10,000 epochs per implementation
    python bench/xor.py --quick         # a smoke test

A 2-4-1 network with sigmoid units, binary cross-entropy (``--loss mse`` for the
notes' squared error), full-batch gradient descent with SGD lr 0.3, 10,000 epochs on
the four XOR samples, float32. With four samples a step is a few dozen tiny array
operations: this case measures per-step overhead (Python, dispatch, autograd's graph),
not arithmetic. The implementations, each starting every round from the same initial
weights (nnscratch's, copied), so every round does exactly the same work:

* nnscratch through ``model.fit(X, y, epochs=10000, batch_size=None)``, the public way;
* nnscratch through the notes' loop by hand (forward, loss, backward, step);
* PyTorch: ``nn.Sequential`` with autograd and ``torch.optim.SGD``, the usual loop;
* a plain NumPy reference, written the obvious way.

Rounds are interleaved and ratios taken per round (see common.py). Target: nnscratch
at least 5x faster than PyTorch (``x faster`` = PyTorch time / this time).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    Candidate,
    environment,
    format_range,
    gpu_name,
    limit_threads,
    load_average,
    now,
    print_flush,
    ratio,
    run_interleaved,
    spread,
    table,
    verdict,
    write_results,
)
from common import default_results_path as results_path_for

import nnscratch as nn
from nnscratch.datasets import make_xor
from nnscratch.errors import NNScratchError

SEED = 0
LR = 0.3
HIDDEN = 4
TARGET_SPEEDUP = 6.0  # issue 12: XOR at least 6x faster than PyTorch autograd
PYTORCH = "PyTorch autograd (SGD)"
REFERENCE = "NumPy reference"

X_XOR, Y_XOR = make_xor()


def build_model() -> nn.Sequential:
    return nn.Sequential(nn.Dense(2, HIDDEN), nn.Sigmoid(), nn.Dense(HIDDEN, 1), nn.Sigmoid())


def initial_weights() -> list[tuple[np.ndarray, np.ndarray]]:
    with nn.use_backend("numpy"):
        nn.seed(SEED)
        return [(np.array(layer.weight.value), np.array(layer.bias.value))
                for layer in build_model().layers if isinstance(layer, nn.Dense)]


def make_loss(name: str) -> nn.Loss:
    return nn.BinaryCrossEntropy() if name == "bce" else nn.MeanSquaredError()


# -- the plain NumPy reference ---------------------------------------------------------


class NumpyXOR:
    """2-4-1 sigmoid network, BCE or MSE, plain gradient descent: the obvious NumPy.
    Only Python floats meet the float32 arrays, so nothing upcasts to float64."""

    def __init__(self, initial: list[tuple[np.ndarray, np.ndarray]], loss: str) -> None:
        self.initial, self.loss_name = initial, loss
        self.reset()

    def reset(self) -> None:
        (W1, b1), (W2, b2) = self.initial
        self.params = [np.array(p, dtype=np.float32) for p in (W1, b1, W2, b2)]

    def train(self, X: np.ndarray, y: np.ndarray, epochs: int) -> float:
        W1, b1, W2, b2 = self.params
        n = y.size
        eps = float(np.finfo(np.float32).eps)
        for _ in range(epochs):
            h = 1.0 / (1.0 + np.exp(-(X @ W1 + b1)))
            p = 1.0 / (1.0 + np.exp(-(h @ W2 + b2)))
            if self.loss_name == "bce":
                q = np.clip(p, eps, 1.0 - eps)
                value = -np.mean(y * np.log(q) + (1.0 - y) * np.log(1.0 - q))
                dz2 = (p - y) * (1.0 / n)            # sigmoid and cross-entropy together
            else:
                value = np.mean((p - y) ** 2)
                dz2 = (p - y) * (2.0 / n) * p * (1.0 - p)
            dz1 = (dz2 @ W2.T) * h * (1.0 - h)
            W2 -= LR * (h.T @ dz2)
            b2 -= LR * dz2.sum(axis=0)
            W1 -= LR * (X.T @ dz1)
            b1 -= LR * dz1.sum(axis=0)
        return float(value)

    def predict(self, X: np.ndarray) -> np.ndarray:
        W1, b1, W2, b2 = self.params
        h = 1.0 / (1.0 + np.exp(-(X @ W1 + b1)))
        return 1.0 / (1.0 + np.exp(-(h @ W2 + b2)))


# -- the implementations ---------------------------------------------------------------


class Implementation:
    """A candidate that can be reset to the initial weights and reports its final loss."""

    def __init__(self, name: str, train: Any, reset: Any, predict: Any,
                 meta: dict[str, Any], setup: Any = None) -> None:
        self.name, self.train, self.reset, self.predict = name, train, reset, predict
        self.meta, self.setup = meta, setup
        self.final_loss: float | None = None


def nnscratch_implementations(name: str, initial: list[tuple[np.ndarray, np.ndarray]],
                              loss_name: str) -> list[Implementation]:
    backend = nn.use_backend(name).backend
    X, y = backend.asarray(X_XOR), backend.asarray(Y_XOR)
    implementations = []
    for loop in ("fit", "manual loop"):
        model = build_model()
        dense = [layer for layer in model.layers if isinstance(layer, nn.Dense)]

        def activate(name: str = name) -> None:
            nn.use_backend(name)

        def reset(dense: list[nn.Dense] = dense, backend: nn.Backend = backend) -> None:
            for layer, (weight, bias) in zip(dense, initial):
                layer.weight.value = backend.asarray(weight, dtype="float32", copy=True)
                layer.bias.value = backend.asarray(bias, dtype="float32", copy=True)

        def train(epochs: int, model: nn.Sequential = model, loop: str = loop) -> float:
            loss = make_loss(loss_name)
            optimizer = nn.SGD(lr=LR)
            if loop == "fit":
                history = model.fit(X, y, loss=loss, optimizer=optimizer, epochs=epochs,
                                    batch_size=None, seed=SEED, verbose=0)
                return history.history["loss"][-1]
            parameters = model.parameters()
            for _ in range(epochs):
                outputs = model.forward(X, training=True)
                value = loss.forward(outputs, y)
                model.backward(loss.backward(), need_input_grad=False)
                optimizer.step(parameters)
            return float(value)

        def predict(model: nn.Sequential = model, backend: nn.Backend = backend) -> np.ndarray:
            return backend.to_numpy(model.predict(X))

        implementations.append(Implementation(
            f"nnscratch {name} ({loop})", train, reset, predict,
            {"implementation": "nnscratch", "backend": name, "loop": loop}, setup=activate))
    return implementations


def pytorch_implementation(torch: Any, initial: list[tuple[np.ndarray, np.ndarray]],
                           loss_name: str) -> Implementation:
    torch.manual_seed(SEED)
    linears = [torch.nn.Linear(2, HIDDEN), torch.nn.Linear(HIDDEN, 1)]
    model = torch.nn.Sequential(linears[0], torch.nn.Sigmoid(), linears[1], torch.nn.Sigmoid())
    X, y = torch.from_numpy(X_XOR), torch.from_numpy(Y_XOR)
    criterion = torch.nn.BCELoss() if loss_name == "bce" else torch.nn.MSELoss()

    def reset() -> None:
        with torch.no_grad():
            for linear, (weight, bias) in zip(linears, initial):
                linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.T)))
                linear.bias.copy_(torch.from_numpy(bias))

    def train(epochs: int) -> float:
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        for _ in range(epochs):
            optimizer.zero_grad()
            loss = criterion(model(X), y)
            loss.backward()
            optimizer.step()
        return float(loss.detach())

    def predict() -> np.ndarray:
        with torch.no_grad():
            return model(X).numpy()

    return Implementation(PYTORCH, train, reset, predict,
                          {"implementation": "pytorch", "backend": "torch:cpu",
                           "optimizer": "SGD"})


def reference_implementation(initial: list[tuple[np.ndarray, np.ndarray]],
                             loss_name: str) -> Implementation:
    reference = NumpyXOR(initial, loss_name)
    return Implementation(REFERENCE, lambda epochs: reference.train(X_XOR, Y_XOR, epochs),
                          reference.reset, lambda: reference.predict(X_XOR),
                          {"implementation": "numpy-reference", "backend": "numpy"})


def as_candidate(implementation: Implementation, epochs: int, warmup: int) -> Candidate:
    def setup() -> None:
        if implementation.setup is not None:
            implementation.setup()
        # untimed warm-up epochs before every timed run: caches and allocator state left
        # by the previous implementation are not this one's cost
        implementation.reset()
        implementation.train(warmup)
        implementation.reset()  # every round: the same start, the same work

    def run() -> None:
        implementation.final_loss = implementation.train(epochs)

    return Candidate(name=implementation.name, run=run, steps=epochs, setup=setup,
                     meta=implementation.meta)


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=None,
                        help="comma-separated nnscratch backends (default: NNSCRATCH_BACKEND, "
                             "else numpy)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="full-batch epochs per round (default 10000; 500 with --quick)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved timed rounds (default 5; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=200,
                        help="warm-up epochs per implementation (default 200)")
    parser.add_argument("--loss", choices=("bce", "mse"), default="bce",
                        help="binary cross-entropy (default) or mean squared error")
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests")
    parser.add_argument("--threads", type=int, default=None,
                        help="cap numpy's and torch's CPU threads (default: as installed)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default bench/results/<machine>-<date>.json)")
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (500 if args.quick else 10_000)
    args.rounds = args.rounds or (2 if args.quick else 5)
    if min(args.epochs, args.rounds, args.warmup) < 1:
        parser.error("--epochs, --rounds and --warmup must be positive")
    if args.backends is None:
        args.backends = nn.get_backend().name
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_at_start = load_average()
    try:
        import torch
    except ImportError as exc:
        torch, torch_missing = None, f"torch is not installed ({exc})"
    else:
        torch_missing = None
    thread_note = limit_threads(args.threads)
    if thread_note:
        print_flush(f"note: {thread_note}")
    initial = initial_weights()
    implementations: list[Implementation] = []
    skipped: dict[str, str] = {}
    for name in [spec.strip() for spec in args.backends.split(",") if spec.strip()]:
        try:
            implementations += nnscratch_implementations(name, initial, args.loss)
        except NNScratchError as exc:
            skipped[f"nnscratch {name}"] = str(exc)
    if torch is not None:
        implementations.append(pytorch_implementation(torch, initial, args.loss))
    else:
        skipped[PYTORCH] = torch_missing or "torch is not installed"
    implementations.append(reference_implementation(initial, args.loss))

    print_flush(f"XOR 2-{HIDDEN}-1 sigmoid, {args.loss.upper()}, SGD lr {LR}, full batch: "
                f"{args.rounds} rounds of {args.epochs} epochs after {args.warmup} warm-up "
                "epochs")
    candidates = [as_candidate(implementation, args.epochs, args.warmup) for implementation in
                  implementations]
    for implementation, candidate in zip(implementations, candidates):
        candidate.setup()
        implementation.train(args.warmup)
    run_interleaved(candidates, args.rounds, progress=lambda text: print(
        f"  {text}", file=sys.stderr, flush=True))
    nn.use_backend("numpy")

    by_name = {candidate.name: candidate for candidate in candidates}
    torch_seconds = by_name[PYTORCH].seconds if PYTORCH in by_name else None
    rows = []
    for implementation, candidate in zip(implementations, candidates):
        if implementation.setup is not None:
            implementation.setup()
        # the weights as the last timed round left them: did every implementation learn?
        predictions = np.asarray(implementation.predict()).reshape(-1)
        rows.append({
            "name": candidate.name, **candidate.meta,
            "us_per_epoch": spread([s * 1e6 for s in candidate.seconds]),
            "seconds_per_run": spread([s * args.epochs for s in candidate.seconds]),
            "speedup_vs_pytorch": (ratio(torch_seconds, candidate.seconds)
                                   if torch_seconds else None),
            "ratio_to_reference": ratio(candidate.seconds, by_name[REFERENCE].seconds),
            "final_loss": implementation.final_loss,
            "predictions": [round(float(p), 4) for p in predictions],
            "solved": bool(np.all((predictions >= 0.5) == (Y_XOR.reshape(-1) >= 0.5))),
        })
    nn.use_backend("numpy")

    body = [[row["name"], format_range(row["us_per_epoch"], 1),
             f"{row['seconds_per_run']['median']:.2f}",
             format_range(row["speedup_vs_pytorch"]), format_range(row["ratio_to_reference"]),
             f"{row['final_loss']:.4f}", "yes" if row["solved"] else "NO"] for row in rows]
    print_flush(table(["implementation", "µs/epoch [min-max]", f"s/{args.epochs}",
                       "x faster than PyTorch", "x NumPy ref", "final loss", "solved"], body))
    for name, reason in skipped.items():
        print_flush(f"skipped: {name}: {reason}")

    targets = []
    for row in rows:
        if row["implementation"] == "nnscratch" and row["speedup_vs_pytorch"]:
            value = row["speedup_vs_pytorch"]["median"]
            targets.append({"target": f"{row['name']} vs PyTorch (x faster)", "value": value,
                            "at_least": TARGET_SPEEDUP,
                            "verdict": verdict(value, TARGET_SPEEDUP, at_most=False)})
    if targets:
        print_flush("\ntargets (median of per-round ratios)")
        print_flush(table(["target", "measured", "goal", ""], [
            [t["target"], f"{t['value']:.2f}x", f">= {t['at_least']}x", t["verdict"]]
            for t in targets]))

    gpu = gpu_name()
    out = args.out or results_path_for(gpu)
    write_results(out, "xor", {
        "date": now(), "environment": environment(gpu, load_at_start),
        "config": {"network": f"2-{HIDDEN}-1 sigmoid", "loss": args.loss, "lr": LR,
                   "epochs": args.epochs, "rounds": args.rounds, "warmup": args.warmup,
                   "quick": args.quick, "seed": SEED, "threads": args.threads},
        "results": rows, "skipped": skipped, "targets": targets,
    })
    print_flush(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
