"""Checkpoints: a model's weights and architecture (and optionally its optimizer's state)
in one safetensors file, readable on any backend.

``model.save(path, optimizer=None, metadata=None)`` writes a checkpoint and
``nn.load(path, optimizer=None)`` rebuilds the model on the *active* backend, so a
network trained on the GPU loads on a CPU-only machine and the other way round.

The file layout
---------------

A checkpoint is a plain `safetensors <https://github.com/huggingface/safetensors>`_
file: an 8-byte little-endian header length, a JSON header, then the raw tensor bytes.
The tensors are host (NumPy) arrays, named

=============================  ============================================================
``layers.<i>.<param>``         parameter ``<param>`` of ``model.layers[i]``, e.g.
                               ``layers.0.weight`` (in, out) and ``layers.0.bias`` (out,)
``optimizer.<j>.<slot>``       the optimizer's state array ``<slot>`` (``m``, ``v``,
                               ``square_avg``, ``momentum_buffer``) of the ``j``-th entry of
                               ``model.parameters()``; only when saved with an optimizer
=============================  ============================================================

and the header's ``__metadata__`` (safetensors allows only ``str -> str`` there) holds

=============================  ============================================================
``nnscratch.format_version``   ``"1"``: the layout described here
``nnscratch.version``          the nnscratch version that wrote the file
``nnscratch.backend``          the backend the model was saved from (informative only)
``nnscratch.architecture``     JSON of ``model.config()``: ``[{"type": "Dense", "config":
                               {"in_features": 784, ...}}, {"type": "ReLU", ...}, ...]``
``nnscratch.optimizer``        JSON ``{"type": "Adam", "t": 120, "config": {"lr": ...}}``;
                               only when saved with an optimizer
``user.<key>``                 the caller's own ``metadata={key: value}``
=============================  ============================================================

Loading rebuilds every layer from the architecture through a registry of layer classes
by name (``Dense``, ``Dropout`` and the activations; ``register_layer`` adds your own),
then overwrites the parameters with the stored tensors. Rebuilding draws no random
numbers and leaves the ``nn.seed`` streams exactly as they were, so resuming a seeded
training run after a load repeats the uninterrupted run.

Writes are atomic (``nnscratch._files.atomic_write``): a crash or a kill leaves the old
file or the complete new one, never half a file. Everything that can be wrong with a
file (missing, empty, truncated, not safetensors, from a newer nnscratch, not matching
its architecture or the optimizer) raises ``CheckpointError`` naming the file and the
fix. This module is the host boundary: it may use NumPy.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import random as nn_random
from ._files import atomic_write
from .activations import ACTIVATIONS
from .backend import get_backend, to_numpy
from .errors import CheckpointError, ConfigError
from .layers import Dense, Dropout, Layer, Parameter
from .optim import OPTIMIZERS, SGD, Optimizer

if TYPE_CHECKING:
    from .model import Sequential

FORMAT_VERSION = 1
FORMAT_KEY = "nnscratch.format_version"
VERSION_KEY = "nnscratch.version"
BACKEND_KEY = "nnscratch.backend"
ARCHITECTURE_KEY = "nnscratch.architecture"
OPTIMIZER_KEY = "nnscratch.optimizer"
USER_PREFIX = "user."
LAYER_PREFIX = "layers."
OPTIMIZER_PREFIX = "optimizer."

# The largest header safetensors itself accepts; a bigger "length" means the file is
# something else (a text file's first 8 bytes read as an integer are huge).
_MAX_HEADER_BYTES = 100_000_000

_INSTALL_HINT = "pip install safetensors (or: pip install 'nnscratch[checkpoints]')"

LAYERS: dict[str, type[Layer]] = {
    "Dense": Dense,
    "Dropout": Dropout,
    **{cls.__name__: cls for cls in ACTIVATIONS.values()},
}
"""The layer classes a checkpoint can name, by class name."""

OPTIMIZER_TYPES: dict[str, type[Optimizer]] = {cls.__name__: cls for cls in OPTIMIZERS.values()}
"""The optimizer classes ``read_optimizer`` can rebuild, by class name."""


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Let checkpoints save and rebuild your own ``Layer`` subclass (by its class name).

    Its ``config()`` must return JSON-serializable constructor keyword arguments, and its
    parameters need distinct ``name``s. Usable as a class decorator.
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise ConfigError(f"register_layer takes a Layer subclass, got {cls!r}")
    LAYERS[cls.__name__] = cls
    return cls


# -- writing -------------------------------------------------------------------------------


def save(
    model: Sequential,
    path: str | os.PathLike,
    optimizer: Optimizer | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``model`` (weights and architecture), optionally ``optimizer``'s state and
    the caller's ``metadata`` (str -> str), to the safetensors file ``path``, atomically.

    The model's arrays must belong to the active backend (the one it was trained on).
    Read the metadata back with ``read_metadata(path)``.
    """
    serialize = _safetensors_numpy(path).save
    from . import __version__

    header = {
        FORMAT_KEY: str(FORMAT_VERSION),
        VERSION_KEY: __version__,
        BACKEND_KEY: get_backend().name,
        ARCHITECTURE_KEY: _architecture_json(model, path),
    }
    tensors: dict[str, np.ndarray] = {}
    for index, layer in enumerate(model.layers):
        for param in layer.parameters():
            name = f"{LAYER_PREFIX}{index}.{param.name}"
            if not param.name or name in tensors:
                raise CheckpointError(
                    f"cannot save {path}: the parameters of layer {index} ({layer!r}) need "
                    f"distinct, non-empty names, got {[p.name for p in layer.parameters()]}"
                )
            tensors[name] = _host(param.value)
    if optimizer is not None:
        state = optimizer.state_dict(model.parameters())
        header[OPTIMIZER_KEY] = json.dumps(
            {"type": state["type"], "t": state["t"], "config": state["config"]}
        )
        for key, array in state["arrays"].items():
            tensors[OPTIMIZER_PREFIX + key] = _host(array)
    header.update(_user_metadata(metadata, path))
    data = serialize(tensors, metadata=header)
    with atomic_write(path) as handle:
        handle.write(data)


def _architecture_json(model: Sequential, path: str | os.PathLike) -> str:
    """``model.config()`` as JSON, after checking that every layer can be rebuilt."""
    for index, layer in enumerate(model.layers):
        name = type(layer).__name__
        if LAYERS.get(name) is not type(layer):
            raise CheckpointError(
                f"cannot save {path}: layer {index} is a {name}, which checkpoints cannot "
                f"rebuild (they know {', '.join(LAYERS)}); register it first with "
                f"nnscratch.io.register_layer({name})"
            )
    try:
        return json.dumps(model.config(), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"cannot save {path}: a layer's config() is not plain JSON data ({exc}); "
            "config() must return numbers, strings, booleans, lists and dicts"
        ) from exc


def _user_metadata(metadata: dict[str, str] | None, path: str | os.PathLike) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
    ):
        raise CheckpointError(
            f"cannot save {path}: metadata must be a dict of str to str (safetensors "
            f"stores only strings), got {metadata!r}; convert values with str() or json.dumps"
        )
    return {USER_PREFIX + key: value for key, value in metadata.items()}


def _host(array: Any) -> np.ndarray:
    """A C-contiguous host copy of an array of the active backend (safetensors' input)."""
    return np.ascontiguousarray(to_numpy(array))


# -- reading -------------------------------------------------------------------------------


@dataclass
class _Checkpoint:
    """A checkpoint file read and checked to be well-formed safetensors."""

    path: str
    metadata: dict[str, str]
    tensors: dict[str, np.ndarray]


def load(path: str | os.PathLike, optimizer: Optimizer | None = None) -> Sequential:
    """Rebuild the model saved at ``path`` on the active backend.

    With ``optimizer``, also restore the optimizer state saved with the model into it
    (see ``load_optimizer_state``). The ``nn.seed`` random streams are left untouched.
    """
    checkpoint = _read(path)
    model = _build_model(checkpoint)
    if optimizer is not None:
        _restore_optimizer(checkpoint, model, optimizer)
    return model


def load_optimizer_state(path: str | os.PathLike, model: Sequential, optimizer: Optimizer) -> None:
    """Restore into ``optimizer`` the state saved at ``path`` (its step counter, learning
    rate and every per-parameter array), for the parameters of ``model``.

    ``optimizer`` must be of the saved type (e.g. ``Adam``); its other hyper-parameters
    are its own. Raises ``CheckpointError`` if the file has no optimizer state or the
    state does not fit ``model``'s parameters.
    """
    _restore_optimizer(_read(path), model, optimizer)


def read_optimizer(path: str | os.PathLike, model: Sequential) -> Optimizer | None:
    """The optimizer saved at ``path``, rebuilt from its saved type and hyper-parameters
    with its state restored for ``model``'s parameters; None if none was saved.

    >>> model = nn.load("run.safetensors")
    >>> optimizer = nnscratch.io.read_optimizer("run.safetensors", model)
    >>> model.fit(X, y, loss=loss, optimizer=optimizer, ...)   # resumes where it stopped
    """
    checkpoint = _read(path)
    saved = _optimizer_header(checkpoint, required=False)
    if saved is None:
        return None
    cls = OPTIMIZER_TYPES.get(saved["type"])
    if cls is None:
        raise CheckpointError(
            f"{checkpoint.path}: the saved optimizer type {saved['type']!r} is unknown "
            f"(known: {', '.join(OPTIMIZER_TYPES)}); create it yourself and pass it to "
            "load_optimizer_state(path, model, optimizer)"
        )
    try:
        optimizer = cls(**saved["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{checkpoint.path}: cannot rebuild {saved['type']} from its saved config "
            f"{saved['config']}: {exc}"
        ) from exc
    _restore_optimizer(checkpoint, model, optimizer)
    return optimizer


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The caller's ``metadata`` saved with the model at ``path`` (without the prefix)."""
    metadata = _read(path).metadata
    return {
        key[len(USER_PREFIX):]: value
        for key, value in metadata.items()
        if key.startswith(USER_PREFIX)
    }


def _safetensors_numpy(path: str | os.PathLike) -> Any:
    """The ``safetensors.numpy`` module, or a CheckpointError saying how to install it."""
    try:
        import safetensors.numpy
    except ImportError as exc:
        raise CheckpointError(
            f"reading or writing the checkpoint {path} needs the optional package "
            f"'safetensors', which is not installed ({exc}). Install it with: {_INSTALL_HINT}"
        ) from exc
    return safetensors.numpy


def _read(path: str | os.PathLike) -> _Checkpoint:
    """Read ``path`` and check that it is complete, well-formed safetensors."""
    st_numpy = _safetensors_numpy(path)
    name = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"checkpoint file {name} does not exist; check the path (checkpoints are "
            "written by model.save(path))"
        ) from exc
    except OSError as exc:
        raise CheckpointError(f"checkpoint file {name} cannot be read: {exc}") from exc
    metadata = _check_layout(name, data)
    try:
        tensors = st_numpy.load(data)
    except Exception as exc:  # safetensors' SafetensorError derives from Exception only
        raise CheckpointError(
            f"{name} is a corrupt safetensors file ({exc}); save the model again"
        ) from exc
    return _Checkpoint(name, metadata, tensors)


def _check_layout(name: str, data: bytes) -> dict[str, str]:
    """Check the safetensors framing by hand, to tell a truncated checkpoint from a file
    that never was one; returns the header's metadata."""
    not_safetensors = (
        f"{name} is not a safetensors checkpoint ({{why}}); pass the path of a file "
        "written by model.save(path)"
    )
    truncated = (
        f"{name} is truncated: {{why}}. The file was cut short (an interrupted copy or "
        "download, a full disk?); copy it again or save the model again"
    )
    if not data:
        raise CheckpointError(not_safetensors.format(why="the file is empty"))
    if len(data) < 8:
        raise CheckpointError(not_safetensors.format(why=f"it is only {len(data)} bytes long"))
    header_length = int.from_bytes(data[:8], "little")
    if not 2 <= header_length <= _MAX_HEADER_BYTES:
        raise CheckpointError(not_safetensors.format(
            why=f"its first 8 bytes give a header length of {header_length}"))
    header_bytes = data[8:8 + header_length]
    if len(header_bytes) < header_length:
        if header_bytes.startswith(b"{"):
            raise CheckpointError(truncated.format(
                why=f"its header should be {header_length} bytes, the file ends after "
                f"{len(header_bytes)}"))
        raise CheckpointError(not_safetensors.format(why="it has no JSON header"))
    try:
        header = json.loads(header_bytes)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CheckpointError(not_safetensors.format(
            why=f"its header is not JSON: {exc}")) from exc
    if not isinstance(header, dict):
        raise CheckpointError(not_safetensors.format(why="its header is not a JSON object"))
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(value, str) for value in metadata.values()
    ):
        raise CheckpointError(not_safetensors.format(why="its metadata is not str -> str"))
    data_end = 0
    for entry in header.values():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(offset, int) for offset in offsets)):
            raise CheckpointError(not_safetensors.format(why="a tensor entry has no offsets"))
        data_end = max(data_end, offsets[1])
    available = len(data) - 8 - header_length
    if data_end > available:
        raise CheckpointError(truncated.format(
            why=f"its header describes {data_end} bytes of tensor data, the file holds "
            f"{available}"))
    return metadata


def _architecture(checkpoint: _Checkpoint) -> list[dict[str, Any]]:
    """The saved ``model.config()``, after checking the format version."""
    path, metadata = checkpoint.path, checkpoint.metadata
    if ARCHITECTURE_KEY not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file but not an nnscratch checkpoint: it has no "
            f"{ARCHITECTURE_KEY!r} metadata, so the model cannot be rebuilt. Load files "
            "written by model.save(path)"
        )
    version_text = metadata.get(FORMAT_KEY)
    if version_text is None or not version_text.isdigit() or int(version_text) < 1:
        raise CheckpointError(
            f"{path} has no valid {FORMAT_KEY!r} metadata (found {version_text!r}); it was "
            "not written by model.save, or was edited: save the model again"
        )
    from . import __version__

    if int(version_text) > FORMAT_VERSION:
        writer = metadata.get(VERSION_KEY, "a newer version")
        raise CheckpointError(
            f"{path} has checkpoint format version {version_text} (written by nnscratch "
            f"{writer}), but this nnscratch {__version__} reads format version "
            f"{FORMAT_VERSION} only: upgrade nnscratch (pip install -U nnscratch) to load it"
        )
    try:
        architecture = json.loads(metadata[ARCHITECTURE_KEY])
    except ValueError as exc:
        raise CheckpointError(
            f"{path}: the {ARCHITECTURE_KEY!r} metadata is not valid JSON ({exc}); "
            "save the model again"
        ) from exc
    if not isinstance(architecture, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("type"), str)
        and isinstance(entry.get("config"), dict)
        for entry in architecture
    ):
        raise CheckpointError(
            f"{path}: the {ARCHITECTURE_KEY!r} metadata should be a list of "
            '{"type": ..., "config": {...}} entries; save the model again'
        )
    return architecture


@contextlib.contextmanager
def _random_streams_preserved() -> Iterator[None]:
    """Leave every ``nn.seed`` stream as it was, whatever the block draws or creates."""
    saved_seed = nn_random._seed
    saved = {name: (gen, gen.bit_generator.state) for name, gen in nn_random._generators.items()}
    try:
        yield
    finally:
        nn_random._seed = saved_seed
        nn_random._generators.clear()
        for name, (gen, state) in saved.items():
            gen.bit_generator.state = state
            nn_random._generators[name] = gen


def _build_layer(path: str, index: int, entry: dict[str, Any]) -> Layer:
    """One layer from its ``{"type", "config"}`` entry.

    A layer's ``init`` only decides starting weights, which the stored tensors replace,
    so layers are built with ``init="zeros"``: nothing is drawn, and a custom
    initializer (saved by name only) need not exist here.
    """
    type_name, config = entry["type"], entry["config"]
    cls = LAYERS.get(type_name)
    if cls is None:
        raise CheckpointError(
            f"{path}: layer {index} has the unknown type {type_name!r}; this nnscratch "
            f"rebuilds {', '.join(LAYERS)}. If it is your own Layer subclass, call "
            f"nnscratch.io.register_layer({type_name}) before loading; otherwise upgrade "
            "nnscratch"
        )
    arguments = dict(config)
    if "init" in arguments:
        arguments["init"] = "zeros"
    try:
        layer = cls(**arguments)
    except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise CheckpointError(
            f"{path}: layer {index} ({type_name}) cannot be rebuilt from its saved config "
            f"{config}: {exc}"
        ) from exc
    if "init" in config:
        layer.init = config["init"]
    return layer


def _build_model(checkpoint: _Checkpoint) -> Sequential:
    """The saved model on the active backend, with the stored parameter values."""
    from .model import Sequential

    architecture = _architecture(checkpoint)
    with _random_streams_preserved():
        layers = [
            _build_layer(checkpoint.path, index, entry)
            for index, entry in enumerate(architecture)
        ]
    model = Sequential(*layers)
    expected = {
        f"{LAYER_PREFIX}{index}.{param.name}": param
        for index, layer in enumerate(model.layers)
        for param in layer.parameters()
    }
    stored = {name for name in checkpoint.tensors if not name.startswith(OPTIMIZER_PREFIX)}
    missing, extra = sorted(expected.keys() - stored), sorted(stored - expected.keys())
    if missing:
        raise CheckpointError(
            f"{checkpoint.path} lacks the tensor(s) {', '.join(missing)} that its "
            "architecture needs; the file is incomplete or was edited: save the model again"
        )
    if extra:
        raise CheckpointError(
            f"{checkpoint.path} has tensor(s) {', '.join(extra)} that its architecture "
            "does not use; the file was edited or written by another program: save the "
            "model again"
        )
    backend = get_backend()
    for name, param in expected.items():
        _check_tensor(checkpoint.path, name, checkpoint.tensors[name], param,
                      "the architecture", "the file does not match its architecture")
        param.value = backend.asarray(checkpoint.tensors[name], dtype=_dtype_name(param.value),
                                      copy=True)
    return model


def _check_tensor(path: str, name: str, array: np.ndarray, param: Parameter, owner: str,
                  diagnosis: str) -> None:
    """The stored ``array`` must have the shape and dtype of ``param`` (of ``owner``)."""
    if tuple(array.shape) != param.shape:
        raise CheckpointError(
            f"{path}: tensor {name!r} has shape {tuple(array.shape)}, but {owner} expects "
            f"{param.shape}; {diagnosis}: save the model again"
        )
    expected_dtype = _dtype_name(param.value)
    if array.dtype.name != expected_dtype:
        raise CheckpointError(
            f"{path}: tensor {name!r} has dtype {array.dtype.name}, but {owner} expects "
            f"{expected_dtype}; {diagnosis}: save the model again"
        )


def _dtype_name(array: Any) -> str:
    """``"float32"`` for a float32 array of any backend (torch.float32, ...)."""
    return str(array.dtype).rsplit(".", 1)[-1]


# -- optimizer state -----------------------------------------------------------------------


def _optimizer_header(checkpoint: _Checkpoint, required: bool = True) -> dict[str, Any] | None:
    """The saved ``{"type", "t", "config"}`` of the optimizer, checked; None if absent
    and not ``required``."""
    text = checkpoint.metadata.get(OPTIMIZER_KEY)
    if text is None:
        if not required:
            return None
        raise CheckpointError(
            f"{checkpoint.path} holds no optimizer state (it was saved without one); save "
            "with model.save(path, optimizer=optimizer) to resume training, or load the "
            "model alone with nn.load(path)"
        )
    try:
        saved = json.loads(text)
    except ValueError:
        saved = None
    if not (isinstance(saved, dict) and isinstance(saved.get("type"), str)
            and isinstance(saved.get("config"), dict)
            and isinstance(saved.get("t"), int) and not isinstance(saved["t"], bool)
            and saved["t"] >= 0):
        raise CheckpointError(
            f"{checkpoint.path}: the {OPTIMIZER_KEY!r} metadata should be JSON "
            f'{{"type": str, "t": int >= 0, "config": {{...}}}}, found {text!r}; save again'
        )
    return saved


def _slot_names(optimizer: Optimizer) -> set[str]:
    """The state arrays ``optimizer`` keeps for each parameter it has updated."""
    names = set(optimizer.slot_names)
    # SGD keeps its momentum buffer without declaring it in slot_names.
    if not names and isinstance(optimizer, SGD) and optimizer.momentum:
        names = {"momentum_buffer"}
    return names


def _restore_optimizer(checkpoint: _Checkpoint, model: Sequential, optimizer: Optimizer) -> None:
    """Check the saved optimizer state against ``optimizer`` and ``model``, then load it."""
    path = checkpoint.path
    saved = _optimizer_header(checkpoint)
    kind = type(optimizer).__name__
    if saved["type"] != kind:
        raise CheckpointError(
            f"{path} holds the state of a {saved['type']} optimizer, which cannot be loaded "
            f"into a {kind}; pass a {saved['type']}, or use "
            "nnscratch.io.read_optimizer(path, model) to rebuild the saved one"
        )
    params = model.parameters()
    expected_slots = _slot_names(optimizer)
    backend = get_backend()
    entries = []
    for name, array in checkpoint.tensors.items():
        if not name.startswith(OPTIMIZER_PREFIX):
            continue
        index_text, _, slot = name[len(OPTIMIZER_PREFIX):].partition(".")
        if not index_text.isdigit() or not slot:
            raise CheckpointError(
                f"{path}: the optimizer tensor {name!r} is not named "
                "'optimizer.<parameter index>.<slot>'; save again"
            )
        entries.append((int(index_text), slot, name, array))
    arrays: dict[str, Any] = {}
    slots_found: dict[int, set[str]] = {}
    for index, slot, name, array in sorted(entries, key=lambda entry: entry[:2]):
        if index >= len(params):
            raise CheckpointError(
                f"{path}: the optimizer tensor {name!r} belongs to parameter {index}, but "
                f"the model has {len(params)} parameters; the optimizer state was saved "
                "for another model"
            )
        if slot not in expected_slots:
            keeps = ", ".join(sorted(expected_slots)) or "no state arrays"
            raise CheckpointError(
                f"{path}: the optimizer tensor {name!r} is a {slot!r} state, but "
                f"{optimizer!r} keeps {keeps}; create the optimizer with the saved "
                f"hyper-parameters {saved['config']}"
            )
        _check_tensor(path, name, array, params[index], f"parameter {index} of the model",
                      "the optimizer state was saved for another model")
        arrays[f"{index}.{slot}"] = backend.asarray(array, dtype=array.dtype.name, copy=True)
        slots_found.setdefault(index, set()).add(slot)
    for index, slots in sorted(slots_found.items()):
        if slots != expected_slots:
            missing = ", ".join(sorted(expected_slots - slots))
            raise CheckpointError(
                f"{path}: the optimizer state of parameter {index} lacks {missing} "
                f"(tensors optimizer.{index}.<slot>); the file is incomplete: save again"
            )
    optimizer.load_state_dict(
        params, {"type": saved["type"], "t": saved["t"], "config": saved["config"],
                 "arrays": arrays}
    )


__all__ = [
    "FORMAT_VERSION",
    "LAYERS",
    "OPTIMIZER_TYPES",
    "load",
    "load_optimizer_state",
    "read_metadata",
    "read_optimizer",
    "register_layer",
    "save",
]
