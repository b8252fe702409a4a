"""The one module that knows which array library does the arithmetic.

Everything else in nnscratch receives arrays and calls ``xp.*``, the Array API
namespace of those arrays. This module turns a backend name into that namespace and
a device, moves host (NumPy) arrays to the device and back, and waits for the device
when a timing must be honest.

The backend is chosen, in order of precedence, by:

1. ``nn.use_backend(name, device=None)`` (also a context manager);
2. the environment variables ``NNSCRATCH_BACKEND`` (``numpy``, ``cupy``, ``torch``,
   ``array_api_strict``, ``jax``; default ``numpy``) and ``NNSCRATCH_DEVICE`` (e.g.
   ``cuda:1``, ``cpu``, or ``device1`` for array-api-strict's second device).

JAX arrays are immutable: ``x[...] = v`` raises and ``x *= a`` makes a new array bound
to the name ``x``. The library is written so that one code path serves both kinds: an
augmented assignment (``m *= β``) changes the array in place where the library allows it
and rebinds the name where it does not, and whatever a step changes is stored back
(``state["m"] = m``), a no-op for the in-place libraries. ``mutable`` tells the two
apart where it matters (θ as one vector with windows needs in-place writes).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import BackendError

BACKENDS = ("numpy", "cupy", "torch", "array_api_strict", "jax")

# Which pip extra (and requirements file) provides each backend's package.
_INSTALL_HINT = {
    "numpy": "pip install numpy",
    "cupy": "pip install 'nnscratch[cupy]' (or: pip install -r backends/cupy-cuda12x.txt "
    "or backends/cupy-cuda13x.txt, matching your CUDA version)",
    "torch": "pip install 'nnscratch[torch]' (or: pip install -r backends/torch-cpu.txt)",
    "array_api_strict": "pip install 'nnscratch[strict]' "
    "(or: pip install -r backends/array-api-strict.txt)",
    "jax": "pip install 'nnscratch[jax]' (or: pip install -r backends/jax.txt; on a CUDA "
    "machine: pip install 'jax[cuda12]')",
}

# The module whose arrays belong to each backend, used to name foreign arrays.
_ARRAY_MODULE = {
    "numpy": "numpy",
    "cupy": "cupy",
    "torch": "torch",
    "array_api_strict": "array_api_strict",
    "jax": "jaxlib",  # jax.Array is jaxlib's ArrayImpl (a tracer, in a traced step: jax)
}

# The libraries whose arrays cannot be changed in place.
IMMUTABLE_LIBRARIES = {"jax"}


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
        return np.array(array)  # jax: a writable host copy

    def scalars_to_numpy(self, *groups: list[Any]) -> list[np.ndarray]:
        """The values of lists of 0-d arrays (an epoch's step losses, the compiled steps'
        counts) as NumPy vectors, one per list: each stacked on the device, then copied.
        On JAX a stack of n scalars would be a program compiled for that n (~0.25 s for
        an epoch's 430): ``jax.device_get`` fetches all the lists in one transfer."""
        if self.name == "jax":
            return [np.asarray(values) for values in
                    self._native.device_get([list(group) for group in groups])]
        return [self.to_numpy(self.xp.stack(group)) for group in groups]

    def synchronize(self) -> None:
        """Block until the device has finished the queued work (a no-op on the CPU)."""
        if self.name == "cupy":
            self._native.cuda.Device().synchronize()
        elif self.name == "torch" and str(self.device).startswith("cuda"):
            self._native.cuda.synchronize(self.device)
        elif self.name == "jax":  # a device runs its queued programs in order: a last,
            # tiny one is done once everything before it is
            self._native.effects_barrier()
            (self.xp.zeros((), device=self.device) + 1).block_until_ready()

    def is_native(self, array: Any) -> bool:
        """True if ``array`` is an array of this backend's library."""
        return library_of(array) == self.name

    def __str__(self) -> str:
        return f"{self.name} on {self.device}"


def library_of(array: Any) -> str | None:
    """The backend name whose library made ``array``, or None for non-arrays."""
    module = type(array).__module__.split(".")[0]
    if module == "jax":  # a tracer: an array of a step being compiled
        return "jax"
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
    if name == "jax":
        return _make_jax_backend(device)
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


def _make_jax_backend(device: str | None) -> Backend:
    """jax.numpy (an Array API namespace itself) on a CPU or GPU device.

    64-bit types are enabled: without ``jax_enable_x64`` JAX silently makes float32
    arrays when float64 is asked for. Arrays created with an explicit dtype (all of
    nnscratch's) are unaffected; a Python float combined with a float32 array stays
    float32 (JAX's weak types, as the standard's promotion rules say).
    """
    jax = _import("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as xp

    platform, _, index = (device or "cpu").partition(":")
    platform = {"cuda": "gpu"}.get(platform, platform)
    try:
        devices = jax.devices(platform)
    except RuntimeError as exc:
        raise BackendError(
            f"jax has no {platform!r} device ({exc}); use NNSCRATCH_DEVICE=cpu, or install "
            "jax with CUDA support (pip install 'jax[cuda12]')"
        ) from exc
    if index and (not index.isdigit() or int(index) >= len(devices)):
        raise BackendError(f"jax device {device!r} does not exist; this machine has "
                           f"{len(devices)} {platform} device(s)")
    return Backend("jax", xp, devices[int(index or 0)], jax)


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


def to_host(array: Any) -> np.ndarray:
    """Copy an array of any supported library, on any device (or host data), to NumPy,
    whatever the active backend."""
    library = library_of(array)
    if library == "torch":
        return array.detach().cpu().numpy()
    if library == "cupy":
        return sys.modules["cupy"].asnumpy(array)
    if library == "array_api_strict":
        strict = sys.modules["array_api_strict"]
        return np.from_dlpack(array.to_device(strict.Device("CPU_DEVICE")))
    return np.asarray(array)


def to_placement(array: Any, where: tuple[str | None, str]) -> Any:
    """``array`` as an array of the library and device ``where`` (as ``placement``
    names them): itself where it is already there, else copied through the host."""
    if placement(array) == where:
        return array
    library, device = where
    host = to_host(array)
    # a read-only host array (a memory map) is copied: a tensor must not alias it
    copy = None if host.flags.writeable or library in (None, "numpy") else True
    return _make_backend(library or "numpy", device).asarray(host, copy=copy)


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


def mutable(array: Any) -> bool:
    """True if ``array`` can be changed in place (``x[...] = v``, ``x *= a``): False for
    JAX, whose arrays are immutable values (see the module's docstring)."""
    return library_of(array) not in IMMUTABLE_LIBRARIES


def traced(array: Any) -> bool:
    """True for an array of a step being traced for compilation (a JAX tracer): it
    exists only inside that trace, so no cache may keep it."""
    return type(array).__module__.split(".")[0] == "jax"


def set_all(target: Any, new: Any) -> Any:
    """``target[...] = new`` where ``target`` can change in place (and ``target`` is
    returned); ``new`` in ``target``'s dtype where it cannot (JAX). The caller keeps the
    result: ``state[key] = set_all(state[key], new)``."""
    if mutable(target):
        target[...] = new
        return target
    xp = namespace(target)
    return xp.astype(xp.broadcast_to(new, target.shape), target.dtype)


def set_element(target: Any, index: Any, value: Any) -> Any:
    """``target[index] = value``, in place where the library allows and returning
    ``target``; a new array (JAX's ``target.at[index].set(value)``) where it does not."""
    if mutable(target):
        target[index] = value
        return target
    return target.at[index].set(value)


def add_at(target: Any, index: Any, values: Any) -> Any:
    """``target[index] += values``, in place where the library allows and returning
    ``target``; a new array (JAX's ``target.at[index].add(values)``) where it does not."""
    if mutable(target):
        target[index] += values
        return target
    return target.at[index].add(values)


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


# -- the optimizer step as one fused pass (a fast path: the kernels are in _fused.py) ----

FUSED_VARIABLE = "NNSCRATCH_FUSED"
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def fused_enabled() -> bool:
    """False when ``NNSCRATCH_FUSED`` is ``0`` (or ``false``, ``no``, ``off``): every
    optimizer then takes its standard path, the array operations of its ``update``."""
    value = os.environ.get(FUSED_VARIABLE, "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def fused_update(rule: tuple[str, tuple[float, ...]] | None, w: Any, g: Any,
                 state: dict[str, Any]) -> bool:
    """Apply one optimizer step to θ as a single fused loop, where the backend has one;
    True if it did, False if the caller must take the standard path.

    ``rule`` is the optimizer's name for its update and this step's coefficients
    (``Optimizer.fused_rule``), ``w`` θ and ``g`` ∇θ, ``state`` its θ-sized state arrays
    (all updated in place). The standard path makes ~10 passes over θ, each with a
    θ-sized temporary; the fused loop reads and writes each element once, on every core
    (NumPy arrays, with numba installed) or as one GPU kernel (CuPy). Measured on 5.8M
    float32 parameters in bench/fused.py; the tests hold it to the standard path.
    """
    if rule is None or not fused_enabled():
        return False
    library = library_of(w)
    if library not in ("numpy", "cupy"):
        return False
    arrays = [w, g, *state.values()]
    if not all(library_of(array) == library and array.dtype == w.dtype
               and array.shape == w.shape and array.ndim == 1
               and array.flags.c_contiguous for array in arrays):
        return False
    if np.dtype(w.dtype) not in _FLOAT_DTYPES:
        return False
    kernels = _fused_kernels()
    if library == "numpy":
        if kernels.numba is None or not w.flags.writeable:
            return False
        kernels.numba_update(rule[0], rule[1], w, g, state)
    else:
        kernels.cupy_update(rule[0], rule[1], w, g, state)
    return True


def _fused_kernels() -> Any:
    """nnscratch._fused, imported on first use (it imports numba, ~0.3 s)."""
    return importlib.import_module(f"{__package__}._fused")
