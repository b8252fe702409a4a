"""Shared fixtures: every test runs on the backend of the session (NNSCRATCH_BACKEND,
NNSCRATCH_DEVICE), and cross-backend tests on every installed backend."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import backend as backend_module

ROOT = Path(__file__).resolve().parents[1]


def _usable(name: str) -> bool:
    if name == "numpy":
        return True
    if importlib.util.find_spec(name) is None:
        return False
    if name == "cupy":
        try:
            import cupy

            return cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:
            return False
    return True


INSTALLED_BACKENDS = [name for name in nn.BACKENDS if _usable(name)]


def pytest_report_header(config: pytest.Config) -> str:
    active = nn.get_backend()
    return (f"nnscratch backend: {active.name} on {active.device}; "
            f"installed backends: {', '.join(INSTALLED_BACKENDS)}")


@pytest.fixture(autouse=True)
def _fresh_state():
    """Each test starts from seed 0 on the session's backend, and leaves it so."""
    saved = backend_module._active
    nn.seed(0)
    yield
    backend_module._active = saved


@pytest.fixture
def backend() -> nn.Backend:
    """The backend of this test session."""
    return nn.get_backend()


@pytest.fixture
def xp(backend):
    return backend.xp


@pytest.fixture
def torch():
    """PyTorch, the trusted reference implementation (skips where it is not installed)."""
    return pytest.importorskip("torch", reason="PyTorch is not installed in this session")


def mnist_dir() -> Path | None:
    """The real MNIST files: NNSCRATCH_DATA, else ../shared/data/mnist beside the repo."""
    candidates = [os.environ.get("NNSCRATCH_DATA"), ROOT.parent / "shared" / "data" / "mnist"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "t10k-labels-idx1-ubyte.gz").exists():
            return Path(candidate).resolve()  # absolute: child processes run elsewhere
    return None


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    path = mnist_dir()
    if path is None:
        pytest.skip("MNIST files not found: set NNSCRATCH_DATA to the folder holding them")
    return path


def load_mnist_example() -> ModuleType:
    """examples/mnist.py as a module (it is a script, not part of the package)."""
    name = "nnscratch_example_mnist"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "mnist.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while being built
        spec.loader.exec_module(module)
    return sys.modules[name]


def app_model(inputs: int, hidden: tuple[int, ...], seed: int = 0) -> nn.Sequential:
    """The digit app's network: Dense + ReLU per hidden width, 10 logits, He-normal."""
    nn.seed(seed)
    return nn.mlp([inputs, *hidden, 10])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of a row of logits, in float64 on the host (the tests' own)."""
    shifted = np.exp(np.asarray(logits, dtype=np.float64) - np.max(logits))
    return shifted / shifted.sum()
