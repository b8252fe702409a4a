"""What data augmentation costs a training step: an augmented MLP step against a plain one.

    python bench/augment.py                    # numpy, 5 interleaved rounds of 100 steps
    python bench/augment.py --backends numpy,torch --threads 1
    python bench/augment.py --quick            # a smoke test; numbers meaningless

For each network (the bench MLP 784-256-128-10 and the recipe's 784-800-800-10, both
behind a ``Flatten``, batches of 128 images of 28 x 28, Adam), three candidates run in
turn in every round, so that the machine's load falls on all of them alike:

* plain: ``model.fit(X, y, epochs=1, batch_size=128, seed=0)`` over ``steps`` batches;
* augmented: the same with ``augment=nn.augment.mnist_recipe().transform`` (affine and
  elastic, one resampling of each batch);
* the transform alone, on ``steps`` batches.

The ratio augmented / plain is taken per round (median, min, max). Target (issue 18): at
most 1.5 on the CPU. The images are random (a step's time does not depend on the pixel
values).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from common import (
    Candidate,
    default_results_path,
    environment,
    format_range,
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

import nnscratch as nn
from nnscratch.errors import NNScratchError

NETWORKS = {"784-256-128-10": [784, 256, 128, 10], "784-800-800-10": [784, 800, 800, 10]}
BATCH = 128
TARGET = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="numpy", help="e.g. numpy,torch")
    parser.add_argument("--steps", type=int, default=100, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="cap numpy's and torch's CPU threads")
    parser.add_argument("--quick", action="store_true", help="10 steps, 2 rounds")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/...)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds = 10, 2
    return args


def candidates(backend: str, name: str, sizes: list[int], steps: int) -> list[Candidate]:
    """Plain fit, augmented fit and the transform alone, on ``backend``."""
    active = nn.use_backend(backend).backend
    rng = np.random.default_rng(0)
    X = active.asarray(rng.random((steps * BATCH, 28, 28), dtype=np.float32))
    y = active.asarray(rng.integers(0, 10, steps * BATCH))
    batch = X[:BATCH, ...]
    recipe = nn.augment.mnist_recipe()
    nn.seed(0)
    models = {kind: recipe.model(sizes) for kind in ("plain", "augmented")}
    optimizers = {kind: nn.Adam(lr=1e-3) for kind in models}

    def train(kind: str) -> None:
        models[kind].fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizers[kind],
                         epochs=1, batch_size=BATCH, seed=0,
                         augment=recipe.transform if kind == "augmented" else None)

    def transform_alone() -> None:
        for _ in range(steps):
            recipe.transform(batch)

    def setup() -> None:
        nn.use_backend(backend)

    sync = active.synchronize
    found = [Candidate(f"{name} plain", lambda: train("plain"), steps, sync, setup),
             Candidate(f"{name} augmented", lambda: train("augmented"), steps, sync, setup),
             Candidate(f"{name} transform alone", transform_alone, steps, sync, setup)]
    for candidate in found:  # warm up: first allocations, BLAS threads
        candidate.setup()
        candidate.run()
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_at_start = load_average()
    note = limit_threads(args.threads)
    if note:
        print_flush(f"note: {note}")
    results: dict[str, dict] = {}
    rows = []
    for backend in [name.strip() for name in args.backends.split(",") if name.strip()]:
        for name, sizes in NETWORKS.items():
            try:
                timed = candidates(backend, name, sizes, args.steps)
            except NNScratchError as exc:
                print_flush(f"{backend}: skipped ({exc})")
                break
            label = f"{backend} {name}"
            run_interleaved(timed, args.rounds, progress=lambda text, label=label: print(
                f"  {label}: {text}", file=sys.stderr, flush=True))
            plain, augmented, alone = timed
            cost = ratio(augmented.seconds, plain.seconds)
            results[label] = {
                "ms_per_step": {c.name: spread([s * 1e3 for s in c.seconds]) for c in timed},
                "augmented_over_plain": cost}
            rows.append([backend, name, format_range(spread([s * 1e3 for s in plain.seconds])),
                         format_range(spread([s * 1e3 for s in augmented.seconds])),
                         format_range(spread([s * 1e3 for s in alone.seconds])),
                         format_range(cost, suffix="x"), verdict(cost["median"], TARGET)])
    nn.use_backend("numpy")
    print(table(["backend", "MLP", "plain ms/step", "augmented ms/step", "transform ms/batch",
                 "augmented / plain", f"<= {TARGET}x"], rows))
    if args.out or not args.quick:  # a quick run's numbers are written only where asked
        write_results(args.out or default_results_path(), "augment", {
            "when": now(), "steps": args.steps, "rounds": args.rounds, "batch": BATCH,
            "transform": repr(nn.augment.mnist_recipe().transform), "results": results,
            "environment": environment(load_at_start=load_at_start)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
