"""The backend switch (issue "foundation"): choosing a backend by environment variable or
from code, its fields, and the errors for unknown names, missing packages, machines
without a CUDA device and arrays of another backend."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types

import array_api_compat
import numpy as np
import pytest
from conftest import INSTALLED_BACKENDS, ROOT

import nnscratch as nn
from nnscratch import backend as backend_module
from nnscratch.errors import BackendError

# Every (backend, device) the host-array tests run on: each installed backend on its
# default device, and array-api-strict on its second device as well, where a forgotten
# ``device=`` shows up the way it would on a second GPU.
CHOICES = [(name, None) for name in INSTALLED_BACKENDS]
if "array_api_strict" in INSTALLED_BACKENDS:
    CHOICES.append(("array_api_strict", "device1"))
CHOICE_IDS = [name if device is None else f"{name}-{device}" for name, device in CHOICES]

HOST = np.array([[1.5, -2.0, 0.25], [3.0, 0.5, -1.0]])


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


CUPY_INSTALLED = _installed("cupy")  # asked before any test puts a fake cupy in sys.modules


def run_python(code: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with only the given NNSCRATCH_* variables."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("NNSCRATCH_")}
    env.update(environment)
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


PRINT_BACKEND = "import nnscratch as nn; b = nn.get_backend(); print(b.name, '|', b.device)"


# -- choosing the backend with environment variables, in a fresh process ------------------


@pytest.mark.parametrize("environment, name, device", [
    pytest.param({}, "numpy", "cpu", id="default"),
    pytest.param({"NNSCRATCH_BACKEND": "numpy"}, "numpy", "cpu", id="numpy"),
    pytest.param({"NNSCRATCH_BACKEND": "array_api_strict"}, "array_api_strict", "CPU_DEVICE",
                 id="array_api_strict",
                 marks=pytest.mark.skipif(not _installed("array_api_strict"),
                                          reason="array-api-strict is not installed")),
    pytest.param({"NNSCRATCH_BACKEND": "array_api_strict", "NNSCRATCH_DEVICE": "device1"},
                 "array_api_strict", "device1", id="array_api_strict-device1",
                 marks=pytest.mark.skipif(not _installed("array_api_strict"),
                                          reason="array-api-strict is not installed")),
    pytest.param({"NNSCRATCH_BACKEND": "torch"}, "torch", "cpu", id="torch",
                 marks=pytest.mark.skipif(not _installed("torch"),
                                          reason="PyTorch is not installed")),
])
def test_environment_variables_choose_the_backend(environment, name, device):
    result = run_python(PRINT_BACKEND, **environment)
    assert result.returncode == 0, result.stderr
    printed_name, printed_device = (part.strip() for part in result.stdout.split("|"))
    assert printed_name == name
    assert device in printed_device
    if name == "array_api_strict":  # device1 must not silently fall back to the CPU device
        assert ("device1" in printed_device) == (device == "device1")


def test_unknown_backend_in_the_environment_fails_listing_the_valid_names():
    result = run_python(PRINT_BACKEND, NNSCRATCH_BACKEND="tensorflow")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "BackendError" in result.stderr
    assert "'tensorflow'" in result.stderr
    for name in nn.BACKENDS:
        assert name in result.stderr


def test_environment_is_read_case_and_space_insensitively(monkeypatch):
    """In-process: get_backend reads the variables when nothing was chosen from code."""
    if "array_api_strict" not in INSTALLED_BACKENDS:
        pytest.skip("array-api-strict is not installed")
    monkeypatch.setenv("NNSCRATCH_BACKEND", " Array_API_Strict ")
    monkeypatch.setenv("NNSCRATCH_DEVICE", "device1")
    monkeypatch.setattr(backend_module, "_active", None)
    active = nn.get_backend()
    assert active.name == "array_api_strict"
    assert active.device == active.xp.Device("device1")
    assert nn.get_backend() is active  # chosen once, then remembered


def test_unknown_backend_from_code_lists_every_valid_name():
    before = nn.get_backend()
    with pytest.raises(BackendError) as caught:
        nn.use_backend("tensorflow")
    message = str(caught.value)
    assert "'tensorflow'" in message
    for name in nn.BACKENDS:
        assert name in message
    assert "NNSCRATCH_BACKEND" in message
    assert nn.get_backend() is before  # a failed switch changes nothing


def test_unknown_device_names_the_valid_ones():
    if "array_api_strict" not in INSTALLED_BACKENDS:
        pytest.skip("array-api-strict is not installed")
    with pytest.raises(BackendError) as caught:
        nn.use_backend("array_api_strict", device="device9")
    assert "device9" in str(caught.value)
    assert "device1" in str(caught.value)
    with pytest.raises(BackendError, match="CPU only"):
        nn.use_backend("numpy", device="cuda:0")


# -- choosing the backend from code --------------------------------------------------------


def _another_backend(current: str) -> str:
    others = [name for name in INSTALLED_BACKENDS if name != current]
    if not others:
        pytest.skip(f"only {current} is installed: nothing to switch to")
    return others[0]


def test_use_backend_switches_for_good(backend):
    other = _another_backend(backend.name)
    chosen = nn.use_backend(other)
    assert nn.get_backend() is chosen.backend
    assert nn.get_backend().name == other
    model = nn.Sequential(nn.Dense(3, 2))
    assert nn.get_backend().is_native(model.layers[0].weight.value)


def test_use_backend_as_context_manager_restores_the_previous_one(backend):
    other = _another_backend(backend.name)
    before = nn.get_backend()
    with nn.use_backend(other) as active:
        assert active.name == other
        assert nn.get_backend() is active
        with nn.use_backend(backend.name) as inner:
            assert nn.get_backend() is inner
        assert nn.get_backend() is active
    assert nn.get_backend() is before
    with pytest.raises(KeyError), nn.use_backend(other):
        raise KeyError("an error inside the block")
    assert nn.get_backend() is before


@pytest.mark.parametrize("name, device", CHOICES, ids=CHOICE_IDS)
def test_backend_fields(name, device):
    with nn.use_backend(name, device=device) as active:
        assert active.name == name
        assert str(active).startswith(name)
        x = active.asarray(HOST)
        assert active.is_native(x)
        assert array_api_compat.array_namespace(x) is active.xp
        assert array_api_compat.device(x) == active.device
        assert x.dtype == active.xp.float64  # dtype=None keeps the host dtype
        for dtype in ("float32", active.xp.float32):
            assert active.asarray(HOST, dtype=dtype).dtype == active.xp.float32
        doubled = active.to_numpy(active.asarray(HOST, dtype="float32") * 2)
        assert isinstance(doubled, np.ndarray)
        assert doubled.dtype == np.float32
        np.testing.assert_array_equal(doubled, (HOST * 2).astype(np.float32))
        assert active.synchronize() is None
        assert nn.synchronize() is None
        np.testing.assert_array_equal(nn.to_numpy(x), HOST)


# -- packages and devices that are missing -------------------------------------------------


@pytest.mark.parametrize("name, extra", [
    ("cupy", "nnscratch[cupy]"),
    ("torch", "nnscratch[torch]"),
    ("array_api_strict", "nnscratch[strict]"),
])
def test_missing_package_names_the_extra_to_install(monkeypatch, name, extra):
    monkeypatch.setitem(sys.modules, name, None)  # makes ``import name`` fail
    with pytest.raises(BackendError) as caught:
        nn.use_backend(name)
    message = str(caught.value)
    assert "not installed" in message
    assert f"pip install '{extra}'" in message
    # the same through the environment variable
    monkeypatch.setenv("NNSCRATCH_BACKEND", name)
    monkeypatch.setattr(backend_module, "_active", None)
    with pytest.raises(BackendError, match="not installed"):
        nn.get_backend()


def _fake_cupy(device_count: int | None) -> types.ModuleType:
    """A stand-in cupy whose CUDA runtime finds ``device_count`` devices (None: the
    runtime call fails, as it does where the driver is missing)."""

    def get_device_count() -> int:
        if device_count is None:
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return device_count

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=get_device_count))
    return fake


def _no_cuda_cupy(monkeypatch, device_count: int | None, fake_compat: bool) -> None:
    """Make ``import cupy`` give a cupy that sees no CUDA device: the real one where it
    is installed (and sees none), else a fake one."""
    if "cupy" in INSTALLED_BACKENDS:
        pytest.skip("cupy sees a CUDA device here, so the no-device error cannot happen")
    if CUPY_INSTALLED:
        return  # the real cupy, on a machine without a CUDA device
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(device_count))
    if fake_compat:  # array_api_compat.cupy would import names the fake lacks
        compat = types.ModuleType("array_api_compat.cupy")
        monkeypatch.setitem(sys.modules, "array_api_compat.cupy", compat)
        monkeypatch.setattr(array_api_compat, "cupy", compat, raising=False)


@pytest.mark.parametrize("device_count", [0, None], ids=["zero-devices", "runtime-error"])
def test_cupy_without_cuda_device_says_to_use_numpy(monkeypatch, device_count):
    _no_cuda_cupy(monkeypatch, device_count, fake_compat=True)
    before = nn.get_backend()
    with pytest.raises(BackendError) as caught:
        nn.use_backend("cupy")
    message = str(caught.value)
    assert "CUDA device" in message
    assert "none was found" in message
    assert "NNSCRATCH_BACKEND=numpy" in message
    if device_count is None and not CUPY_INSTALLED:
        assert "cudaErrorNoDevice" in message  # the driver's reason is passed on
    assert nn.get_backend() is before


def test_cupy_device_check_comes_before_the_namespace_import(monkeypatch):
    """Where the cupy package is broken or only half there, the no-device error must
    still be a BackendError, not whatever array_api_compat.cupy raises on import."""
    _no_cuda_cupy(monkeypatch, 0, fake_compat=False)
    with pytest.raises(BackendError, match="CUDA device"):
        nn.use_backend("cupy")


# -- arrays crossing the boundary -----------------------------------------------------------

FOREIGN = [name for name in INSTALLED_BACKENDS if name != "numpy"] or [None]


@pytest.mark.parametrize("library", FOREIGN)
def test_array_of_another_backend_is_refused_naming_both(backend, library):
    if library is None:
        pytest.skip("only numpy is installed: there is no other backend's array to pass")
    if library == backend.name:
        pytest.skip(f"{library} is this session's backend, so its arrays are not foreign")
    with nn.use_backend(library) as other:
        foreign = other.asarray(HOST, dtype="float32")
    model = nn.Sequential(nn.Dense(3, 2))
    with pytest.raises(BackendError) as caught:
        model.predict(foreign)
    message = str(caught.value)
    assert f"is a {library} array" in message
    assert f"active backend is {backend.name}" in message
    assert f"nn.use_backend({library!r})" in message
    with pytest.raises(BackendError, match=f"is a {library} array"):
        backend_module.check_array(foreign, "X")


@pytest.mark.parametrize("name, device", CHOICES, ids=CHOICE_IDS)
def test_host_arrays_are_accepted_and_moved_to_the_device(name, device):
    """NumPy arrays and lists work on every backend, land on its device, and give the
    same numbers as on NumPy from the same seed."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 3))  # float64 on the host
    y = np.arange(10) % 2

    def train_and_predict() -> tuple[nn.Backend, object, nn.Sequential]:
        nn.seed(0)
        model = nn.Sequential(nn.Dense(3, 4), nn.Tanh(), nn.Dense(4, 2))
        model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.SGD(lr=0.1),
                  epochs=2, batch_size=5, seed=0)
        return nn.get_backend(), model.predict(X.tolist()), model

    with nn.use_backend("numpy"):
        _, expected, _ = train_and_predict()
    with nn.use_backend(name, device=device):
        active, outputs, model = train_and_predict()
        assert active.is_native(outputs)
        assert array_api_compat.device(outputs) == active.device
        assert outputs.dtype == active.xp.float32
        for parameter in model.parameters():
            assert array_api_compat.device(parameter.value) == active.device
        np.testing.assert_allclose(active.to_numpy(outputs), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, device", CHOICES, ids=CHOICE_IDS)
def test_batches_are_sliced_the_standard_way(name, device):
    """Contiguous batches (full batch, shuffle=False, evaluate, batched predict), including
    a last batch smaller than batch_size (10 samples in batches of 4). The standard leaves
    ``X[a:b]`` on a 2-D array and stops past the end unspecified: array-api-strict raises."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(10, 3)), np.arange(10) % 2
    with nn.use_backend(name, device=device) as active:
        model = nn.Sequential(nn.Dense(3, 2))
        for batch_size, shuffle in ((4, True), (4, False), (None, True)):
            history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.SGD(lr=0.1),
                                epochs=1, batch_size=batch_size, shuffle=shuffle, seed=0)
            assert len(history.epochs) == 1
        whole = active.to_numpy(model.forward(active.asarray(X, dtype="float32")))
        batched = active.to_numpy(model.predict(X, batch_size=4))
        np.testing.assert_allclose(batched, whole, rtol=1e-6)
        scores = model.evaluate(X, y, batch_size=4)
        assert scores["loss"] == pytest.approx(model.evaluate(X, y)["loss"], rel=1e-5)
        assert scores["accuracy"] == np.mean(whole.argmax(axis=1) == y)
