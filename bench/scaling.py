"""Cost as the network grows: nnscratch ``fit`` against PyTorch CPU eager, 784-h-h-10.

    python bench/scaling.py                          # the table in bench/README.md
    python bench/scaling.py --quick                  # a smoke test, well under a minute
    python bench/scaling.py --sizes 2048x128,4096x512 --rounds 5

The MNIST MLP of bench/mlp.py with both hidden layers h wide (ReLU, softmax
cross-entropy, Adam lr 1e-3, float32), for a grid of (h, batch). For each pair, two
implementations train the same network from the same initial weights on the same samples
in the same order: nnscratch's public ``model.fit`` on the numpy backend, and PyTorch
``nn.Sequential`` + ``torch.optim.Adam()`` (its default, eager, CPU). Both use the same
number of threads (``--threads``, default 2: numpy's BLAS through threadpoolctl,
``torch.set_num_threads``, numba's threads where the fused optimizer runs).

A round is one epoch of ``steps`` steps for each implementation in turn (interleaved,
see common.py); ``steps`` is chosen per pair from its matmul FLOPs, so that a round lasts
about ``--seconds`` on the unloaded 2-core machine (at least 2 steps). The ratio
torch / nnscratch is taken per round (> 1: nnscratch is faster) and the table shows
its median and min-max, beside each one's median ms/step.
On a machine shared with other work, the per-round ratios are the numbers to read: the
load hits both runs of a round alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    Candidate,
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
    write_results,
)
from common import default_results_path as results_path_for
from mlp import BETAS, EPS, LR, SEED, load_data, sample_subset, torch_epoch, torch_model

import nnscratch as nn

# (hidden width, batch): every width at a small and a large batch, the pairs
# included; 4096 × 1024 is left out (over a second per step on two cores).
GRID = ((128, 64), (128, 128), (128, 1024),
        (512, 64), (512, 128), (512, 1024),
        (2048, 64), (2048, 128), (2048, 1024),
        (4096, 64), (4096, 512))
QUICK_GRID = ((128, 128), (2048, 128))
TORCH = "PyTorch cpu (Adam)"
NNSCRATCH = "nnscratch numpy (fit)"
BASELINE = "nnscratch numpy (fit), baseline revision"
MIN_STEPS = 2
NOMINAL_RATE = 30e9  # FLOP/s of a step on the 2-core machine, unloaded (for the step count)
ROOT = Path(__file__).resolve().parents[1]


def layer_sizes(hidden: int | str) -> tuple[int, ...]:
    """784-h-h-10; a spec such as ``"256-128"`` names the hidden widths one by one (the
    network of bench/mlp.py)."""
    if isinstance(hidden, str):
        return (784, *map(int, hidden.split("-")), 10)
    return (784, hidden, hidden, 10)


def parameter_count(hidden: int | str) -> int:
    sizes = layer_sizes(hidden)
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def initial_weights(hidden: int | str) -> list[tuple[np.ndarray, np.ndarray]]:
    """nnscratch's initial (weight, bias) per Dense layer, as float32 host arrays."""
    with nn.use_backend("numpy"):
        nn.seed(SEED)
        model = build_model(nn, hidden)
        return [(np.array(layer.weight.value), np.array(layer.bias.value))
                for layer in model.layers if isinstance(layer, nn.Dense)]


def build_model(library: Any, hidden: int | str,
                initial: list[tuple[np.ndarray, np.ndarray]] | None = None) -> Any:
    """The MLP built by ``library`` (nnscratch, or the baseline's copy of it)."""
    sizes = layer_sizes(hidden)
    layers: list[Any] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [library.Dense(fan_in, fan_out), library.ReLU()]
    model = library.Sequential(*layers[:-1])
    if initial is not None:
        for layer, (weight, bias) in zip(
                [layer for layer in model.layers if isinstance(layer, library.Dense)],
                initial):
            layer.weight.value = np.array(weight, copy=True)
            layer.bias.value = np.array(bias, copy=True)
    return model


def step_flops(hidden: int | str, batch: int) -> int:
    """Matmul FLOPs of a step (bench/mlp.py's formula: 3 products per layer, less the
    first layer's input gradient)."""
    sizes = layer_sizes(hidden)
    products = [fan_in * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    return 2 * batch * (3 * sum(products) - products[0])


def steps_per_round(hidden: int | str, batch: int, seconds: float) -> int:
    """Steps for a round of about ``seconds`` at NOMINAL_RATE: from the FLOPs, not from a
    timed warm-up, which on a loaded machine picks a count by chance."""
    return max(MIN_STEPS, min(200, round(seconds * NOMINAL_RATE / step_flops(hidden, batch))))


def fit_epoch(library: Any, hidden: int | str, batch: int,
              initial: list[tuple[np.ndarray, np.ndarray]]) -> Any:
    """An epoch of ``library``'s ``fit`` (numpy backend, Adam) on given host data."""
    library.use_backend("numpy")
    model = build_model(library, hidden, initial)
    optimizer = library.Adam(lr=LR, betas=BETAS, eps=EPS)

    def epoch(Xb: np.ndarray, yb: np.ndarray) -> None:
        library.use_backend("numpy")
        model.fit(Xb, yb, loss=library.SoftmaxCrossEntropy(), optimizer=optimizer,
                  epochs=1, batch_size=batch, seed=SEED, verbose=0)

    epoch.weights = lambda: [np.array(layer.weight.value) for layer in model.layers
                             if isinstance(layer, library.Dense)]
    return epoch


def measure_pair(torch: Any, X: np.ndarray, y: np.ndarray, hidden: int | str, batch: int,
                 rounds: int, seconds: float, baseline: Any = None) -> dict[str, Any]:
    """Interleaved rounds of nnscratch ``fit``, PyTorch eager (and the baseline's
    ``fit``) for one (h, batch)."""
    initial = initial_weights(hidden)
    epochs = {NNSCRATCH: fit_epoch(nn, hidden, batch, initial)}
    if baseline is not None:
        epochs[BASELINE] = fit_epoch(baseline, hidden, batch, initial)
    t_model = torch_model(torch, initial, "cpu")
    t_optimizer = torch.optim.Adam(t_model.parameters(), lr=LR, betas=BETAS, eps=EPS)

    def torch_run(Xb: np.ndarray, yb: np.ndarray) -> None:
        torch_epoch(torch, t_model, t_optimizer, torch.from_numpy(Xb), torch.from_numpy(yb),
                    batch)

    epochs[TORCH] = torch_run
    # warm-up: two steps each (compilation, first allocations, thread start-up), from the
    # same weights on the same samples: the weights after it must agree (the same work)
    X_warm, y_warm = sample_subset(X, y, 2 * batch)
    for epoch in epochs.values():
        epoch(X_warm, y_warm)
    torch_weights = [np.array(layer.weight.detach().numpy().T) for layer in t_model
                     if isinstance(layer, torch.nn.Linear)]
    difference = {name: max(float(np.abs(a - b).max()) for a, b in
                            zip(epochs[name].weights(), torch_weights))
                  for name in epochs if name != TORCH}
    steps = steps_per_round(hidden, batch, seconds)
    X_run, y_run = sample_subset(X, y, steps * batch)
    candidates = [Candidate(name, lambda epoch=epoch: epoch(X_run, y_run), steps)
                  for name, epoch in epochs.items()]
    run_interleaved(candidates, rounds)
    seconds_of = {candidate.name: candidate.seconds for candidate in candidates}
    row = {
        "hidden": hidden, "batch": batch, "parameters": parameter_count(hidden),
        "steps": steps, "rounds": rounds,
        "ms_per_step": {c.name: spread([s * 1e3 for s in c.seconds]) for c in candidates},
        "torch_over_nnscratch": ratio(seconds_of[TORCH], seconds_of[NNSCRATCH]),
        "max_abs_weight_difference_to_torch_after_warmup": difference,
    }
    if baseline is not None:
        row["torch_over_baseline"] = ratio(seconds_of[TORCH], seconds_of[BASELINE])
        row["baseline_over_nnscratch"] = ratio(seconds_of[BASELINE], seconds_of[NNSCRATCH])
    return row


def import_baseline(revision: str) -> Any:
    """nnscratch as it was at the git ``revision``, imported as ``nnscratch_baseline``
    (a copy of its package in a temporary directory: its imports are relative), so that
    the same run times the code before and after a change, interleaved."""
    import importlib
    import io
    import subprocess
    import tarfile
    import tempfile

    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "nnscratch"],
                             capture_output=True, check=True).stdout
    directory = Path(tempfile.mkdtemp(prefix="nnscratch-baseline-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    (directory / "nnscratch").rename(directory / "nnscratch_baseline")
    sys.path.insert(0, str(directory))
    return importlib.import_module("nnscratch_baseline")


def print_table(rows: list[dict[str, Any]]) -> None:
    baseline = "torch_over_baseline" in rows[0]
    headers = ["hidden", "batch", "θ", "nnscratch ms/step", "torch ms/step",
               "torch / nnscratch [min-max]"]
    if baseline:
        headers += ["baseline ms/step", "torch / baseline", "baseline / nnscratch"]
    cells = []
    for row in rows:
        ms = row["ms_per_step"]
        cells.append([str(row["hidden"]), str(row["batch"]), f"{row['parameters'] / 1e6:.2f}M",
                      f"{ms[NNSCRATCH]['median']:.2f}", f"{ms[TORCH]['median']:.2f}",
                      format_range(row["torch_over_nnscratch"])])
        if baseline:
            cells[-1] += [f"{ms[BASELINE]['median']:.2f}",
                          format_range(row["torch_over_baseline"]),
                          format_range(row["baseline_over_nnscratch"])]
    print_flush(table(headers, cells, align_left=0))


def memory_child(hidden: int, batch: int, steps: int = 3) -> dict[str, Any]:
    """Peak traced memory of ``steps`` steps of ``fit`` (numpy backend, Adam; the peak of
    building the model apart) against the
    bytes a step needs: θ, ∇θ, Adam's two moments and one batch's activations (the
    input, each Dense's and each ReLU's output). Run in a child process (``--memory``):
    tracing starts after the data is made, so the peak is the training's own."""
    import json
    import tracemalloc

    rng = np.random.default_rng(SEED)
    X = rng.random((steps * batch, 784), dtype=np.float32)
    y = rng.integers(0, 10, steps * batch)
    tracemalloc.start()
    nn.seed(SEED)
    model = build_model(nn, hidden)
    _, build_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    optimizer = nn.Adam(lr=LR, betas=BETAS, eps=EPS)
    model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=1,
              batch_size=batch, seed=SEED, verbose=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    theta = model.parameters().vector.value.nbytes
    itemsize = 4
    activations = batch * (784 + 4 * hidden + 10) * itemsize
    needed = {"theta": theta, "grad": theta, "adam_state": 2 * theta,
              "activations": activations}
    result = {"hidden": hidden, "batch": batch, "peak_bytes": peak, "needed_bytes": needed,
              "build_peak_bytes": build_peak,
              "ratio_with_grad": peak / sum(needed.values()),
              "ratio_without_grad": peak / (sum(needed.values()) - theta)}
    print(json.dumps(result))
    return result


def measure_memory(hidden: int, batch: int, fused: bool) -> dict[str, Any]:
    """``memory_child`` in a fresh process (NNSCRATCH_FUSED on or off)."""
    import json
    import subprocess

    env = {**os.environ, "NNSCRATCH_FUSED": "1" if fused else "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, __file__, "--memory-child", f"{hidden}x{batch}"],
                         capture_output=True, text=True, env=env, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["fused"] = fused
    return result


def parse_grid(text: str) -> tuple[tuple[int, int], ...]:
    pairs = []
    for item in text.split(","):
        hidden, _, batch = item.strip().partition("x")
        pairs.append((int(hidden) if hidden.isdigit() else hidden, int(batch)))
    return tuple(pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=parse_grid, default=None,
                        help="pairs hidden x batch, e.g. 128x64,4096x512, or 256-128x128 for "
                        "784-256-128-10 (default: the grid)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.6,
                        help="about how long one implementation's round lasts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", default=None)
    parser.add_argument("--baseline", default=None, metavar="REVISION",
                        help="also time nnscratch as of this git revision (e.g. main), "
                        "interleaved in the same rounds")
    parser.add_argument("--memory", type=parse_grid, default=None, metavar="HxB",
                        help="peak memory of fit at these pairs (fused and standard path), "
                        "e.g. 4096x512; no timing")
    parser.add_argument("--memory-child", type=parse_grid, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--label", default="scaling",
                        help="the section of the results file (e.g. scaling-before)")
    parser.add_argument("--out", default=None, help="results file (default: per machine)")
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(*args.memory_child[0])
        return 0
    if args.memory:
        results = [measure_memory(hidden, batch, fused) for hidden, batch in args.memory
                   for fused in (True, False)]
        mib = 2.0**20
        for result in results:
            needed = result["needed_bytes"]
            print_flush(
                f"h={result['hidden']} batch={result['batch']} "
                f"{'fused' if result['fused'] else 'standard path'}: peak "
                f"{result['peak_bytes'] / mib:.0f} MiB = {result['ratio_with_grad']:.2f}x "
                f"(θ + ∇θ + Adam state + activations = "
                f"{sum(needed.values()) / mib:.0f} MiB), "
                f"{result['ratio_without_grad']:.2f}x without ∇θ; building the model "
                f"peaked at {result['build_peak_bytes'] / mib:.0f} MiB")
        path = Path(args.out) if args.out else results_path_for()
        write_results(path, f"{args.label}-memory", {"date": now(), "runs": results})
        return 0
    grid = args.sizes or (QUICK_GRID if args.quick else GRID)
    if args.quick:
        args.rounds, args.seconds = min(args.rounds, 2), min(args.seconds, 0.2)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import torch

    load_at_start = load_average()
    note = limit_threads(args.threads)
    if note:
        print_flush(f"note: {note}")
    torch.set_num_threads(args.threads)
    X, y, source = load_data(args.data, download=False)
    print_flush(f"784-h-h-10, Adam, {args.threads} threads, data: {source}; "
                f"load average {load_at_start}")
    baseline = import_baseline(args.baseline) if args.baseline else None
    rows = []
    for hidden, batch in grid:
        row = measure_pair(torch, X, y, hidden, batch, args.rounds, args.seconds, baseline)
        rows.append(row)
        print_flush(f"h={hidden} batch={batch}: torch/nnscratch "
                    f"{format_range(row['torch_over_nnscratch'])} "
                    f"({row['steps']} steps x {row['rounds']} rounds)")
    print_flush("")
    print_table(rows)
    lowest = min(statistics.median(row["torch_over_nnscratch"]["samples"]) for row in rows)
    print_flush(f"\nlowest median ratio {lowest:.2f} (target >= 1.0 at every size)")
    path = Path(args.out) if args.out else results_path_for()
    write_results(path, args.label, {"date": now(), "threads": args.threads, "data": source,
                                     "baseline": args.baseline,
                               "rows": rows, "environment": environment(None, load_at_start)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
