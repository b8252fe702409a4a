"""nox sessions: the same test suite on every backend, lint, examples and benchmarks.

    nox                          # what the README's test command runs: tests on every
                                 # backend (cupy skips without a CUDA device), the app
                                 # (its API and, in Chromium, its pages) and lint
    nox -s "tests(numpy)"        # one backend
    nox -s app                   # the digit app: its API, and in Chromium (Playwright)
    nox -s distributed           # data-parallel training as real MPI ranks (mpiexec -n 2|3)
    nox -s examples              # the digit recognizer and XOR, end to end
    nox -s bench                 # nnscratch against PyTorch, results in bench/results/

Real MNIST files are read from NNSCRATCH_DATA (default: ../shared/data/mnist when it
exists). On a GPU machine without a package registry, run the cupy session in the
current environment with `nox --no-venv -s "tests(cupy)"`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.sessions = ["tests", "app", "distributed", "lint"]
nox.options.error_on_missing_interpreters = True

# (session id, NNSCRATCH_BACKEND, NNSCRATCH_DEVICE, requirements file)
BACKENDS = [
    ("numpy", "numpy", "", "backends/numpy.txt"),
    ("array_api_strict", "array_api_strict", "", "backends/array-api-strict.txt"),
    ("array_api_strict-device1", "array_api_strict", "device1", "backends/array-api-strict.txt"),
    ("torch", "torch", "cpu", "backends/torch-cpu.txt"),
    ("jax", "jax", "cpu", "backends/jax.txt"),
    ("cupy", "cupy", "", None),
]


# one BLAS / OpenMP thread per pytest worker: two workers on two cores, not four threads
WORKER_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

REFERENCES = ["-r", "backends/torch-cpu.txt", "-r", "backends/array-api-strict.txt"]


def _data_env() -> dict[str, str]:
    env = {}
    shared = ROOT.parent / "shared" / "data" / "mnist"
    data = os.environ.get("NNSCRATCH_DATA") or (str(shared) if shared.exists() else "")
    if data:
        env["NNSCRATCH_DATA"] = data
    return env


def _install(session: nox.Session, *args: str) -> None:
    """Install into the session's environment (not with --no-venv, which reuses the
    current one as it is)."""
    if session.venv_backend != "none":
        session.install(*args)


def _cuda_major_version() -> int | None:
    """The CUDA version the driver supports, from nvidia-smi; None without a GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        text = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"CUDA Version:\s*(\d+)", text)
    return int(match.group(1)) if match else None


@nox.session
@nox.parametrize(
    "backend,device,requirements",
    [nox.param(name, device, req, id=ident) for ident, name, device, req in BACKENDS],
)
def tests(session: nox.Session, backend: str, device: str, requirements: str | None) -> None:
    """The whole test suite with NNSCRATCH_BACKEND set to one backend."""
    if backend == "cupy":
        cuda = _cuda_major_version()
        if cuda is None:
            session.skip("no CUDA device (nvidia-smi not found or shows no GPU): the CuPy "
                         "suite runs only on a machine with an NVIDIA GPU")
        requirements = f"backends/cupy-cuda{13 if cuda >= 13 else 12}x.txt"
    # Every session also gets the CPU references: PyTorch (autograd and torch.optim are
    # the trusted gradients and updates) and array-api-strict, so that the cross-backend
    # tests (same seed, same weights on every backend) run in every session too.
    _install(session, "-r", requirements, *REFERENCES)
    # numba (the fused optimizer step) with numpy: tests/test_fused.py holds it to the
    # standard path, which the other sessions (without numba) take
    _install(session, "-e", ".[test,numba]" if backend == "numpy" else ".[test]")
    # SCIPY_ARRAY_API=1: scikit-learn's array API checks of nnscratch.sklearn run
    # (torch and array-api-strict inputs); without it sklearn skips them.
    env = {"NNSCRATCH_BACKEND": backend, "SCIPY_ARRAY_API": "1", **_data_env(),
           **WORKER_THREADS}
    if device:
        env["NNSCRATCH_DEVICE"] = device
    # Two workers (pytest-xdist): the suite is thousands of small single-threaded tests,
    # and CI's machine has two cores; jax's session, which compiles its training steps,
    # would otherwise take most of CI's time. `nox -s "tests(numpy)" -- -n 0` runs serially.
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", *session.posargs,
                env=env)


@nox.session
def app(session: nox.Session) -> None:
    """The digit app (nnscratch.app) on numpy: its API through FastAPI's TestClient, and
    its pages in a real browser, Playwright driving the system's Chromium (the browser
    tests skip, saying why, where /usr/bin/chromium is missing)."""
    _install(session, "-r", "backends/numpy.txt")
    # playwright 1.64 speaks the DevTools protocol of Chromium 156 (Debian's)
    _install(session, "-e", ".[app,test]", "httpx>=0.27", "playwright==1.64.1")
    env = {"NNSCRATCH_BACKEND": "numpy", **_data_env()}
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", "tests/test_app.py",
                "tests/test_app_browser.py", *session.posargs, env=env)


@nox.session
def distributed(session: nox.Session) -> None:
    """The data-parallel tests: mpi4py and the mpich wheel (its mpiexec) installed, and
    tests/test_distributed.py starting `mpiexec -n 2` and `-n 3` runs on numpy, each
    compared with one process."""
    _install(session, "-r", "backends/numpy.txt")
    _install(session, "-e", ".[test,mpi]")
    env = {"NNSCRATCH_BACKEND": "numpy", **_data_env()}
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", "tests/test_distributed.py",
                *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the library, tests, examples and benchmarks."""
    _install(session, "ruff>=0.6")
    session.run("ruff", "check", "nnscratch", "tests", "examples", "bench", "noxfile.py")


@nox.session
def examples(session: nox.Session) -> None:
    """Run the examples end to end on numpy: XOR, and the MNIST digit recognizer, which
    must reach 98% test accuracy."""
    _install(session, "-r", "backends/numpy.txt")
    _install(session, "-e", ".[examples]")
    env = {"NNSCRATCH_BACKEND": "numpy", **_data_env()}
    session.run("python", "examples/xor.py", env=env)
    session.run("python", "examples/mnist.py", "--min-accuracy", "0.98", *session.posargs,
                env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """nnscratch against PyTorch (and a plain NumPy reference) on the same MLP and on XOR;
    writes bench/results/<machine>-<date>.json."""
    _install(session, "-r", "backends/torch-cpu.txt")
    _install(session, "-r", "backends/array-api-strict.txt")
    _install(session, "-e", ".")
    env = {"NNSCRATCH_BACKEND": "numpy", **_data_env()}
    session.run("python", "bench/mlp.py", *session.posargs, env=env)
    session.run("python", "bench/xor.py", env=env)
