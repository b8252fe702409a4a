"""Principle 1: the math speaks only the standard.

Layers, activations, losses, optimizers, metrics and the training loop must never
import an array library; they use the namespace of the arrays they receive. Only the
host-boundary modules may: backend.py (and _fused.py, its fused optimizer kernels),
random.py, data.py, io.py, _files.py, plots.py (plotting takes host arrays, as
ARCHITECTURE.md's principle 1 allows), images.py (digit pictures are preprocessed on the
host), distributed.py (it hands arrays' memory to MPI through NumPy, and CuPy arrays to
NCCL), compile.py (it hands the training step to the backend's compiler, jax.jit) and the
datasets package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nnscratch"
HOST_BOUNDARY = {"backend.py", "_fused.py", "random.py", "data.py", "io.py", "_files.py",
                 "plots.py", "images.py", "distributed.py", "compile.py"}
ARRAY_LIBRARIES = {"numpy", "cupy", "torch", "array_api_strict", "jax"}


def math_modules() -> list[Path]:
    """Every module of the package except the host boundary and datasets/."""
    return sorted(path for path in PACKAGE.glob("*.py") if path.name not in HOST_BOUNDARY)


def array_library_imports(source: str) -> list[str]:
    """``"line N: statement"`` for every import of an array library in ``source``:
    ``import numpy``, ``import numpy.linalg as la``, ``from torch import nn``,
    ``from cupy.cuda import Device``, and ``importlib.import_module("torch")`` /
    ``__import__("numpy")`` with a literal name. Relative imports are the package's own."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args \
                and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else \
                function.id if isinstance(function, ast.Name) else ""
            if called in ("import_module", "__import__"):
                names = [node.args[0].value]
        for name in names:
            if name.split(".")[0] in ARRAY_LIBRARIES:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_math_modules_exist():
    """Guards against the check passing vacuously on a moved or renamed package."""
    names = {path.name for path in math_modules()}
    assert {"layers.py", "activations.py", "losses.py", "optim.py", "model.py",
            "metrics.py"} <= names
    assert not names & HOST_BOUNDARY


@pytest.mark.parametrize("module", math_modules(), ids=lambda path: path.name)
def test_math_module_imports_no_array_library(module: Path):
    offending = array_library_imports(module.read_text(encoding="utf-8"))
    assert not offending, (
        f"nnscratch/{module.name} imports an array library ({'; '.join(offending)}); the math "
        "must use the namespace of its arrays (backend.namespace(x)), not a library"
    )


@pytest.mark.parametrize("source", [
    "import numpy as np",
    "import numpy",
    "import os, torch",
    "import numpy.linalg as la",
    "from numpy import float32",
    "from cupy.cuda import Device",
    "from torch.nn import functional as F",
    "import array_api_strict as xp",
    "def f():\n    import cupy\n    return cupy",
    "try:\n    import torch\nexcept ImportError:\n    torch = None",
    "import importlib\nxp = importlib.import_module('array_api_strict')",
    "np = __import__('numpy')",
])
def test_checker_catches_an_offending_import(source: str):
    offending = array_library_imports(source)
    assert len(offending) == 1, offending
    assert offending[0].startswith("line ")


@pytest.mark.parametrize("source", [
    "from . import random",
    "from .backend import namespace",
    "from __future__ import annotations",
    "import math\nimport itertools",
    "import numpyish",
    "from torchvision_like import thing",
    "name = 'numpy'",
])
def test_checker_allows_the_package_and_other_modules(source: str):
    assert array_library_imports(source) == []
