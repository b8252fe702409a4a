"""Checkpoints against hostile files and careless hands (issue 15).

Loading checks every number a file announces before it sizes an allocation or a read,
and refuses what is not a regular file; saving refuses to replace anything but a regular
file, turns every OS error into a CheckpointError naming the path and the fix, follows
the umask and removes the partials a killed save left.

A case that could exhaust memory or block runs ``nn.load`` in a child process under a
memory limit (``RLIMIT_DATA``: the child's data memory after its imports + 1.5 GiB; a
file the safetensors reader maps to read is address space, not memory) and a timeout,
so a regression fails the test instead of taking the test runner down.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT

import nnscratch as nn
import nnscratch._files
from nnscratch import io as nio
from nnscratch.errors import CheckpointError

NO_SAFETENSORS = "safetensors is not installed: pip install 'nnscratch[checkpoints]'"


@pytest.fixture
def st() -> Any:
    """``safetensors.numpy``, which writing checkpoints needs (skips where it is missing)."""
    return pytest.importorskip("safetensors.numpy", reason=NO_SAFETENSORS)


# -- raw files --------------------------------------------------------------------------------


def split(path: Path) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the tensor bytes of a safetensors file, read by hand."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + length]), data[8 + length:]


def join(path: Path, header: dict[str, Any] | str, data: bytes = b"") -> Path:
    """Write a safetensors file by hand: any header, even one safetensors would refuse."""
    text = header if isinstance(header, str) else json.dumps(header)
    encoded = text.encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    return path


def small_model() -> nn.Sequential:
    return nn.Sequential(nn.Dense(5, 8), nn.ReLU(), nn.Dense(8, 2))


@pytest.fixture
def saved(tmp_path, st) -> Path:
    """A valid checkpoint of small_model() with its Adam state after one step."""
    model, optimizer, loss = small_model(), nn.Adam(), nn.MeanSquaredError()
    backend = nn.get_backend()
    X = backend.asarray(np.random.default_rng(0).normal(size=(4, 5)), dtype="float32")
    y = backend.asarray(np.zeros((4, 2)), dtype="float32")
    loss.forward(model.forward(X, training=True), y)
    model.backward(loss.backward(), need_input_grad=False)
    optimizer.step(model.parameters())
    nn.save(model, tmp_path / "good.safetensors", optimizer=optimizer)
    return tmp_path / "good.safetensors"


def edit_metadata(saved: Path, **changes: Any) -> Path:
    """A copy of ``saved`` with metadata keys (``format_version`` for
    ``nnscratch.format_version``...) set to any JSON value, even a non-string."""
    header, data = split(saved)
    for key, value in changes.items():
        header["__metadata__"][f"nnscratch.{key}"] = value
    return join(saved.with_name("edited.safetensors"), header, data)


def with_architecture(saved: Path, architecture: list[dict[str, Any]] | str) -> Path:
    text = architecture if isinstance(architecture, str) else json.dumps(architecture)
    return edit_metadata(saved, architecture=text)


def refused(call: Callable[[], Any], *fragments: str) -> str:
    """Run ``call``, which must raise CheckpointError containing every fragment; the
    message must stay short whatever the file holds."""
    with pytest.raises(CheckpointError) as caught:
        call()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"
    assert len(message) < 1000, f"a message of {len(message)} characters"
    return message


def dense_spec(in_features: int, out_features: int) -> dict[str, Any]:
    return {"type": "Dense", "config": {"in_features": in_features,
                                       "out_features": out_features, "init": "zeros",
                                       "dtype": "float32"}}


# -- nn.load in a child process under a memory limit ------------------------------------------

LIMITED_LOAD = r"""
import json, resource, sys, time
import nnscratch as nn
nn.get_backend()  # the backend's imports belong to the baseline, not to the budget

def data_memory():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")

soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
limit = data_memory() + int(sys.argv[2])
if hard != resource.RLIM_INFINITY:
    limit = min(limit, hard)
resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
start = time.monotonic()
try:
    nn.load(sys.argv[1])
    outcome = {"type": None, "message": "loaded"}
except BaseException as exc:  # a MemoryError too: report it rather than die
    outcome = {"type": type(exc).__name__, "message": str(exc)[:3000]}
outcome["seconds"] = time.monotonic() - start
print(json.dumps(outcome), flush=True)
"""

MEMORY_BUDGET = int(1.5 * 2**30)
CHILD_TIMEOUT = 90  # seconds, imports included; a hang guard on a loaded machine


def load_in_limited_child(path: str | Path) -> dict[str, Any]:
    """``nn.load(path)`` in a child limited to 1.5 GiB more data memory than it needs
    after its imports: {"type": exception class name or None, "message", "seconds"}."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the memory limit uses RLIMIT_DATA and /proc/self/status (Linux)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run([sys.executable, "-c", LIMITED_LOAD, str(path), str(MEMORY_BUDGET)],
                              env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"nn.load({str(path)!r}) did not finish in {CHILD_TIMEOUT} s: it blocks "
                    "or reads without end")
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_refused_quickly(outcome: dict[str, Any], *fragments: str) -> None:
    assert outcome["type"] == "CheckpointError", outcome
    # Not a timing assertion: the refusal reads a header, a hang or a GB read takes longer.
    assert outcome["seconds"] < 20, outcome
    for fragment in fragments:
        assert fragment in outcome["message"], f"{fragment!r} not in {outcome['message']!r}"


# -- the architecture is checked against the tensors before any layer is built ----------------


@pytest.mark.parametrize("in_features", [25_000_000, 10**9], ids=["25e6-inputs", "1e9-inputs"])
def test_huge_dense_in_the_architecture_allocates_nothing(saved, backend, in_features):
    """A small file whose architecture says Dense(25e6, 8): today 2.3 GB (or a
    MemoryError) before any check; now refused from the header alone."""
    architecture = [dense_spec(in_features, 8), {"type": "ReLU", "config": {}},
                    dense_spec(8, 2)]
    path = with_architecture(saved, architecture)
    assert path.stat().st_size < 4096
    assert_refused_quickly(load_in_limited_child(path), "'layers.0.weight'", "shape (5, 8)",
                           f"expects ({in_features}, 8)", "save the model again")


@pytest.fixture
def built_dense(monkeypatch) -> list[tuple[int, int]]:
    """Records the (in, out) of every Dense built; refuses to build a huge one, so that
    a regression fails here rather than allocating gigabytes in the test runner."""
    built: list[tuple[int, int]] = []
    original = nn.Dense.__init__

    def recording_init(self: nn.Dense, in_features: int, out_features: int, **kwargs: Any
                       ) -> None:
        built.append((in_features, out_features))
        if in_features * out_features > 10**6:
            raise RuntimeError(f"loading built Dense({in_features}, {out_features})")
        original(self, in_features, out_features, **kwargs)

    monkeypatch.setattr(nn.Dense, "__init__", recording_init)
    return built


def test_no_layer_is_built_before_its_tensors_match(saved, backend, built_dense):
    architecture = [dense_spec(5, 8), {"type": "ReLU", "config": {}},
                    dense_spec(8, 25_000_000)]
    refused(lambda: nn.load(with_architecture(saved, architecture)), "'layers.2.weight'",
            "expects (8, 25000000)")
    assert built_dense == []  # not even the first, matching layer
    nn.load(saved)
    assert built_dense == [(5, 8), (8, 2)]  # the recorder sees what loading builds


def test_a_dense_config_that_cannot_give_shapes(saved, backend, built_dense):
    for bad in ["25000000", 2.5, True, -3, None]:
        path = with_architecture(saved, [dense_spec(5, 8), {"type": "ReLU", "config": {}},
                                         dense_spec(bad, 2)])
        refused(lambda: nn.load(path),  # noqa: B023 - called at once
                "layer 2 (Dense) cannot be rebuilt", "in_features must be a positive integer")
    huge = [dense_spec(5, 8), {"type": "ReLU", "config": {}}, dense_spec(10**4000, 2)]
    refused(lambda: nn.load(with_architecture(saved, huge)), "'layers.2.weight'",
            "shape (8, 2)", "...")  # the 4000-digit number, cut short in the message
    assert built_dense == []


class Scale(nn.Layer):
    """A user layer that declares its parameter shapes, so a file is checked first."""

    constructed = 0

    def __init__(self, width: int) -> None:
        type(self).constructed += 1
        self.width = width
        backend = nn.get_backend()
        ones = backend.xp.ones((width,), dtype=backend.xp.float32, device=backend.device)
        self.scale = nn.Parameter(ones, "scale")

    @staticmethod
    def parameter_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        return {"scale": (config["width"],)}

    def forward(self, x: Any, training: bool = False) -> Any:
        return x * self.scale.value

    def parameters(self) -> list[nn.Parameter]:
        return [self.scale]

    def config(self) -> dict[str, Any]:
        return {"width": self.width}


def test_a_registered_layer_declaring_its_shapes_is_checked_first(tmp_path, st, backend,
                                                                   monkeypatch):
    monkeypatch.setattr(nn.layers, "LAYERS", dict(nn.layers.LAYERS))
    nio.register_layer(Scale)
    path = tmp_path / "scale.safetensors"
    nn.save(nn.Sequential(nn.Dense(2, 3), Scale(3)), path)
    Scale.constructed = 0
    assert nn.load(path).layers[1].width == 3 and Scale.constructed == 1

    Scale.constructed = 0
    architecture = json.loads(split(path)[0]["__metadata__"]["nnscratch.architecture"])
    architecture[1]["config"]["width"] = 10**9
    refused(lambda: nn.load(with_architecture(path, architecture)), "'layers.1.scale'",
            "shape (3,)", "expects (1000000000,)")
    assert Scale.constructed == 0


# -- the header: every tensor entry checked before a byte of data is read ---------------------


def entry_edit(tensor: str, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def edit(header: dict[str, Any]) -> None:
        header[tensor].update(changes)
    return edit


def swap_offsets(header: dict[str, Any]) -> None:
    """Two tensors of equal size exchange places: still valid (safetensors allows any
    order), so the loader must follow the offsets."""
    first, second = header["layers.0.bias"], header["optimizer.1.m_scaled"]
    first["data_offsets"], second["data_offsets"] = second["data_offsets"], first["data_offsets"]


# The safetensors package's reader checks the header (its words follow "safetensors: ");
# nnscratch says which file and what to do, and refuses the dtypes NumPy cannot hold.
NOT_JSON_OF_SAFETENSORS = "its header is not the JSON safetensors describes"
DISAGREE = "dtypes, shapes and data_offsets do not agree"
HEADER_CASES = {
    "unknown-dtype": (entry_edit("layers.0.bias", dtype="F128"),
                      (NOT_JSON_OF_SAFETENSORS, "F128")),
    "bfloat16": (entry_edit("layers.0.bias", dtype="BF16", shape=[16]),  # 32 bytes still
                 ("dtype 'BF16'", "nnscratch does not read")),
    "dtype-not-a-string": (entry_edit("layers.0.bias", dtype=4), (NOT_JSON_OF_SAFETENSORS,)),
    "negative-dimension": (entry_edit("layers.0.bias", shape=[-8]), (NOT_JSON_OF_SAFETENSORS,)),
    "boolean-dimension": (entry_edit("layers.0.bias", shape=[True]),
                          (NOT_JSON_OF_SAFETENSORS,)),
    "float-dimension": (entry_edit("layers.0.bias", shape=[8.0]), (NOT_JSON_OF_SAFETENSORS,)),
    "shape-not-a-list": (entry_edit("layers.0.bias", shape="8"), (NOT_JSON_OF_SAFETENSORS,)),
    "too-many-dimensions": (entry_edit("layers.0.bias", shape=[1] * 40), (DISAGREE,)),
    "huge-dimension": (entry_edit("layers.0.bias", shape=[2**70]), (NOT_JSON_OF_SAFETENSORS,)),
    "shape-disagrees-with-offsets": (entry_edit("layers.0.weight", shape=[25_000_000, 8]),
                                     (DISAGREE,)),
    "offsets-reversed": (lambda header: header["layers.0.bias"]["data_offsets"].reverse(),
                         (DISAGREE, "layers.0.bias")),
    "one-offset": (entry_edit("layers.0.bias", data_offsets=[0]), (NOT_JSON_OF_SAFETENSORS,)),
    "entry-not-an-object": (lambda header: header.update({"layers.0.bias": [1, 2]}),
                            (NOT_JSON_OF_SAFETENSORS,)),
    "metadata-not-an-object": (lambda header: header.update({"__metadata__": ["x"]}),
                               (NOT_JSON_OF_SAFETENSORS,)),
    "metadata-not-strings": (lambda header: header["__metadata__"].update(
        {"nnscratch.architecture": [1]}), (NOT_JSON_OF_SAFETENSORS,)),
}


def last_tensor(header: dict[str, Any]) -> dict[str, Any]:
    return max((entry for name, entry in header.items() if name != "__metadata__"),
               key=lambda entry: entry["data_offsets"][0])


def overlap(header: dict[str, Any]) -> None:
    begin, end = last_tensor(header)["data_offsets"]
    last_tensor(header)["data_offsets"] = [begin - 4, end - 4]


def gap(header: dict[str, Any]) -> None:
    begin, end = last_tensor(header)["data_offsets"]
    last_tensor(header)["data_offsets"] = [begin + 4, end + 4]


HEADER_CASES.update({
    "overlapping-tensors": (overlap, (DISAGREE,)),
    "gap-between-tensors": (gap, (DISAGREE,)),
})


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_every_header_entry_is_checked(saved, backend, case):
    edit, fragments = HEADER_CASES[case]
    header, data = split(saved)
    edit(header)
    if case == "gap-between-tensors":
        data += b"\0" * 4  # the file still as long as its last offset says
    path = join(saved.with_name("bad-header.safetensors"), header, data)
    refused(lambda: nn.load(path), path.name, *fragments)


def test_tensors_are_read_where_their_offsets_say(saved, backend):
    """Tensors may be stored in any order: the reader follows the offsets."""
    header, data = split(saved)
    bias, moment = header["layers.0.bias"]["data_offsets"], header[
        "optimizer.1.m_scaled"]["data_offsets"]
    assert bias[1] - bias[0] == moment[1] - moment[0] == 32
    values = bytearray(data)
    values[bias[0]:bias[1]] = np.arange(8, dtype="<f4").tobytes()
    values[moment[0]:moment[1]] = np.full(8, 7, dtype="<f4").tobytes()
    swap_offsets(header)
    path = join(saved.with_name("swapped.safetensors"), header, bytes(values))
    optimizer = nn.Adam()
    model = nn.load(path, optimizer=optimizer)
    np.testing.assert_array_equal(nn.to_numpy(model.layers[0].bias.value), np.full(8, 7.0))
    moment_value = optimizer.state[model.parameters()[1]]["m_scaled"]
    np.testing.assert_array_equal(nn.to_numpy(moment_value), np.arange(8.0))


def test_an_unknown_key_in_a_tensor_entry_is_ignored_as_the_format_says(saved, backend):
    """The safetensors reader ignores entry keys it does not know; the tensors load."""
    header, data = split(saved)
    entry_edit("layers.0.bias", endian="big")(header)
    path = join(saved.with_name("extra-key.safetensors"), header, data)
    np.testing.assert_array_equal(nn.to_numpy(nn.load(path).layers[0].bias.value),
                                  nn.to_numpy(nn.load(saved).layers[0].bias.value))


def test_a_header_longer_than_safetensors_allows_is_not_read(tmp_path, backend):
    """A header length beyond the safetensors reader's limit (100 MB): refused before a
    byte of it is read, though the (sparse) file is that long."""
    path = sparse_file(tmp_path / "long-header.safetensors",
                       (2**27).to_bytes(8, "little") + b'{"a": [', 8 + 2**27)
    assert_refused_quickly(load_in_limited_child(path), "long-header.safetensors",
                           "header length", "header too large")


def test_a_64_mib_header_is_parsed_within_the_memory_limit(tmp_path, backend):
    """64 MiB of the smallest JSON objects (millions of empty lists): parsed and refused
    under the child's 1.5 GiB budget."""
    body = b'{"a": [' + b"[]," * ((64 * 2**20 - 16) // 3) + b"[]]}"
    path = join(tmp_path / "many-lists.safetensors", body.decode())
    assert path.stat().st_size <= 8 + 64 * 2**20
    assert_refused_quickly(load_in_limited_child(path), NOT_JSON_OF_SAFETENSORS)


# -- special files, huge files, things that are not paths -------------------------------------


def test_dev_zero_is_refused_without_reading(backend):
    if not os.path.exists("/dev/zero"):
        pytest.skip("this system has no /dev/zero")
    assert_refused_quickly(load_in_limited_child("/dev/zero"), "/dev/zero",
                           "a character device, not a regular file", "nn.save(model, path)")


def test_a_fifo_is_refused_without_blocking(tmp_path, backend):
    if not hasattr(os, "mkfifo"):
        pytest.skip("this system has no FIFOs (os.mkfifo)")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    assert_refused_quickly(load_in_limited_child(fifo), "pipe.safetensors",
                           "a FIFO (named pipe), not a regular file")


def test_a_directory_and_dev_null_are_refused(tmp_path, backend):
    refused(lambda: nn.load(tmp_path), str(tmp_path), "a directory, not a regular file",
            "pass the path of one")
    if os.path.exists("/dev/null"):
        refused(lambda: nn.load("/dev/null"), "/dev/null", "a character device")


def sparse_file(path: Path, prefix: bytes, size: int) -> Path:
    """``prefix``, then zeros up to ``size`` bytes, taking no disk space."""
    with open(path, "wb") as handle:
        handle.write(prefix)
        handle.truncate(size)
    if os.stat(path).st_blocks * 512 >= size // 2:
        path.unlink()
        pytest.skip("the filesystem of tmp_path has no sparse files: the test would write GBs")
    return path


GIB = 2**30


def test_a_multi_gb_file_of_zeros_is_not_read(tmp_path, backend):
    path = sparse_file(tmp_path / "zeros.safetensors", b"", 3 * GIB)
    assert_refused_quickly(load_in_limited_child(path), "not a safetensors checkpoint",
                           "zeros.safetensors")  # a header length of 0: no JSON to parse


def test_a_checkpoint_followed_by_gigabytes_is_not_read(saved, backend):
    path = sparse_file(saved.with_name("padded.safetensors"), saved.read_bytes(), 3 * GIB)
    assert_refused_quickly(load_in_limited_child(path), "padded.safetensors", "corrupt",
                           f"its {3 * GIB} bytes are not what its header describes")


@pytest.mark.parametrize("not_a_path", [None, 3, 2.5, object(), "", b"", "model\0.safetensors"],
                         ids=["None", "int", "float", "object", "empty", "empty-bytes", "nul"])
def test_load_and_save_need_a_file_path(st, backend, not_a_path):
    for call in (lambda: nn.load(not_a_path), lambda: nio.read_metadata(not_a_path),
                 lambda: nn.save(small_model(), not_a_path)):
        refused(call, "takes a file path", "'model.safetensors'")


# -- absurd metadata --------------------------------------------------------------------------

NESTED_CONFIG = {"type": "ReLU", "config": {"deep": json.loads("[" * 40 + "]" * 40)}}
RELU = {"type": "ReLU", "config": {}}


@pytest.mark.parametrize("changes, fragments", [
    ({"format_version": "1" * 5000}, ("nnscratch.format_version", "found '11111")),
    ({"format_version": "²"}, ("nnscratch.format_version", "'²'")),
    ({"format_version": "١"}, ("nnscratch.format_version",)),  # Arabic-Indic one
    ({"format_version": "-1"}, ("nnscratch.format_version", "'-1'")),
    ({"architecture": json.dumps([RELU] * 200_000)}, ("characters long",)),
    ({"architecture": "[" * 100_000 + "]" * 100_000}, ("not valid JSON",)),
    ({"architecture": json.dumps([dense_spec(5, 8), NESTED_CONFIG, dense_spec(8, 2)])},
     ("more than 32 levels deep",)),
    ({"architecture": json.dumps([{"type": "x" * 10_000, "config": {}}])},
     ("unknown type 'xxxx",)),
    ({"optimizer": json.dumps({"type": "Adam", "t": 10**30, "config": {}})},
     ("nnscratch.optimizer", "below 2**63")),
    ({"optimizer": json.dumps({"type": "Adam", "t": -1, "config": {}})},
     ("nnscratch.optimizer", "int >= 0")),
    ({"optimizer": json.dumps({"type": "Adam", "t": "3", "config": {}})},
     ("nnscratch.optimizer",)),
    ({"optimizer": json.dumps({"type": "Adam", "t": 1, "config": {"lr": 10**400}})},
     ("cannot rebuild Adam",)),
    ({"optimizer": "{" * 100_000}, ("nnscratch.optimizer", "not valid JSON")),
], ids=["5000-digit-version", "superscript-version", "arabic-indic-version", "negative-version",
        "huge-architecture", "deeply-nested-architecture", "nested-config", "huge-type-name",
        "huge-step-count", "negative-step-count", "step-count-string", "huge-learning-rate",
        "deeply-nested-optimizer"])
def test_absurd_metadata_is_refused(saved, backend, changes, fragments):
    path = edit_metadata(saved, **changes)
    refused(lambda: nio.read_optimizer(path, nn.load(saved)) if "optimizer" in changes
            else nn.load(path), path.name, *fragments)


def test_an_absurd_optimizer_tensor_index(saved, backend):
    header, data = split(saved)
    header["optimizer." + "9" * 5000 + ".m_scaled"] = header.pop("optimizer.0.m_scaled")
    path = join(saved.with_name("index.safetensors"), header, data)
    refused(lambda: nn.load(path, optimizer=nn.Adam()), "optimizer.<parameter index>.<slot>")


# -- saving: special targets, OS errors, permissions ------------------------------------------


def partials(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".part"))


def test_save_refuses_to_replace_a_fifo(tmp_path, st, backend):
    """As root, nn.save(model, "/dev/full") replaced the device node; a FIFO shows it without
    touching /dev."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("this system has no FIFOs (os.mkfifo)")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    refused(lambda: nn.save(small_model(), fifo), str(fifo), "a FIFO (named pipe), not a regular "
            "file", "choose the path of a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert partials(tmp_path) == []


def test_save_refuses_a_directory(tmp_path, st, backend):
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    refused(lambda: nn.save(small_model(), folder), str(folder), "a directory",
            f"e.g. {folder / 'model.safetensors'}")
    assert (folder / "keep.txt").read_text() == "keep" and partials(tmp_path) == []


def test_save_where_the_folder_cannot_be_created(tmp_path, st, backend):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    target = blocker / "run" / "model.safetensors"
    refused(lambda: nn.save(small_model(), target), str(target), "fix the path")
    assert blocker.read_text() == "a file, not a folder"


@contextlib.contextmanager
def failing_os_open(error: OSError) -> Iterator[None]:
    """Every os.open fails with ``error`` (as creating the temporary file would in a
    folder without write permission, which root cannot be shown)."""
    real_open = os.open

    def refuse(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            raise error
        return real_open(path, flags, *args, **kwargs)

    os.open = refuse
    try:
        yield
    finally:
        os.open = real_open


@pytest.mark.parametrize("error, fragments", [
    (PermissionError(errno.EACCES, "Permission denied"),
     ("Permission denied", "choose a folder you can write to")),
    (OSError(errno.EROFS, "Read-only file system"), ("Read-only", "save somewhere else")),
    (OSError(errno.ENOSPC, "No space left on device"), ("No space", "free some space")),
    (OSError(errno.EIO, "Input/output error"), ("Input/output error", "save again")),
], ids=["permission", "read-only", "disk-full", "other"])
def test_save_errors_name_the_path_and_the_fix(tmp_path, st, backend, error, fragments):
    target = tmp_path / "model.safetensors"
    with failing_os_open(error):
        message = refused(lambda: nn.save(small_model(), target), str(target), *fragments)
    assert message.startswith(f"cannot save the checkpoint to {target}")
    assert not target.exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may write in any folder, so permissions cannot refuse it")
def test_save_into_a_read_only_folder(tmp_path, st, backend):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o555)
    try:
        refused(lambda: nn.save(small_model(), folder / "model.safetensors"), "Permission denied",
                "choose a folder you can write to")
    finally:
        folder.chmod(0o755)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX")
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_saved_file_follows_the_umask(tmp_path, st, backend, mask, mode):
    path = tmp_path / "model.safetensors"
    with umask(mask):
        nn.save(small_model(), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


@pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX")
def test_saving_over_a_file_keeps_its_permissions(tmp_path, st, backend):
    path = tmp_path / "model.safetensors"
    nn.save(small_model(), path)
    path.chmod(0o640)
    with umask(0o022):
        nn.save(small_model(), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


# -- stale partials ---------------------------------------------------------------------------


def test_the_next_save_removes_only_its_own_stale_partials(tmp_path, st, backend):
    """The rule (nnscratch._files): a partial of this target, not locked, not modified
    for STALE_PARTIAL_SECONDS."""
    fcntl = pytest.importorskip("fcntl", reason="partials are locked with fcntl.flock (POSIX)")
    target = tmp_path / "model.safetensors"
    hour_ago = time.time() - 3600
    names = {
        "stale": ".model.safetensors.abcdefgh.part",
        "fresh": ".model.safetensors.freshxyz.part",
        "locked": ".model.safetensors.locked_1.part",
        "other-target": ".other.safetensors.abcdefgh.part",
        "other-pattern": ".model.safetensors.notes.part",
        "not-hidden": "model.safetensors.abcdefgh.part",
    }
    for kind, name in names.items():
        (tmp_path / name).write_bytes(b"half a checkpoint")
        if kind != "fresh":
            os.utime(tmp_path / name, (hour_ago, hour_ago))
    with open(tmp_path / names["locked"], "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a live writer holds its partial
        nn.save(small_model(), target)
        still_there = set(partials(tmp_path))
    assert still_there == set(names.values()) - {names["stale"]}
    assert nn.load(target).config() == small_model().config()
