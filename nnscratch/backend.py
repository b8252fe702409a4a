"""The one module that knows which array library does the arithmetic.

Everything else in nnscratch receives arrays and calls ``xp.*``, the Array API
namespace of those arrays. This module turns a backend name into that namespace and
a device, moves host (NumPy) arrays to the device and back, and waits for the device
when a timing must be honest.

The backend is chosen, in order of precedence, by:

1. ``nn.use_backend(name, device=None)`` (also a context manager);
2. the environment variables ``NNSCRATCH_BACKEND`` (``numpy``, ``cupy``, ``torch``,
   ``array_api_strict``; default ``numpy``) and ``NNSCRATCH_DEVICE`` (e.g. ``cuda:1``,
   ``cpu``, or ``device1`` for array-api-strict's second device).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import BackendError

BACKENDS = ("numpy", "cupy", "torch", "array_api_strict")

# Which pip extra (and requirements file) provides each backend's package.
_INSTALL_HINT = {
    "numpy": "pip install numpy",
    "cupy": "pip install 'nnscratch[cupy]' (or: pip install -r backends/cupy-cuda12x.txt "
    "or backends/cupy-cuda13x.txt, matching your CUDA version)",
    "torch": "pip install 'nnscratch[torch]' (or: pip install -r backends/torch-cpu.txt)",
    "array_api_strict": "pip install 'nnscratch[strict]' "
    "(or: pip install -r backends/array-api-strict.txt)",
}

# The module whose arrays belong to each backend, used to name foreign arrays.
_ARRAY_MODULE = {
    "numpy": "numpy",
    "cupy": "cupy",
    "torch": "torch",
    "array_api_strict": "array_api_strict",
}


@dataclass
class Backend:
    """An array library bound to one device.

    ``xp`` is the standard-compatible namespace (through array-api-compat), ``device``
    the device object of that library on which nnscratch creates its arrays.
    """

    name: str
    xp: Any
    device: Any
    _native: Any = field(repr=False, default=None)

    def asarray(self, host_array: Any, dtype: Any = None, copy: bool | None = None) -> Any:
        """Move a host array (NumPy, or anything NumPy accepts) to this backend's device.

        ``dtype`` may be a dtype of this backend or a name such as ``"float32"``.
        """
        if isinstance(dtype, str):
            dtype = getattr(self.xp, dtype)
        if self.name == "array_api_strict" and not self.is_native(host_array):
            host_array = np.asarray(host_array)
        return self.xp.asarray(host_array, dtype=dtype, device=self.device, copy=copy)

    def to_numpy(self, array: Any) -> np.ndarray:
        """Copy an array of this backend (or a host array) to a NumPy array on the host."""
        if isinstance(array, np.ndarray) or not self.is_native(array):
            return np.asarray(array)
        if self.name == "torch":
            return array.detach().cpu().numpy()
        if self.name == "cupy":
            return self._native.asnumpy(array)
        if self.name == "array_api_strict":
            return np.from_dlpack(array.to_device(self._native.Device("CPU_DEVICE")))
        return np.asarray(array)

    def synchronize(self) -> None:
        """Block until the device has finished the queued work (a no-op on the CPU)."""
        if self.name == "cupy":
            self._native.cuda.Device().synchronize()
        elif self.name == "torch" and str(self.device).startswith("cuda"):
            self._native.cuda.synchronize(self.device)

    def is_native(self, array: Any) -> bool:
        """True if ``array`` is an array of this backend's library."""
        return library_of(array) == self.name

    def __str__(self) -> str:
        return f"{self.name} on {self.device}"


def library_of(array: Any) -> str | None:
    """The backend name whose library made ``array``, or None for non-arrays."""
    module = type(array).__module__.split(".")[0]
    for name, array_module in _ARRAY_MODULE.items():
        if module == array_module:
            return name
    return None


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BackendError(
            f"the {name!r} backend needs the package {name!r}, which is not installed "
            f"({exc}). Install it with: {_INSTALL_HINT[name]}"
        ) from exc


def _make_backend(name: str, device: str | None) -> Backend:
    if name not in BACKENDS:
        raise BackendError(
            f"unknown backend {name!r}; valid names are: {', '.join(BACKENDS)} "
            "(set NNSCRATCH_BACKEND or call nn.use_backend(name))"
        )
    if name == "numpy":
        from array_api_compat import numpy as xp

        if device not in (None, "cpu"):
            raise BackendError(f"the numpy backend runs on the CPU only; got device {device!r}")
        return Backend(name, xp, "cpu", np)
    if name == "torch":
        torch = _import("torch")
        from array_api_compat import torch as xp

        try:
            dev = torch.device(device or "cpu")
        except RuntimeError as exc:
            raise BackendError(f"torch does not know the device {device!r}: {exc}") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(
                f"device {device!r} asked for with the torch backend, but torch sees no "
                "CUDA device; use NNSCRATCH_DEVICE=cpu"
            )
        if dev.type == "cuda" and dev.index is None:  # "cuda": the current device, named
            dev = torch.device("cuda", torch.cuda.current_device())  # as its tensors name it
        return Backend(name, xp, dev, torch)
    if name == "cupy":
        cupy = _import("cupy")
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDARuntimeError, or a missing driver library
            count, reason = 0, f" ({exc})"
        else:
            reason = ""
        if count == 0:
            raise BackendError(
                f"the cupy backend needs a CUDA device, and none was found{reason}. "
                "On a machine without a GPU use the numpy backend: NNSCRATCH_BACKEND=numpy"
            )
        index = 0
        if device:
            text = device.split(":")[-1] if ":" in device else device
            if not text.isdigit() or int(text) >= count:
                raise BackendError(
                    f"cupy device {device!r} does not exist; this machine has {count} CUDA "
                    f"device(s): use cuda:0 .. cuda:{count - 1}"
                )
            index = int(text)
        from array_api_compat import cupy as xp

        dev = cupy.cuda.Device(index)
        dev.use()
        return Backend(name, xp, dev, cupy)
    strict = _import("array_api_strict")
    names = [str(d).split("'")[1] for d in strict.__array_namespace_info__().devices()]
    wanted = device or "CPU_DEVICE"
    if wanted == "cpu":
        wanted = "CPU_DEVICE"
    if wanted not in names:
        raise BackendError(
            f"array_api_strict has no device {device!r}; its devices are: {', '.join(names)}"
        )
    return Backend(name, strict, strict.Device(wanted), strict)


_active: Backend | None = None


def get_backend() -> Backend:
    """The active backend: the one last chosen with ``use_backend``, else the one named
    by ``NNSCRATCH_BACKEND`` / ``NNSCRATCH_DEVICE`` (default: numpy on the CPU)."""
    global _active
    if _active is None:
        name = os.environ.get("NNSCRATCH_BACKEND", "numpy").strip().lower() or "numpy"
        device = os.environ.get("NNSCRATCH_DEVICE", "").strip() or None
        _active = _make_backend(name, device)
    return _active


class use_backend:  # noqa: N801 - used like a function, as in ``with nn.use_backend("torch"):``
    """Make ``name`` the active backend, for good or for a ``with`` block.

    >>> nn.use_backend("torch")               # from now on
    >>> with nn.use_backend("array_api_strict", device="device1"):
    ...     ...                               # restored afterwards
    """

    def __init__(self, name: str, device: str | None = None) -> None:
        global _active
        self._previous = _active
        self.backend = _make_backend(str(name).strip().lower(), device)
        _active = self.backend

    def __enter__(self) -> Backend:
        return self.backend

    def __exit__(self, *exc_info: object) -> None:
        global _active
        _active = self._previous


def check_array(array: Any, what: str = "array") -> Any:
    """Return ``array`` as an array of the active backend.

    Host arrays (NumPy, lists) are moved to the device; an array of the active backend
    is returned as it is; an array of another backend raises ``BackendError`` naming
    both, since silently copying between devices would hide a costly mistake.

    A PyTorch tensor that requires grad is detached (a view: nothing is copied).
    nnscratch computes its gradients by hand; through autograd-tracked data, every
    gradient written into ∇θ, and then θ itself, would join an autograd graph that grows
    with every step (several times slower, memory growing) and that nothing ever reads.
    """
    backend = get_backend()
    library = library_of(array)
    if library == backend.name:
        return _detached(array) if library == "torch" else array
    if library in (None, "numpy"):
        return backend.asarray(np.asarray(array))
    raise BackendError(
        f"{what} is a {library} array, but the active backend is {backend.name}. "
        f"Convert it first (e.g. nn.get_backend().asarray(numpy_array)), or switch "
        f"with nn.use_backend({library!r})"
    )


def _detached(tensor: Any) -> Any:
    """``tensor`` outside PyTorch's autograd (see ``check_array``)."""
    return tensor.detach() if tensor.requires_grad else tensor


def placement(array: Any) -> tuple[str | None, str]:
    """Which library made ``array`` and the device it lives on, by the names that
    ``use_backend`` takes: ``("torch", "cuda:1")``, ``("array_api_strict", "device1")``."""
    return library_of(array), _device_name(getattr(array, "device", "cpu"))


def active_placement() -> tuple[str, str]:
    """The active backend's library and device, named as ``placement`` names them."""
    backend = get_backend()
    return backend.name, _device_name(backend.device)


def _device_name(device: Any) -> str:
    """A device by the name ``use_backend(name, device=...)`` takes for it."""
    text = str(device)
    if text.startswith("array_api_strict.Device("):  # array_api_strict.Device('device1')
        return text.split("'")[1]
    if type(device).__module__.startswith("cupy"):  # <CUDA Device 1>
        return f"cuda:{device.id}"
    return text


def describe_placement(where: tuple[str | None, str]) -> str:
    """``("torch", "cpu")`` in words: ``torch arrays on cpu``."""
    library, device = where
    return f"{library} arrays on {device}"


def use_backend_call(where: tuple[str | None, str]) -> str:
    """The ``nn.use_backend(...)`` call that makes ``where`` the active placement."""
    library, device = where
    if library == "numpy":
        return "nn.use_backend('numpy')"
    return f"nn.use_backend({library!r}, device={device!r})"


def to_numpy(array: Any) -> np.ndarray:
    """Copy any array of the active backend (or a host array) to NumPy."""
    return get_backend().to_numpy(array)


def synchronize() -> None:
    """Wait for the active backend's device to finish its queued work."""
    get_backend().synchronize()


# The variables by which users size the BLAS and OpenMP thread pools themselves.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def limit_threads(threads: int) -> bool:
    """At most ``threads`` threads in this process's BLAS and OpenMP pools (through
    threadpoolctl, which finds the loaded OpenBLAS, MKL, BLIS and OpenMP libraries), and
    in PyTorch's own pool where PyTorch is loaded. False where threadpoolctl is missing
    (PyTorch's pool is limited all the same)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    threadpool_limits(limits=threads)
    return True


# The libraries whose ``matmul`` takes ``out=`` (a fast path: see ``matmul_into``).
MATMUL_OUT_LIBRARIES = {"numpy", "cupy", "torch"}


def matmul_into(a: Any, b: Any, out: Any) -> None:
    """``out[...] = a @ b``, for a product that is wanted in an existing array (a
    gradient, in its window of ∇θ).

    The standard has no ``out=``: it makes the product, then copies it in, one array
    operation more (a kernel launch on a GPU) and a temporary the size of ``out``.
    NumPy, CuPy and PyTorch write the product straight into ``out`` (their
    ``matmul(..., out=)``), which this uses where the three arrays share one dtype;
    everything else takes the standard path, which the tests hold the fast one to.
    """
    library = library_of(out)
    if library in MATMUL_OUT_LIBRARIES and a.dtype == b.dtype == out.dtype:
        sys.modules[library].matmul(a, b, out=out)
    else:
        out[...] = a @ b


_NAMESPACE_BY_TYPE: dict[type, Any] = {}


def namespace(array: Any) -> Any:
    """The Array API namespace of ``array`` (as ``array_api_compat.array_namespace``,
    remembered per array type: the math calls this on every forward and backward, and
    the general lookup costs microseconds that a small network notices)."""
    kind = type(array)
    xp = _NAMESPACE_BY_TYPE.get(kind)
    if xp is None:
        from array_api_compat import array_namespace

        xp = _NAMESPACE_BY_TYPE[kind] = array_namespace(array)
    return xp
