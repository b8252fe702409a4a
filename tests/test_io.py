"""Checkpoints: exact round trips, across backends, optimizer resume, the nn.seed streams,
atomic writes (including a real SIGKILL mid-save), and every malformed file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import INSTALLED_BACKENDS, ROOT

import nnscratch as nn
import nnscratch._files
from nnscratch import io as nio
from nnscratch import random as nn_random
from nnscratch.errors import CheckpointError

NO_SAFETENSORS = "safetensors is not installed: pip install 'nnscratch[checkpoints]'"


@pytest.fixture
def st() -> Any:
    """``safetensors.numpy``, which checkpoints need (skips where it is missing)."""
    return pytest.importorskip("safetensors.numpy", reason=NO_SAFETENSORS)


# -- helpers --------------------------------------------------------------------------------


def host_inputs(samples: int = 12, features: int = 5) -> np.ndarray:
    return np.random.default_rng(42).normal(size=(samples, features))


def host_targets(samples: int = 12, outputs: int = 3) -> np.ndarray:
    return np.random.default_rng(43).uniform(size=(samples, outputs))


def make_model(dtype: str = "float32") -> nn.Sequential:
    """Every layer kind the brief names, with non-default configs to preserve."""
    return nn.Sequential(
        nn.Dense(5, 8, dtype=dtype),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Dense(8, 6, dtype=dtype, init="he_normal"),
        nn.LeakyReLU(alpha=0.2),
        nn.Dense(6, 3, dtype=dtype, l2=1e-3),
        nn.Sigmoid(),
    )


def train(model: nn.Sequential, optimizer: nn.Optimizer, steps: int = 2) -> nn.Sequential:
    """Full-batch steps with the loop by hand (independent of ``fit``), so that weights,
    biases and optimizer state all move away from their initial values."""
    backend = nn.get_backend()
    X = backend.asarray(host_inputs(), dtype=model.dtype)
    y = backend.asarray(host_targets(), dtype=model.dtype)
    loss = nn.MeanSquaredError()
    for _ in range(steps):
        loss.forward(model.forward(X, training=True), y)
        model.backward(loss.backward(), need_input_grad=False)
        optimizer.step(model.parameters())
    return model


def trained_model(dtype: str = "float32") -> nn.Sequential:
    return train(make_model(dtype), nn.Adam(lr=0.05))


def host_weights(model: nn.Sequential) -> list[np.ndarray]:
    return [nn.to_numpy(param.value).copy() for param in model.parameters()]


def read_raw(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and metadata of a safetensors file, read with safetensors itself."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        names = handle.keys()  # a safe_open handle is not iterable
        return {name: handle.get_tensor(name) for name in names}, dict(handle.metadata())


def write_raw(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    from safetensors.numpy import save

    path.write_bytes(save(tensors, metadata=metadata))


def stray_files(folder: Path, name: str) -> list[str]:
    """Files in ``folder`` other than ``name`` and its atomic-write '.part' leftovers."""
    return sorted(
        entry.name for entry in folder.iterdir()
        if entry.name != name and not (entry.name.startswith(f".{name}.")
                                       and entry.name.endswith(".part"))
    )


def part_files(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".part"))


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_is_exact(tmp_path, st, backend, dtype):
    model = trained_model(dtype)
    path = tmp_path / "model.safetensors"
    nn.save(model, path)
    loaded = nn.load(path)

    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert loaded.config() == model.config()
    assert loaded.layers[4].alpha == 0.2 and loaded.layers[2].rate == 0.25
    assert loaded.layers[3].init == "he_normal" and loaded.layers[5].l2 == 1e-3
    for saved, restored in zip(model.parameters(), loaded.parameters()):
        assert backend.is_native(restored.value)
        assert str(restored.value.dtype) == str(saved.value.dtype)
        np.testing.assert_array_equal(nn.to_numpy(restored.value), nn.to_numpy(saved.value))
    X = host_inputs(20)
    np.testing.assert_array_equal(nn.to_numpy(loaded.predict(X)), nn.to_numpy(model.predict(X)))


def test_loaded_weights_are_independent_and_trainable(tmp_path, st, backend):
    model = trained_model()
    path = tmp_path / "model.safetensors"
    nn.save(model, path)
    loaded = nn.load(path)
    before = host_weights(model)
    train(loaded, nn.SGD(lr=0.5), steps=1)
    for original, trained, untouched in zip(before, host_weights(loaded), host_weights(model)):
        np.testing.assert_array_equal(untouched, original)
        assert not np.array_equal(trained, original)


def test_custom_initializer_name_and_empty_model(tmp_path, st, backend):
    def my_init(fan_in: int, fan_out: int) -> np.ndarray:
        return np.full((fan_in, fan_out), 0.5)

    model = nn.Sequential(nn.Dense(2, 3, init=my_init), nn.Tanh())
    nn.save(model, tmp_path / "custom.safetensors")
    loaded = nn.load(tmp_path / "custom.safetensors")
    assert loaded.layers[0].init == "my_init"
    np.testing.assert_array_equal(nn.to_numpy(loaded.layers[0].weight.value), np.full((2, 3), 0.5))

    nn.save(nn.Sequential(), tmp_path / "empty.safetensors")
    assert nn.load(tmp_path / "empty.safetensors").layers == []


def test_user_metadata_round_trip(tmp_path, st, backend):
    path = tmp_path / "model.safetensors"
    nn.save(make_model(), path, metadata={"epoch": "7", "note": "ünïcode"})
    assert nio.read_metadata(path) == {"epoch": "7", "note": "ünïcode"}
    _, metadata = read_raw(path)
    assert metadata["nnscratch.format_version"] == "1"
    assert metadata["nnscratch.version"] == nn.__version__
    assert json.loads(metadata["nnscratch.architecture"]) == make_model().config()
    assert "nnscratch.optimizer" not in metadata


def test_file_layout_names_tensors_by_layer(tmp_path, st, backend):
    optimizer = nn.Adam()
    model = train(make_model(), optimizer, steps=1)
    path = tmp_path / "model.safetensors"
    nn.save(model, path, optimizer=optimizer)
    tensors, metadata = read_raw(path)
    layer_names = {f"layers.{i}.{p}" for i in (0, 3, 5) for p in ("weight", "bias")}
    optimizer_names = {f"optimizer.{j}.{slot}" for j in range(6)
                       for slot in ("m_scaled", "v_scaled")}
    assert set(tensors) == layer_names | optimizer_names
    np.testing.assert_array_equal(tensors["layers.3.weight"],
                                  nn.to_numpy(model.layers[3].weight.value))
    assert json.loads(metadata["nnscratch.optimizer"]) == {
        "type": "Adam", "t": 1, "config": optimizer.config()}


# -- across backends ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("direction", ["session_to_other", "other_to_session"])
@pytest.mark.parametrize("other", INSTALLED_BACKENDS)
def test_save_on_one_backend_load_on_another(tmp_path, st, backend, other, direction, dtype):
    path = tmp_path / "model.safetensors"
    X = host_inputs(20)

    def on_other() -> contextlib.AbstractContextManager:
        return nn.use_backend(other)

    on_save, on_load = ((contextlib.nullcontext, on_other) if direction == "session_to_other"
                        else (on_other, contextlib.nullcontext))
    with on_save():
        model = trained_model(dtype)
        weights = host_weights(model)
        saved_predictions = nn.to_numpy(model.predict(X))
        nn.save(model, path)
    with on_load():
        target = nn.get_backend()
        loaded = nn.load(path)
        for param, expected in zip(loaded.parameters(), weights):
            assert target.is_native(param.value)
            assert str(param.value.device) == str(target.device)
            np.testing.assert_array_equal(nn.to_numpy(param.value), expected)
        # The same weights moved to this backend by hand: identical predictions, bit for bit.
        reference = make_model(dtype)
        for param, value in zip(reference.parameters(), weights):
            param.value = target.asarray(value, dtype=dtype)
        predictions = nn.to_numpy(loaded.predict(X))
        np.testing.assert_array_equal(predictions, nn.to_numpy(reference.predict(X)))
    # Another library may sum a matrix product in another order: equal to rounding.
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(predictions, saved_predictions, rtol=tolerance, atol=tolerance)


# -- resuming training ----------------------------------------------------------------------

OPTIMIZER_FACTORIES: dict[str, Callable[[], nn.Optimizer]] = {
    "Adam": lambda: nn.Adam(lr=0.01),
    "AdamW": lambda: nn.AdamW(lr=0.01, weight_decay=0.1),
    "SGD-nesterov": lambda: nn.SGD(lr=0.05, momentum=0.9, nesterov=True),
    "RMSprop-momentum": lambda: nn.RMSprop(lr=0.01, momentum=0.5),
}


@pytest.mark.parametrize("how", ["load", "read_optimizer", "load_optimizer_state"])
@pytest.mark.parametrize("name", list(OPTIMIZER_FACTORIES))
def test_resumed_training_equals_uninterrupted(tmp_path, st, backend, name, how):
    """3 + 2 full-batch epochs with a save/load in between = 5 epochs in one go (with
    dropout, so the load must also leave the dropout stream alone)."""
    make_optimizer = OPTIMIZER_FACTORIES[name]
    X, y, loss = host_inputs(), host_targets(), nn.MeanSquaredError()

    nn.seed(0)
    uninterrupted = make_model()
    uninterrupted.fit(X, y, loss=loss, optimizer=make_optimizer(), epochs=5, batch_size=None)

    nn.seed(0)
    first = make_model()
    optimizer = make_optimizer()
    first.fit(X, y, loss=loss, optimizer=optimizer, epochs=3, batch_size=None)
    path = tmp_path / "run.safetensors"
    nn.save(first, path, optimizer=optimizer)

    if how == "load":
        resumed_optimizer = make_optimizer()
        resumed = nn.load(path, optimizer=resumed_optimizer)
    elif how == "read_optimizer":
        resumed = nn.load(path)
        resumed_optimizer = nio.read_optimizer(path, resumed)
        assert type(resumed_optimizer) is type(optimizer)
        assert resumed_optimizer.config() == optimizer.config()
    else:
        resumed = nn.load(path)
        resumed_optimizer = make_optimizer()
        nio.load_optimizer_state(path, resumed, resumed_optimizer)
    assert resumed_optimizer.t == 3
    for old, new in zip(first.parameters(), resumed.parameters()):
        old_state, new_state = optimizer.state[old], resumed_optimizer.state[new]
        assert sorted(new_state) == sorted(old_state)
        for slot in old_state:
            assert backend.is_native(new_state[slot])
            np.testing.assert_array_equal(nn.to_numpy(new_state[slot]),
                                          nn.to_numpy(old_state[slot]))

    resumed.fit(X, y, loss=loss, optimizer=resumed_optimizer, epochs=2, batch_size=None)
    for got, want in zip(host_weights(resumed), host_weights(uninterrupted)):
        np.testing.assert_array_equal(got, want)


def test_a_fresh_optimizer_would_not_resume(tmp_path, st, backend):
    """The resume test can fail: without the saved state, training goes elsewhere."""
    X, y, loss = host_inputs(), host_targets(), nn.MeanSquaredError()
    nn.seed(0)
    model = make_model()
    optimizer = nn.Adam(lr=0.01)
    model.fit(X, y, loss=loss, optimizer=optimizer, epochs=3, batch_size=None)
    path = tmp_path / "run.safetensors"
    nn.save(model, path, optimizer=optimizer)
    with_state = nn.load(path, optimizer=(restored := nn.Adam(lr=0.01)))
    without_state = nn.load(path)
    with_state.fit(X, y, loss=loss, optimizer=restored, epochs=1, batch_size=None)
    without_state.fit(X, y, loss=loss, optimizer=nn.Adam(lr=0.01), epochs=1, batch_size=None)
    assert not np.array_equal(host_weights(with_state)[0], host_weights(without_state)[0])


def test_read_optimizer_without_saved_state_is_none(tmp_path, st, backend):
    path = tmp_path / "model.safetensors"
    nn.save(make_model(), path)
    assert nio.read_optimizer(path, nn.load(path)) is None


# -- the nn.seed streams ----------------------------------------------------------------------


class Noisy(nn.Layer):
    """A user layer whose constructor draws from the init stream, as Dense's does."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.scale = nn.Parameter(
            nn.get_backend().asarray(nn_random.normal((width,)), dtype="float32"), "scale")

    def forward(self, x: Any, training: bool = False) -> Any:
        return x * self.scale.value

    def parameters(self) -> list[nn.Parameter]:
        return [self.scale]

    def config(self) -> dict[str, Any]:
        return {"width": self.width}


@pytest.fixture
def layer_registry(monkeypatch) -> dict[str, type[nn.Layer]]:
    """A private copy of the layer registry, so that registering leaks into no other test."""
    registry = dict(nn.layers.LAYERS)
    monkeypatch.setattr(nn.layers, "LAYERS", registry)
    return registry


@pytest.mark.parametrize("streams_started", [False, True], ids=["fresh-seed", "mid-stream"])
def test_load_leaves_the_random_streams_alone(tmp_path, st, backend, layer_registry,
                                              streams_started):
    nio.register_layer(Noisy)
    nn.seed(0)
    model = nn.Sequential(make_model().layers + [Noisy(3)])
    path = tmp_path / "model.safetensors"
    nn.save(model, path)

    def draws(load_first: bool) -> list[np.ndarray]:
        nn.seed(11)
        if streams_started:
            for stream in nn_random.STREAMS:
                nn_random.generator(stream).random(5)
        if load_first:
            loaded = nn.load(path)
            np.testing.assert_array_equal(nn.to_numpy(loaded.layers[-1].scale.value),
                                          nn.to_numpy(model.layers[-1].scale.value))
        values = [nn_random.generator(stream).random(4) for stream in nn_random.STREAMS]
        return [*values, nn.to_numpy(nn.Dense(3, 2).weight.value)]

    for after_load, without_load in zip(draws(True), draws(False)):
        np.testing.assert_array_equal(after_load, without_load)


def test_save_refuses_an_unregistered_layer(tmp_path, st, backend, layer_registry):
    path = tmp_path / "model.safetensors"
    model = nn.Sequential(nn.Dense(3, 3), Noisy(3))
    with pytest.raises(CheckpointError, match=r"register_layer\(Noisy\)"):
        nn.save(model, path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(nn.ConfigError, match="Layer subclass"):
        nio.register_layer(int)


# -- atomic writes ----------------------------------------------------------------------------


def test_a_failing_serializer_leaves_the_old_file(tmp_path, st, backend, monkeypatch):
    path = tmp_path / "model.safetensors"
    nn.save(trained_model(), path)
    before = path.read_bytes()

    def broken_save(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("serializer exploded")

    monkeypatch.setattr(st, "save", broken_save)
    with pytest.raises(RuntimeError, match="exploded"):
        nn.save(make_model(), path)
    assert path.read_bytes() == before
    assert stray_files(tmp_path, path.name) == [] and part_files(tmp_path) == []


def test_a_write_failing_halfway_leaves_the_old_file(tmp_path, st, backend, monkeypatch):
    path = tmp_path / "model.safetensors"
    nn.save(trained_model(), path)
    before = path.read_bytes()
    real_atomic_write = nnscratch._files.atomic_write
    written: list[int] = []

    class HalfThenFull:
        """A file handle on a disk that fills up halfway through the write."""

        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def write(self, data: bytes) -> int:
            written.append(self.handle.write(data[: len(data) // 2]))
            self.handle.flush()
            raise OSError(28, "No space left on device")

    @contextlib.contextmanager
    def failing_atomic_write(target: Any) -> Any:
        with real_atomic_write(target) as handle:
            yield HalfThenFull(handle)

    monkeypatch.setattr(nio, "atomic_write", failing_atomic_write)
    with pytest.raises(CheckpointError, match="No space") as caught:
        nn.save(make_model("float64"), path)
    assert str(path) in str(caught.value) and "free some space" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)  # the system's reason, kept
    assert written and written[0] > 0
    assert path.read_bytes() == before
    assert stray_files(tmp_path, path.name) == [] and part_files(tmp_path) == []
    assert nn.load(path).config() == make_model().config()


# The child saves a ~4 MB model again and again, each time with bias = iteration number
# and metadata iteration = that number, so a file mixing two saves would be caught.
SAVE_FOREVER = """
import sys
import nnscratch as nn
nn.seed(0)
model = nn.Sequential(nn.Dense(512, 1024), nn.ReLU(), nn.Dense(1024, 512))
iteration = 0
while True:
    model.layers[0].bias.value[...] = iteration
    nn.save(model, sys.argv[1], metadata={"iteration": str(iteration)})
    if iteration == 0:
        print("first save done", flush=True)
    iteration += 1
"""


def test_sigkill_during_saves_never_leaves_a_partial_file(tmp_path, st, backend, monkeypatch):
    path = tmp_path / "model.safetensors"
    env = {**os.environ, "NNSCRATCH_BACKEND": "numpy", "PYTHONPATH": str(ROOT)}
    env.pop("NNSCRATCH_DEVICE", None)
    for delay in (0.0, 0.013, 0.05):
        child = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(path)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = child.stdout.readline()
            assert line.strip() == "first save done", child.stderr.read()
            time.sleep(delay)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            child.stdout.close()
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL

        loaded = nn.load(path)
        iteration = int(nio.read_metadata(path)["iteration"])
        bias = nn.to_numpy(loaded.layers[0].bias.value)
        np.testing.assert_array_equal(bias, np.full(1024, iteration, dtype=np.float32))
        # A kill may leave the temporary '.part' of the save it interrupted; nothing else.
        assert stray_files(tmp_path, path.name) == []
    # The next save removes those the kills left, once nobody has touched them for
    # nnscratch._files.STALE_PARTIAL_SECONDS (here: at once).
    monkeypatch.setattr(nnscratch._files, "STALE_PARTIAL_SECONDS", 0.0)
    nn.save(nn.load(path), path)
    assert part_files(tmp_path) == []


# -- errors -----------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path, st) -> Path:
    """A valid checkpoint of make_model() saved with its Adam state."""
    optimizer = nn.Adam(lr=0.01)
    model = train(make_model(), optimizer)
    path = tmp_path / "good.safetensors"
    nn.save(model, path, optimizer=optimizer)
    return path


def edited(checkpoint: Path, edit: Callable[[dict, dict], None]) -> Path:
    """A copy of ``checkpoint`` whose tensors and metadata ``edit`` changed in place."""
    tensors, metadata = read_raw(checkpoint)
    edit(tensors, metadata)
    path = checkpoint.with_name("edited.safetensors")
    write_raw(path, tensors, metadata)
    return path


def assert_checkpoint_error(path: Path, *fragments: str, call: Callable[[Path], Any] = nn.load
                            ) -> None:
    with pytest.raises(CheckpointError) as caught:
        call(path)
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    for fragment in (path.name, *fragments):
        assert fragment in message, f"{fragment!r} not in: {message}"


def test_missing_file(tmp_path, st, backend):
    assert_checkpoint_error(tmp_path / "nowhere.safetensors", "does not exist")


@pytest.mark.parametrize("content, why", [
    (b"", "empty"),
    (b"abc", "only 3 bytes"),
    (b"this is a text file, not weights\n" * 4, "header length"),
    (np.random.default_rng(0).bytes(4096), "header length"),
    (len(b"not json!").to_bytes(8, "little") + b"not json!", "not the JSON"),
], ids=["empty", "tiny", "text", "random-bytes", "bad-header"])
def test_not_a_safetensors_file(tmp_path, st, backend, content, why):
    path = tmp_path / "bogus.safetensors"
    path.write_bytes(content)
    assert_checkpoint_error(path, "not a safetensors checkpoint", why)


@pytest.mark.parametrize("keep", [0.5, 0.99, 30 / 1000], ids=["half", "last-byte", "in-header"])
def test_truncated_file(checkpoint, backend, keep):
    data = checkpoint.read_bytes()
    path = checkpoint.with_name("cut.safetensors")
    path.write_bytes(data[: min(int(len(data) * keep), len(data) - 1)])
    assert_checkpoint_error(path, "truncated", "save the model again")


def test_trailing_garbage_is_corrupt(checkpoint, backend):
    path = checkpoint.with_name("long.safetensors")
    path.write_bytes(checkpoint.read_bytes() + b"extra")
    assert_checkpoint_error(path, "corrupt")


def test_safetensors_without_architecture(checkpoint, backend):
    path = edited(checkpoint, lambda tensors, metadata: metadata.clear())
    assert_checkpoint_error(path, "not an nnscratch checkpoint", "nnscratch.architecture")


def test_newer_format_version(checkpoint, backend):
    def newer(tensors: dict, metadata: dict) -> None:
        metadata.update({"nnscratch.format_version": "2", "nnscratch.version": "9.0.0"})

    assert_checkpoint_error(edited(checkpoint, newer), "format version 2", "9.0.0",
                            "reads format version 1", "upgrade nnscratch")


@pytest.mark.parametrize("key, value, fragments", [
    ("nnscratch.format_version", "one", ("nnscratch.format_version", "'one'")),
    ("nnscratch.format_version", "0", ("nnscratch.format_version", "'0'")),
    ("nnscratch.architecture", "[{not json", ("not valid JSON",)),
    ("nnscratch.architecture", '{"type": "Dense"}', ("list of",)),
    ("nnscratch.architecture",
     json.dumps([{"type": "Dense", "config": {"in_features": -5, "out_features": 8}}]),
     ("layer 0 (Dense) cannot be rebuilt", "in_features must be a positive integer")),
], ids=["version", "version-zero", "architecture-json", "architecture-shape", "layer-config"])
def test_malformed_metadata(checkpoint, backend, key, value, fragments):
    path = edited(checkpoint, lambda tensors, metadata: metadata.update({key: value}))
    assert_checkpoint_error(path, *fragments)


def test_unknown_layer_type(checkpoint, backend):
    def conv(tensors: dict, metadata: dict) -> None:
        architecture = json.loads(metadata["nnscratch.architecture"])
        architecture[1] = {"type": "Conv3D", "config": {"kernel": 3}}
        metadata["nnscratch.architecture"] = json.dumps(architecture)

    assert_checkpoint_error(edited(checkpoint, conv), "layer 1", "unknown type 'Conv3D'",
                            "register_layer")


def test_tensor_shape_disagrees_with_architecture(checkpoint, backend):
    def transpose(tensors: dict, metadata: dict) -> None:
        tensors["layers.3.weight"] = np.ascontiguousarray(tensors["layers.3.weight"].T)

    assert_checkpoint_error(edited(checkpoint, transpose), "'layers.3.weight'",
                            "shape (6, 8)", "expects (8, 6)")


def test_tensor_dtype_disagrees_with_architecture(checkpoint, backend):
    def widen(tensors: dict, metadata: dict) -> None:
        tensors["layers.0.bias"] = tensors["layers.0.bias"].astype(np.float64)

    assert_checkpoint_error(edited(checkpoint, widen), "'layers.0.bias'", "float64",
                            "expects float32")


def test_missing_tensor(checkpoint, backend):
    path = edited(checkpoint, lambda tensors, metadata: tensors.pop("layers.5.bias"))
    assert_checkpoint_error(path, "lacks", "layers.5.bias")


def test_extra_tensor(checkpoint, backend):
    def extra(tensors: dict, metadata: dict) -> None:
        tensors["layers.1.weight"] = np.zeros((2, 2), dtype=np.float32)

    assert_checkpoint_error(edited(checkpoint, extra), "layers.1.weight", "does not use")


def test_the_safetensors_package_reads_and_nnscratch_says_what_to_do(tmp_path, st, backend,
                                                                      monkeypatch):
    """safetensors is a dependency and its reader does the reading (a broken reader
    breaks load); its refusals reach the user as CheckpointError naming the file."""
    import safetensors

    saved = tmp_path / "saved.safetensors"
    model = trained_model()
    nn.save(model, saved)
    for got, want in zip(host_weights(nn.load(saved)), host_weights(model)):
        np.testing.assert_array_equal(got, want)
    opened = []
    real_open = safetensors.safe_open

    def spy(*args, **kwargs):
        opened.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", spy)
    nn.load(saved)
    assert len(opened) == 1
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(saved.read_bytes()[:-3])
    with pytest.raises(CheckpointError, match="cut.safetensors is truncated or corrupt.*"
                                              "safetensors: "):
        nn.load(cut)


def test_metadata_must_be_strings(tmp_path, st, backend):
    path = tmp_path / "model.safetensors"
    with pytest.raises(CheckpointError, match="str to str"):
        nn.save(make_model(), path, metadata={"epoch": 3})
    assert not path.exists()


# -- optimizer state that does not match ------------------------------------------------------


def load_with(optimizer: nn.Optimizer) -> Callable[[Path], Any]:
    return lambda path: nn.load(path, optimizer=optimizer)


def test_optimizer_type_mismatch(checkpoint, backend):
    assert_checkpoint_error(checkpoint, "Adam", "into a SGD", "read_optimizer",
                            call=load_with(nn.SGD()))


def test_no_optimizer_state_saved(tmp_path, st, backend):
    path = tmp_path / "plain.safetensors"
    nn.save(make_model(), path)
    assert_checkpoint_error(path, "no optimizer state", "optimizer=optimizer",
                            call=load_with(nn.Adam()))
    assert_checkpoint_error(path, "no optimizer state",
                            call=lambda p: nio.load_optimizer_state(p, make_model(), nn.Adam()))


@pytest.mark.parametrize("edit, fragments", [
    (lambda tensors: tensors.pop("optimizer.2.v_scaled"), ("parameter 2 lacks v_scaled",)),
    (lambda tensors: tensors.update({"optimizer.2.v_scaled": np.zeros((3, 3), np.float32)}),
     ("'optimizer.2.v_scaled'", "shape (3, 3)", "expects (8, 6)")),
    (lambda tensors: tensors.update({"optimizer.99.m_scaled": np.zeros(3, np.float32)}),
     ("'optimizer.99.m_scaled'", "parameter 99", "has 6 parameters")),
    (lambda tensors: tensors.update({"optimizer.0.velocity": np.zeros((5, 8), np.float32)}),
     ("'velocity'", "keeps m_scaled, v_scaled")),
    (lambda tensors: tensors.update({"optimizer.m": np.zeros(3, np.float32)}),
     ("'optimizer.m'", "optimizer.<parameter index>.<slot>")),
], ids=["missing-slot", "wrong-shape", "index-out-of-range", "unknown-slot", "bad-name"])
def test_optimizer_tensors_that_do_not_match(checkpoint, backend, edit, fragments):
    path = edited(checkpoint, lambda tensors, metadata: edit(tensors))
    optimizer = nn.Adam()
    assert_checkpoint_error(path, *fragments, call=load_with(optimizer))
    assert optimizer.t == 0 and optimizer.state == {}, "a failed load changed the optimizer"


def test_optimizer_state_for_another_model(checkpoint, backend):
    other = nn.Sequential(nn.Dense(5, 4), nn.ReLU(), nn.Dense(4, 3))
    assert_checkpoint_error(
        checkpoint, "'optimizer.0.m_scaled'", "shape (5, 8)", "expects (5, 4)",
        call=lambda path: nio.load_optimizer_state(path, other, nn.Adam()))


def test_optimizer_hyperparameters_that_keep_other_state(tmp_path, st, backend):
    optimizer = nn.RMSprop(momentum=0.9)
    model = train(make_model(), optimizer, steps=1)
    path = tmp_path / "rms.safetensors"
    nn.save(model, path, optimizer=optimizer)
    assert_checkpoint_error(path, "'momentum_buffer'", "keeps square_avg", "momentum': 0.9",
                            call=load_with(nn.RMSprop()))


@pytest.mark.parametrize("value, fragments", [
    (json.dumps({"type": "Lion", "t": 1, "config": {}}), ("unknown", "'Lion'")),
    (json.dumps({"type": "Adam", "t": 1, "config": {"lr": -1.0}}), ("cannot rebuild Adam",)),
    (json.dumps({"type": "Adam", "t": -1, "config": {}}), ("t\": int >= 0",)),
    ("{broken", ("nnscratch.optimizer",)),
], ids=["unknown-type", "bad-config", "negative-step", "not-json"])
def test_malformed_optimizer_metadata(checkpoint, backend, value, fragments):
    path = edited(checkpoint, lambda tensors, metadata: metadata.update(
        {"nnscratch.optimizer": value}))
    assert_checkpoint_error(path, *fragments,
                            call=lambda p: nio.read_optimizer(p, make_model()))
