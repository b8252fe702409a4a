"""Data parallelism, measured and modelled: 1 process against 2 MPI ranks on MNIST.

    python bench/distributed.py                  # measure here (about 2 minutes on 2 cores)
    python bench/distributed.py --model-only     # the ring all-reduce model's table only

Every run trains the MNIST MLP (784-256-128-10, and 784-512-256-10) with Adam through
``model.fit``, on the MNIST training set, at the same **global** batch (128 and 512), for
one warm-up epoch and ``--epochs`` timed ones (the fastest counts), once per round, the
``--rounds`` interleaved; ratios are taken per round. The layouts:

* ``1 process, 2 threads``: one process using both cores (BLAS threads), as a user runs;
* ``1 process, 1 thread``: one core, the compute of one rank doing the whole batch;
* ``2 ranks, 1 thread each``: ``mpiexec -n 2``, each rank on half of every batch.

A rank's time in ``allreduce_`` (the one all-reduce of ∇θ per step) is measured inside
``fit``; it includes waiting for the slower rank. Apart from training, the all-reduce of P
float32 values alone is timed after a barrier, and a series of message sizes gives this
MPI's latency and bandwidth for the model (see ``ring_allreduce_seconds``).

Results go to bench/results/<machine>-<date>.json, section "distributed".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    DEFAULT_DATA,
    default_results_path,
    environment,
    format_range,
    load_average,
    now,
    ratio,
    spread,
    table,
)
from common import write_results as write_results_file

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
NETWORKS = {"784-256-128-10": (256, 128), "784-512-256-10": (512, 256)}
BATCHES = (128, 512)
# (label, ranks, BLAS threads per rank)
LAYOUTS = [("1 process, 2 threads", 1, 2), ("1 process, 1 thread", 1, 1),
           ("2 ranks, 1 thread each", 2, 1)]
MESSAGE_FLOATS = (1, 64, 1024, 16_384, 65_536, 262_144, 1_048_576)
MODEL_BANDWIDTHS_GBPS = (25, 100, 400)
MODEL_RANKS = (2, 4, 8, 16, 32, 64)
MODEL_LATENCY_SECONDS = 5e-6  # per message across a network (InfiniBand/RoCE: 1-5 µs)


def parameter_count(hidden: tuple[int, ...]) -> int:
    widths = [784, *hidden, 10]
    return sum((a + 1) * b for a, b in zip(widths, widths[1:]))


def ring_allreduce_seconds(parameters: int, ranks: int, bandwidth_bytes: float,
                           latency: float) -> float:
    """The ring all-reduce of P float32 values over N ranks:

        t = 2(N − 1)/N · 4P / bandwidth + 2(N − 1) · latency

    (a reduce-scatter then an all-gather, each N − 1 messages of 4P/N bytes per rank)."""
    return 2 * (ranks - 1) / ranks * 4 * parameters / bandwidth_bytes \
        + 2 * (ranks - 1) * latency


def break_even_batch(per_sample: float, allreduce: float, ranks: int) -> float:
    """The global batch below which N ranks are slower than one process.

    One process takes t₁ = c·B + t₀ per step (c: compute per sample, forward and
    backward; t₀: what does not shrink with the batch, the optimizer's update of θ above
    all). N ranks each do c·B/N, the same t₀ (every rank updates all of θ), and the
    all-reduce: t_N = c·B/N + t₀ + t_ar. So t_N < t₁ exactly when c·B·(1 − 1/N) > t_ar:

        B* = N / (N − 1) · t_ar / c."""
    return ranks / (ranks - 1) * allreduce / per_sample


# -- the worker: one run, under mpiexec or alone ------------------------------------------------


def worker(config: dict[str, Any]) -> None:
    """Train as told by ``config`` and print one ``RESULT {json}`` line (rank 0)."""
    import nnscratch as nn

    comm = nn.distributed.init()
    mnist = nn.datasets.load("mnist", config["data"], download=False, report=None)
    limit = config.get("limit")
    X, y = mnist.x_train[:limit], mnist.y_train[:limit]
    backend = nn.get_backend()
    X, y = backend.asarray(X), backend.asarray(y)
    nn.seed(0)
    widths = [784, *config["hidden"]]
    layers: list[nn.Layer] = []
    for width_in, width_out in zip(widths, widths[1:]):
        layers += [nn.Dense(width_in, width_out, init="he_normal"), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Dense(widths[-1], 10, init="he_normal"))

    spent = [0.0]
    plain_allreduce = comm.allreduce_

    def timed_allreduce(array: Any) -> Any:
        start = time.perf_counter()
        plain_allreduce(array)
        spent[0] += time.perf_counter() - start
        return array

    comm.allreduce_ = timed_allreduce
    epochs: list[dict[str, float]] = []

    class EpochTimer(nn.Callback):
        def on_epoch_begin(self, epoch: int) -> None:
            spent[0] = 0.0
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
            epochs.append({"seconds": time.perf_counter() - self.start,
                           "allreduce_seconds": spent[0], "loss": logs["loss"]})

    model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=1e-3),
              epochs=1 + config["epochs"], batch_size=config["batch"], seed=0,
              callbacks=[EpochTimer()], communicator=comm)
    comm.allreduce_ = plain_allreduce
    steps = -(-X.shape[0] // config["batch"])
    timed = epochs[1:]
    result = {
        **config, "samples": int(X.shape[0]), "steps": steps,
        "parameters": model.parameter_count(),
        "epoch_seconds": [epoch["seconds"] for epoch in timed],
        "allreduce_seconds_per_epoch": [epoch["allreduce_seconds"] for epoch in timed],
        "final_loss": epochs[-1]["loss"],
    }
    if comm.size > 1:
        # The slowest rank's share decides: gather every rank's numbers.
        result["allreduce_seconds_per_epoch_by_rank"] = comm.allgather(
            result["allreduce_seconds_per_epoch"])
        result["pure_allreduce_seconds"] = allreduce_alone(comm, model.parameter_count())
        if config.get("measure_messages"):
            result["messages"] = message_series(comm)
    if comm.rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


def allreduce_alone(comm: Any, floats: int, repeats: int = 50) -> dict[str, float]:
    """Seconds of one all-reduce of ``floats`` float32 values started together (after a
    barrier): the median and the minimum over ``repeats``, the slowest rank's."""
    buffer = np.ones(floats, dtype=np.float32)
    times = []
    for _ in range(repeats):
        comm.barrier()
        start = time.perf_counter()
        comm.allreduce_(buffer)
        times.append(time.perf_counter() - start)
    everyone = comm.allgather((statistics.median(times), min(times)))
    return {"median": max(median for median, _ in everyone),
            "min": max(least for _, least in everyone)}


def message_series(comm: Any) -> dict[str, Any]:
    """All-reduce times (the minimum of many: the cost without interference) over
    message sizes."""
    return {"bytes": [4 * floats for floats in MESSAGE_FLOATS],
            "seconds": [allreduce_alone(comm, floats, 200 if floats < 65_536 else 40)["min"]
                        for floats in MESSAGE_FLOATS]}


def latency_and_bandwidth(series: dict[str, Any], ranks: int = 2) -> tuple[float, float]:
    """The model's terms from a message series: t = 2(N − 1)·latency for the smallest
    message (4 bytes: nothing to transfer), and the bandwidth from the slope between the
    two largest, t = 2(N − 1)/N · bytes / bandwidth + ..."""
    sizes, seconds = series["bytes"], series["seconds"]
    latency = seconds[0] / (2 * (ranks - 1))
    slope = (seconds[-1] - seconds[-2]) / (sizes[-1] - sizes[-2])
    return latency, 2 * (ranks - 1) / ranks / slope


# -- the driver ----------------------------------------------------------------------------------


def launch(config: dict[str, Any], ranks: int, threads: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", json.dumps(config)]
    if ranks > 1:
        command = [str(MPIEXEC), "-n", str(ranks), *command]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["NNSCRATCH_BACKEND"] = "numpy"
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n"
                         f"{done.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every layout of every network and batch once per round, rounds interleaved (a
    busy spell of a shared machine hits neighbouring runs alike)."""
    runs = []
    for round_index in range(args.rounds):
        first_of_round = True
        for network, hidden in NETWORKS.items():
            for batch in BATCHES:
                for label, ranks, threads in LAYOUTS:
                    config = {"data": str(args.data), "hidden": list(hidden), "batch": batch,
                              "epochs": args.epochs, "limit": args.limit,
                              "measure_messages": ranks > 1 and first_of_round}
                    first_of_round = first_of_round and ranks == 1
                    result = launch(config, ranks, threads)
                    result.update(network=network, layout=label, ranks=ranks,
                                  threads=threads, round=round_index)
                    runs.append(result)
                    print(f"round {round_index + 1}: {network} batch {batch:>4} {label:<24} "
                          f"{min(result['epoch_seconds']):6.2f} s/epoch", flush=True)
    return runs


def epoch_time(run: dict[str, Any]) -> float:
    """A run's epoch: the fastest of its timed epochs (the least disturbed)."""
    return min(run["epoch_seconds"])


def allreduce_shares(run: dict[str, Any]) -> list[float]:
    """Each rank's share of that epoch spent in ``allreduce_`` (waiting included)."""
    fastest = run["epoch_seconds"].index(epoch_time(run))
    return [seconds[fastest] / epoch_time(run)
            for seconds in run["allreduce_seconds_per_epoch_by_rank"]]


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per network, batch and layout: the epoch time over rounds, its ratio to each
    one-process layout per round, the all-reduce's share and its time alone."""
    rows = []
    for network in NETWORKS:
        for batch in BATCHES:
            group = [run for run in runs if run["network"] == network and run["batch"] == batch]
            rounds = sorted({run["round"] for run in group})

            def times(label: str, group: list[dict[str, Any]] = group,
                      rounds: list[int] = rounds) -> list[float]:
                return [epoch_time(next(run for run in group if run["layout"] == label
                                        and run["round"] == index)) for index in rounds]

            for label, ranks, _ in LAYOUTS:
                mine = [run for run in group if run["layout"] == label]
                row = {"network": network, "batch": batch, "layout": label,
                       "steps": mine[0]["steps"], "epoch_seconds": spread(times(label)),
                       "speedup": {reference: ratio(times(reference), times(label))
                                   for reference, reference_ranks, _ in LAYOUTS
                                   if reference_ranks == 1}}
                if ranks > 1:
                    shares = [allreduce_shares(run) for run in mine]
                    row["allreduce_share"] = {"fastest_rank": spread([min(s) for s in shares]),
                                              "slowest_rank": spread([max(s) for s in shares])}
                    row["allreduce_alone_seconds"] = spread(
                        [run["pure_allreduce_seconds"]["median"] for run in mine])
                rows.append(row)
    return rows


def training_table(rows: list[dict[str, Any]]) -> str:
    one_thread, two_threads = LAYOUTS[1][0], LAYOUTS[0][0]
    cells = []
    for row in rows:
        share, alone = "-", "-"
        if "allreduce_share" in row:
            share = (f"{100 * row['allreduce_share']['fastest_rank']['median']:.0f}-"
                     f"{100 * row['allreduce_share']['slowest_rank']['median']:.0f}%")
            alone = f"{1e6 * row['allreduce_alone_seconds']['median']:.0f}"
        ms_per_step = 1e3 * row["epoch_seconds"]["median"] / row["steps"]
        cells.append([row["network"], str(row["batch"]), row["layout"],
                      format_range(row["epoch_seconds"]), f"{ms_per_step:.2f}",
                      format_range(row["speedup"][two_threads]),
                      format_range(row["speedup"][one_thread]), share, alone])
    return table(["network", "batch", "layout", "s/epoch [min-max]", "ms/step",
                  "x (1 process, 2 thr)", "x (1 process, 1 thr)", "in allreduce_",
                  "allreduce alone µs"], cells, align_left=3)


def message_table(series: dict[str, Any]) -> str:
    rows = [[f"{size:,}", f"{1e6 * seconds:.1f}"]
            for size, seconds in zip(series["bytes"], series["seconds"])]
    latency, bandwidth = latency_and_bandwidth(series)
    return (table(["bytes", "µs (2 ranks, min)"], rows, align_left=0)
            + f"\nlatency {1e6 * latency:.1f} µs per message (4 bytes: t = 2·latency), "
            f"bandwidth {bandwidth / 1e9:.2f} GB/s (slope of the two largest)")


def model_check(runs: list[dict[str, Any]], series: dict[str, Any]) -> str:
    """The model with this machine's latency and bandwidth against the all-reduce of
    θ's gradient measured alone, for each network."""
    latency, bandwidth = latency_and_bandwidth(series)
    lines = []
    for network in NETWORKS:
        mine = [run for run in runs if run["network"] == network and run["ranks"] > 1]
        predicted = ring_allreduce_seconds(mine[0]["parameters"], 2, bandwidth, latency)
        least = min(run["pure_allreduce_seconds"]["min"] for run in mine)
        typical = statistics.median(run["pure_allreduce_seconds"]["median"] for run in mine)
        lines.append(f"{network}: P = {mine[0]['parameters']:,}, model {1e6 * predicted:.0f} "
                     f"µs; measured alone {1e6 * least:.0f} µs (min), "
                     f"{1e6 * typical:.0f} µs (median)")
    return "\n".join(lines)


def step_costs(runs: list[dict[str, Any]], network: str) -> tuple[float, float]:
    """(c, t₀) of one core, from the 1-thread runs at the two batch sizes: the line
    through (B, seconds per step)."""
    best: dict[int, float] = {}
    for run in runs:
        if run["network"] == network and run["ranks"] == 1 and run["threads"] == 1:
            step = epoch_time(run) / run["steps"]
            best[run["batch"]] = min(step, best.get(run["batch"], step))
    (small, t_small), (large, t_large) = min(best.items()), max(best.items())
    per_sample = (t_large - t_small) / (large - small)
    return per_sample, t_small - per_sample * small


def break_even_table(costs: dict[str, float], latency: float = MODEL_LATENCY_SECONDS) -> str:
    """B* over N and the link's bandwidth, each rank computing at ``costs[network]``
    seconds per sample."""
    rows = []
    for network, hidden in NETWORKS.items():
        parameters = parameter_count(hidden)
        for gbps in MODEL_BANDWIDTHS_GBPS:
            cells = []
            for ranks in MODEL_RANKS:
                allreduce = ring_allreduce_seconds(parameters, ranks, gbps * 1e9 / 8, latency)
                cells.append(f"{break_even_batch(costs[network], allreduce, ranks):.0f}")
            rows.append([network, f"{gbps} Gb/s", *cells])
    return table(["network", "link", *(f"N={ranks}" for ranks in MODEL_RANKS)], rows,
                 align_left=2)


def model_table(latency: float = MODEL_LATENCY_SECONDS) -> str:
    """The ring model's all-reduce time (ms) per step, for both MLPs."""
    rows = []
    for network, hidden in NETWORKS.items():
        parameters = parameter_count(hidden)
        for gbps in MODEL_BANDWIDTHS_GBPS:
            bandwidth = gbps * 1e9 / 8  # bytes per second
            cells = [f"{1e3 * ring_allreduce_seconds(parameters, ranks, bandwidth, latency):.3f}"
                     for ranks in MODEL_RANKS]
            rows.append([f"{network} (P = {parameters:,})", f"{gbps} Gb/s", *cells])
    return table(["network", "link", *(f"N={ranks}" for ranks in MODEL_RANKS)], rows,
                 align_left=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("NNSCRATCH_DATA") or DEFAULT_DATA))
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds: every run once per round, interleaved")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per run")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first N samples (default: all 60,000)")
    parser.add_argument("--model-only", action="store_true",
                        help="print the ring all-reduce model's predictions only")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    print("ring all-reduce model, ms per step (latency "
          f"{1e6 * MODEL_LATENCY_SECONDS:.0f} µs per message)")
    print(model_table())
    if args.model_only:
        return 0
    if not MPIEXEC.exists():
        raise SystemExit(f"no mpiexec next to {sys.executable}: pip install 'nnscratch[mpi]'")
    load_at_start = load_average()
    started = now()
    runs = measure(args)
    rows = summarize(runs)
    all_series = [run["messages"] for run in runs if "messages" in run]
    series = {"bytes": all_series[0]["bytes"],  # the least disturbed of the rounds
              "seconds": [min(values) for values in zip(*(s["seconds"] for s in all_series))]}
    print()
    print(training_table(rows))
    print()
    print(message_table(series))
    print()
    print(model_check(runs, series))
    costs = {}
    for network in NETWORKS:
        per_sample, fixed = step_costs(runs, network)
        costs[network] = per_sample
        print(f"{network}: one core computes c = {1e6 * per_sample:.2f} µs per sample, "
              f"t0 = {1e3 * fixed:.2f} ms per step (the Adam update and the rest)")
    print("\nglobal batch below which N ranks (each as fast as one core here) lose to one "
          f"process, latency {1e6 * MODEL_LATENCY_SECONDS:.0f} µs")
    print(break_even_table(costs))
    latency, bandwidth = latency_and_bandwidth(series)
    path = args.output or default_results_path()
    write_results_file(path, "distributed", {
        "started": started, "environment": environment(load_at_start=load_at_start),
        "rounds": args.rounds, "epochs": args.epochs, "limit": args.limit,
        "summary": rows, "messages": series, "latency_seconds": latency,
        "bandwidth_bytes_per_second": bandwidth,
        "step_costs": {network: dict(zip(("per_sample_seconds", "fixed_seconds"),
                                         step_costs(runs, network))) for network in NETWORKS},
        "runs": runs})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
