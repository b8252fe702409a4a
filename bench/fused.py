"""The optimizer step alone at size: Adam on θ of 5.8M float32 values (784-2048-2048-10).

    python bench/fused.py                    # the numbers in bench/README.md ("Scaling")
    python bench/fused.py --size 20000000 --rounds 9
    python bench/fused.py --gpu              # CuPy's kernel on a GPU (bench/gpu.sh)

Interleaved rounds (see common.py) of one Adam step over all of θ, by:

* nnscratch on the numpy backend, fused (backend.fused_update: one numba loop on every
  core) and standard (``NNSCRATCH_FUSED=0``: the ~10 array operations of ``Adam.update``);
* nnscratch on the torch backend (its standard path: the same array operations on
  tensors);
* ``torch.optim.Adam`` on one tensor of the same size: default (``foreach``), and
  ``fused=True``.

With ``--gpu``: nnscratch on the cupy backend, fused (one ``ElementwiseKernel``) and
standard, and ``torch.optim.Adam`` on CUDA, default and fused.

Target (issue 23): ≤ 3 ms per step with the accelerator on the 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np
from common import (
    Candidate,
    format_range,
    limit_threads,
    load_average,
    nothing,
    print_flush,
    ratio,
    run_interleaved,
    spread,
    table,
)

import nnscratch as nn
from nnscratch.parameters import ParameterVector

SIZE = 784 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 10 + 10  # 5,824,522
FUSED = "nnscratch numpy, fused (numba)"
STANDARD = "nnscratch numpy, standard path"


def nnscratch_step(backend: str, size: int, fused: bool) -> Any:
    """One Adam step of nnscratch over a θ of ``size`` values on ``backend``."""
    with nn.use_backend(backend) as active:
        rng = np.random.default_rng(0)
        param = nn.Parameter(active.asarray(rng.standard_normal(size), dtype="float32"))
        vector = ParameterVector([param])
        vector.grad[...] = active.asarray(rng.standard_normal(size) * 1e-3, dtype="float32")
        param.grad = vector.grad
    optimizer = nn.Adam(lr=1e-3)
    params = nn.parameters.Parameters([param], vector)

    def step() -> None:
        os.environ["NNSCRATCH_FUSED"] = "1" if fused else "0"
        optimizer.step(params)

    return step


def torch_step(torch: Any, size: int, fused: bool, device: str = "cpu") -> Any:
    rng = np.random.default_rng(0)
    theta = torch.from_numpy(rng.standard_normal(size).astype(np.float32)).to(device)
    theta.grad = torch.from_numpy((rng.standard_normal(size) * 1e-3).astype(np.float32)
                                  ).to(device)
    optimizer = torch.optim.Adam([theta], lr=1e-3, **({"fused": True} if fused else {}))
    return optimizer.step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu", action="store_true",
                        help="CuPy's fused kernel and torch CUDA instead of the CPU")
    args = parser.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import torch

    load_at_start = load_average()
    limit_threads(args.threads)
    torch.set_num_threads(args.threads)
    sync = nothing
    if args.gpu:
        sync = torch.cuda.synchronize  # the whole device: CuPy's kernels and torch's
        steps = {"nnscratch cupy, fused (ElementwiseKernel)": nnscratch_step(
                     "cupy", args.size, True),
                 "nnscratch cupy, standard path": nnscratch_step("cupy", args.size, False),
                 "torch.optim.Adam cuda (foreach)": torch_step(torch, args.size, False,
                                                               "cuda")}
    else:
        steps = {FUSED: nnscratch_step("numpy", args.size, True),
                 STANDARD: nnscratch_step("numpy", args.size, False),
                 "nnscratch torch backend (standard path)": nnscratch_step(
                     "torch", args.size, False),
                 "torch.optim.Adam (foreach)": torch_step(torch, args.size, False)}
    try:
        steps["torch.optim.Adam(fused=True)"] = torch_step(
            torch, args.size, True, "cuda" if args.gpu else "cpu")
        steps["torch.optim.Adam(fused=True)"]()
    except (RuntimeError, TypeError, ValueError) as exc:
        print_flush(f"note: torch fused Adam not available here: {exc}")
        steps.pop("torch.optim.Adam(fused=True)", None)
    candidates = []
    for name, step in steps.items():
        step()  # warm-up: compilation (loaded from numba's cache), first allocations

        def run(step: Any = step) -> None:
            for _ in range(args.steps):
                step()

        candidates.append(Candidate(name, run, args.steps, sync=sync))
    os.environ.pop("NNSCRATCH_FUSED", None)
    run_interleaved(candidates, args.rounds)
    fused = candidates[0]  # nnscratch fused, numpy or cupy
    rows = [[c.name, format_range(spread([s * 1e3 for s in c.seconds])),
             format_range(ratio(c.seconds, fused.seconds))] for c in candidates]
    where = "GPU" if args.gpu else f"{args.threads} threads"
    print_flush(f"Adam, one step over {args.size:,} float32 values, {where}, "
                f"{args.rounds} rounds x {args.steps} steps; load average {load_at_start} "
                f"-> {load_average()}")
    print_flush(table(["implementation", "ms/step [min-max]", "÷ fused (per round)"], rows))
    best = min(fused.seconds) * 1e3
    print_flush(f"fused: median {np.median(fused.seconds) * 1e3:.2f} ms, best round "
                f"{best:.2f} ms" + ("" if args.gpu else " (target <= 3 ms on the 2-core CPU)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
