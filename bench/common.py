"""What the benchmarks share: honest timing, interleaved rounds, ratios, the machine's
name, the results file and the tables.

Timing rules (every number in a results file follows them):

* warm-up first: every implementation runs before its first timed round, so imports,
  first allocations, BLAS thread start-up and GPU kernel loading are not timed;
* the device is synchronized before each clock read (``nn.synchronize()``,
  ``torch.cuda.synchronize()``); on the CPU that is a no-op;
* rounds are interleaved: round 1 of every implementation, then round 2 of every
  implementation, ... so a slow patch of a shared machine hits all of them alike, and a
  ratio is taken per round between runs that sat next to each other in time;
* we report the median over rounds, the spread (min-max), and for a ratio its per-round
  median and min-max; garbage collection is off inside a timed region (as ``timeit``).
"""

from __future__ import annotations

import datetime as _datetime
import gc
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"

# -- timing ----------------------------------------------------------------------------


def nothing() -> None:
    """The synchronize of a CPU implementation (nothing is queued), or no setup."""


# A pause before every timed run. After a parallel region, BLAS and OpenMP worker
# threads keep spinning for a while before they sleep (OpenBLAS up to ~0.1 s); on a
# two-core machine they would take a core from whatever runs next. (mlp.py also warms
# each candidate up again before each run: see BatchRun.add.)
SETTLE_SECONDS = 0.1


def timed(run: Callable[[], Any], sync: Callable[[], None] = nothing,
          setup: Callable[[], None] = nothing) -> float:
    """Seconds one call of ``run`` takes, the device drained before both clock reads;
    ``setup`` (e.g. activating a backend) runs before, untimed."""
    setup()
    gc.collect()
    time.sleep(SETTLE_SECONDS)
    enabled = gc.isenabled()
    gc.disable()
    try:
        sync()
        start = time.perf_counter()
        run()
        sync()
        return time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()


@dataclass
class Candidate:
    """One implementation being timed: ``run()`` does ``steps`` units of work (training
    steps, epochs), ``sync()`` waits for its device, ``setup()`` runs untimed before."""

    name: str
    run: Callable[[], Any]
    steps: int
    sync: Callable[[], None] = nothing
    setup: Callable[[], None] = nothing
    device: str = "cpu"
    informational: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)  # per round, per unit of work


def run_interleaved(candidates: Sequence[Candidate], rounds: int,
                    progress: Callable[[str], None] | None = None) -> None:
    """Time ``rounds`` rounds, each running every candidate once in turn; fills each
    candidate's ``seconds`` with the time per unit of work of every round."""
    for index in range(rounds):
        for candidate in candidates:
            elapsed = timed(candidate.run, candidate.sync, candidate.setup)
            candidate.seconds.append(elapsed / candidate.steps)
        if progress is not None:
            progress(f"round {index + 1}/{rounds} done")


def spread(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of the samples (and the samples themselves)."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "samples": list(samples)}


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, Any]:
    """``numerator / denominator`` per round (the runs sat next to each other in time):
    the median, min and max of those per-round ratios."""
    per_round = [a / b for a, b in zip(numerator, denominator)]
    return spread(per_round)


# -- the machine -----------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux), or what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            import subprocess

            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|\b(cpu|processor)\b|@.*$", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def machine_slug(gpu: str | None = None) -> str:
    """``<os>-<arch>-<cpu model>-<n>cpu[-<gpu>]``, e.g. ``linux-x86_64-amd-epyc-2cpu``."""
    parts = [platform.system().lower(), platform.machine().lower(), slug(cpu_model()),
             f"{cpu_count()}cpu"]
    if gpu:
        parts.append(slug(gpu.replace("NVIDIA", "")))
    return "-".join(part for part in parts if part)


def gpu_name() -> str | None:
    """The first CUDA device's name (through torch or cupy, whichever is installed),
    or None on a machine without one."""
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except ImportError:
        pass
    try:
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    except Exception:  # not installed, no device, no driver
        return None
    return name.decode() if isinstance(name, bytes) else str(name)


def default_results_path(gpu: str | None = None) -> Path:
    today = _datetime.date.today().isoformat()
    return RESULTS_DIR / f"{machine_slug(gpu)}-{today}.json"


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (how busy the machine was), where known."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def environment(gpu: str | None = None,
                load_at_start: list[float] | None = None) -> dict[str, Any]:
    """What a reader needs to compare two results files: machine, versions, threads,
    and the load average at the start and at the end of the run."""
    info: dict[str, Any] = {
        "machine": machine_slug(gpu),
        "cpu_model": cpu_model(),
        "cpu_count": cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": gpu,
        "packages": {name: package_version(name) for name in (
            "numpy", "torch", "array-api-strict", "array-api-compat", "cupy-cuda12x",
            "cupy-cuda13x") if package_version(name)},
        "thread_variables": {name: os.environ[name] for name in THREAD_VARIABLES
                             if name in os.environ},
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        info["threadpools"] = [
            {key: pool.get(key) for key in ("user_api", "internal_api", "num_threads",
                                             "version", "architecture")}
            for pool in threadpool_info()
        ]
    info["load_average_at_start"] = load_at_start
    info["load_average_at_end"] = load_average()
    return info


def limit_threads(threads: int | None) -> str | None:
    """Cap BLAS/OpenMP threads of numpy and torch at ``threads``; a note if it could not
    be done completely (threadpoolctl missing)."""
    if not threads:
        return None
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return ("threadpoolctl is not installed: numpy's BLAS threads are not limited "
                f"(set OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} instead)")
    threadpool_limits(threads)
    return None


# -- results file ----------------------------------------------------------------------


def write_results(path: Path, section: str, data: dict[str, Any]) -> None:
    """Store ``data`` under ``section`` of the JSON file at ``path`` (mlp.py and xor.py
    share one file per machine and day), keeping the other sections; written to a
    temporary name and renamed, so an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content: dict[str, Any] = {}
    if path.exists():
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            content = {}
        if not isinstance(content, dict):
            content = {}
    content[section] = data
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(content, indent=1, sort_keys=False) + "\n",
                         encoding="utf-8")
    os.replace(temporary, path)


def now() -> str:
    return _datetime.datetime.now().astimezone().isoformat(timespec="seconds")


# -- tables ----------------------------------------------------------------------------


def format_range(stats: dict[str, Any] | None, digits: int = 2, suffix: str = "") -> str:
    """``median [min-max]``, or ``-`` when there is no such number."""
    if not stats:
        return "-"
    return (f"{stats['median']:.{digits}f}{suffix} "
            f"[{stats['min']:.{digits}f}-{stats['max']:.{digits}f}]")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          align_left: int = 1) -> str:
    """A plain-text table: the first ``align_left`` columns left-aligned, the rest right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(cell).ljust(width) if index < align_left
                         else str(cell).rjust(width)
                         for index, (cell, width) in enumerate(zip(cells, widths))).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def verdict(value: float | None, limit: float, at_most: bool = True) -> str:
    if value is None:
        return "n/a"
    passed = value <= limit if at_most else value >= limit
    return "PASS" if passed else "FAIL"


def print_flush(*args: Any) -> None:
    print(*args, flush=True)
