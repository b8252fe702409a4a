"""The digit recognizer against the clock: seconds of training until 98% test accuracy.

    python bench/time_to_accuracy.py --backend cupy            # on a GPU
    python bench/time_to_accuracy.py --backend numpy --epochs 2 --limit 5000   # a dry run

The network and settings of examples/mnist.py (784-512-256-10, ReLU, Adam lr 1e-3 along
a cosine, batch 128, seed 0, the last 5,000 training images held out). The data is
moved to the device once. Kernels are compiled and caches warmed by a short fit on a
throw-away model first, reported apart as the warm-up. Then each epoch is timed with
the device synchronized at both ends; the test accuracy is measured after every epoch,
outside the training clock. "Seconds to 98%" sums the training seconds of the epochs up
to the first whose test accuracy reaches 0.98.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from common import environment, gpu_name, now, print_flush, write_results

import nnscratch as nn
from nnscratch import datasets

TARGET = 0.98


class EpochClock(nn.Callback):
    """Training seconds per epoch (device synchronized) and the test accuracy after it,
    measured with the clock stopped."""

    def __init__(self, backend: nn.Backend, x_test: Any, y_test: Any) -> None:
        self.backend, self.x_test, self.y_test = backend, x_test, y_test
        self.epochs: list[dict[str, float]] = []

    def on_epoch_begin(self, epoch: int) -> None:
        self.backend.synchronize()
        self.start = time.perf_counter()

    def on_batch_end(self, step: int, loss: Any) -> None:
        if step == 0:
            self.first_step_done = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        # fit has read the epoch's loss and evaluated the validation set: that belongs to
        # training; the test set is ours, timed apart
        self.backend.synchronize()
        seconds = time.perf_counter() - self.start
        test = self.model.evaluate(self.x_test, self.y_test)
        self.epochs.append({"epoch": epoch + 1, "seconds": seconds,
                            "test_accuracy": test["accuracy"], **logs})
        print_flush(f"epoch {epoch + 1}: {seconds:.3f} s, test accuracy "
                    f"{test['accuracy']:.4f}")

    def on_train_begin(self, model: Any, info: dict[str, Any]) -> None:
        self.model = model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cupy", help="numpy, cupy, torch, ...")
    parser.add_argument("--device", default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--data", default=None, help="MNIST folder (default: NNSCRATCH_DATA)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    backend = nn.use_backend(args.backend, args.device).backend
    data = datasets.load("mnist", args.data, download=False, report=None)
    x_train, y_train, x_val, y_val = (backend.asarray(a) for a in data.split(5000, args.limit))
    x_test, y_test = backend.asarray(data.x_test), backend.asarray(data.y_test)
    sizes = [784, 512, 256, 10]

    def train(model: nn.Sequential, epochs: int, callbacks: list[nn.Callback],
              X: Any = x_train, y: Any = y_train) -> None:
        model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=1e-3),
                  epochs=epochs, batch_size=128, seed=0, validation_data=(x_val, y_val),
                  schedule=nn.CosineDecay(args.epochs), callbacks=callbacks)

    start = time.perf_counter()
    nn.seed(1)
    train(nn.mlp(sizes), 1, [], x_train[:128 * 20, ...], y_train[:128 * 20, ...])
    backend.synchronize()
    warm_up = time.perf_counter() - start
    print_flush(f"{backend}: warm-up (kernel compilation, first allocations) {warm_up:.2f} s")

    nn.seed(0)
    clock = EpochClock(backend, x_test, y_test)
    train(nn.mlp(sizes), args.epochs, [clock])
    elapsed, reached = 0.0, None
    for epoch in clock.epochs:
        elapsed += epoch["seconds"]
        if reached is None and epoch["test_accuracy"] >= TARGET:
            reached = {"epoch": epoch["epoch"], "training_seconds": elapsed}
    final = clock.epochs[-1]["test_accuracy"]
    seconds = [epoch["seconds"] for epoch in clock.epochs]
    print_flush(f"test accuracy {final:.4f} after {len(seconds)} epochs; "
                f"{sum(seconds):.2f} s of training ({sum(seconds) / len(seconds):.3f} s per "
                "epoch); " + (f"{TARGET:.0%} after epoch {reached['epoch']}, "
                              f"{reached['training_seconds']:.2f} s of training"
                              if reached else f"{TARGET:.0%} not reached"))
    gpu = gpu_name()
    if args.out:
        write_results(args.out, "time_to_accuracy", {
            "date": now(), "environment": environment(gpu), "backend": str(backend),
            "warm_up_seconds": warm_up, "epochs": clock.epochs,
            "final_test_accuracy": final, "target": TARGET, "reached": reached})
    return 0


if __name__ == "__main__":
    sys.exit(main())
