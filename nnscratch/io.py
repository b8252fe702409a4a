"""Checkpoints: a model's weights and architecture (and optionally its optimizer's state)
in one safetensors file, readable on any backend.

``nn.save(model, path, optimizer=None, metadata=None)`` writes a checkpoint and
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
``state.<i>.<name>``           array ``<name>`` of ``model.layers[i].state()``, the layer's
                               arrays that are not trained (BatchNorm's ``running_mean``,
                               ``running_var``)
``optimizer.<j>.<slot>``       the optimizer's state array ``<slot>`` (``m_scaled``, ``v_scaled``,
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
file or the complete new one, never half a file, and a later save of the same path
removes the hidden ``.<name>.*.part`` a killed save left behind. A save replaces only a
regular file (a directory, FIFO or device is refused), and the file gets the permissions
of an ordinary new file (the umask) or keeps those of the file it replaces. Everything
that can be wrong with a file or a path (missing, empty, truncated, not safetensors, not
a regular file, from a newer nnscratch, not matching its architecture or the optimizer,
not writable) raises ``CheckpointError`` naming the file and the fix. This module is the
host boundary: it may use NumPy.

Reading a file you did not write
--------------------------------

A checkpoint may come from anywhere, so ``load`` trusts no number in it before checking
it:

1. the path must name a regular file (a FIFO would block, ``/dev/zero`` never ends);
   the check is nnscratch's (``_files.open_regular``), and the file it opened is the
   one read;
2. the safetensors package's reader (``safe_open``, a dependency of nnscratch) checks
   the header's length and JSON, every tensor's dtype, shape and ``data_offsets``, that
   the tensors lie back to back and that the file is exactly as long as header and
   tensors, before a tensor is read; nnscratch refuses the dtypes NumPy cannot hold;
3. the metadata JSON (architecture, optimizer) is bounded in size and nesting depth,
   and its numbers are bounded before ``int()`` sees them;
4. each layer's parameter shapes, derived from its saved config alone, must equal the
   stored tensors' shapes before the layer is built, so no layer is larger than the
   tensors the file holds.

A layer class you register can declare its parameter shapes with a
``parameter_shapes(config) -> {name: shape}`` static or class method; one that does not
is built from the saved config first and checked after. ``read(path)`` reads a file once
for ``load``, ``read_optimizer`` and ``read_metadata`` (``nn.resume`` does so).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import reprlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from . import (
    activations,  # noqa: F401 - the activation layers register themselves
    conv,  # noqa: F401
    layers,
    normalization,  # noqa: F401
)
from . import random as nn_random
from ._files import NotARegularFileError, atomic_write, open_regular, refuse_non_regular
from .backend import get_backend, to_numpy
from .errors import CheckpointError
from .layers import Layer, Parameter, register_layer
from .optim import OPTIMIZERS, Optimizer

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
STATE_PREFIX = "state."

# Bounds on the metadata nnscratch parses itself (the safetensors reader bounds the
# header, and checks every tensor's dtype, shape and offsets against the file's size).
_MAX_METADATA_JSON_CHARS = 4 * 2**20  # the architecture, or the optimizer, as JSON
_MAX_JSON_DEPTH = 32  # an architecture nests 3 levels; a layer config a few more
_MAX_OPTIMIZER_STEPS = 2**63 - 1
# A small non-negative integer in ASCII digits (str.isdigit also accepts '²' and '١').
_SMALL_INT = re.compile(r"[0-9]{1,9}")
_LAYER_TENSOR = re.compile(r"layers\.([0-9]{1,9})\..+", re.DOTALL)

# The safetensors dtypes NumPy can hold (BF16 and the F8 kinds it cannot).
_SAFETENSORS_DTYPES = ("F64", "F32", "F16", "I64", "I32", "I16", "I8", "U64", "U32", "U16",
                       "U8", "BOOL")


# Values quoted in messages are cut short: a hostile file must not make a huge message.
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 80
_QUOTE.maxlong = 40
_QUOTE.maxlevel = 3
_QUOTE.maxdict = _QUOTE.maxlist = _QUOTE.maxtuple = 8


OPTIMIZER_TYPES: dict[str, type[Optimizer]] = {cls.__name__: cls for cls in OPTIMIZERS.values()}
"""The optimizer classes ``read_optimizer`` can rebuild, by class name."""


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
    path = _path_name(path, "nn.save")
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
        for key, array in layer.state().items():
            tensors[f"{STATE_PREFIX}{index}.{key}"] = _host(array)
    if optimizer is not None:
        state = optimizer.state_dict(model.parameters())
        header[OPTIMIZER_KEY] = json.dumps(
            {"type": state["type"], "t": state["t"], "config": state["config"]}
        )
        for key, array in state["arrays"].items():
            tensors[OPTIMIZER_PREFIX + key] = _host(array)
    header.update(_user_metadata(metadata, path))
    data = serialize(tensors, metadata=header)
    try:
        with atomic_write(path) as handle:
            handle.write(data)
    except OSError as exc:
        raise _save_error(path, exc) from exc


def check_writable(path: str | os.PathLike) -> None:
    """Raise ``CheckpointError`` now if ``save(model, path)`` could not write ``path``:
    the target exists and is not a regular file, or the folder it goes in cannot be made
    or written. For a program that trains for an hour before it saves: check first."""
    name = _path_name(path, "nn.save")
    try:
        refuse_non_regular(name)
        folder = Path(name).absolute().parent
        while not folder.exists():  # save makes the missing folders below an existing one
            folder = folder.parent
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(folder))
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied", str(folder))
    except OSError as exc:
        raise _save_error(name, exc) from exc


_NO_PERMISSION = ("you may not write there: choose a folder you can write to, or change its "
                  "permissions")
_NOT_A_FOLDER = "a part of the folder path is a file, not a folder: fix the path"
_WRITE_FIXES = {
    errno.EACCES: _NO_PERMISSION,
    errno.EPERM: _NO_PERMISSION,
    errno.ENOSPC: "the disk is full: free some space, or save to another disk",
    getattr(errno, "EDQUOT", -1): "your disk quota is used up: free some space, or save "
                                  "elsewhere",
    errno.EROFS: "the filesystem is read-only: save somewhere else",
    errno.ENOTDIR: _NOT_A_FOLDER,
    errno.EEXIST: _NOT_A_FOLDER,  # creating a folder where a file of that name exists
    errno.ENAMETOOLONG: "the name is too long: choose a shorter one",
}
"""How to fix a write that failed with this errno."""


def _save_error(path: str, exc: OSError) -> CheckpointError:
    """A failed write as a CheckpointError naming the path, what went wrong and the fix."""
    if isinstance(exc, NotARegularFileError):
        if exc.kind == "a directory":
            fix = f"give a file name inside it, e.g. {os.path.join(path, 'model.safetensors')}"
        else:
            fix = ("saving would replace it with a regular file; choose the path of a "
                   "regular file, or of a new one")
        return CheckpointError(
            f"cannot save the checkpoint to {path}: it exists and is {exc.kind}, not a "
            f"regular file; {fix}")
    fix = _WRITE_FIXES.get(exc.errno, "check the path, then save again")
    culprit = f" ({exc.filename})" if exc.filename and os.fspath(exc.filename) != path else ""
    return CheckpointError(
        f"cannot save the checkpoint to {path}: {exc.strerror or exc}{culprit}; {fix}")


def _architecture_json(model: Sequential, path: str | os.PathLike) -> str:
    """``model.config()`` as JSON, after checking that every layer can be rebuilt."""
    for index, layer in enumerate(model.layers):
        name = type(layer).__name__
        if layers.LAYERS.get(name) is not type(layer):
            raise CheckpointError(
                f"cannot save {path}: layer {index} is a {name}, which checkpoints cannot "
                f"rebuild (they know {', '.join(layers.LAYERS)}); register it first with "
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
class CheckpointFile:
    """A checkpoint file read once and checked to be well-formed safetensors: its path,
    its metadata and its tensors (host arrays). ``load``, ``read_optimizer`` and
    ``read_metadata`` take one in place of a path (``nn.resume`` reads the file once)."""

    path: str
    metadata: dict[str, str]
    tensors: dict[str, np.ndarray]


_Checkpoint = CheckpointFile  # the name the rest of this module uses


def load(path: str | os.PathLike | CheckpointFile, optimizer: Optimizer | None = None
         ) -> Sequential:
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


def read_optimizer(path: str | os.PathLike | CheckpointFile, model: Sequential
                   ) -> Optimizer | None:
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
            f"{checkpoint.path}: the saved optimizer type {_QUOTE.repr(saved['type'])} is "
            f"unknown (known: {', '.join(OPTIMIZER_TYPES)}); create it yourself and pass it "
            "to load_optimizer_state(path, model, optimizer)"
        )
    try:
        optimizer = cls(**saved["config"])
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(
            f"{checkpoint.path}: cannot rebuild {saved['type'][:80]} from its saved config "
            f"{_QUOTE.repr(saved['config'])}: {exc}; save it again, or create the optimizer "
            "yourself and pass it to load_optimizer_state(path, model, optimizer)"
        ) from exc
    _restore_optimizer(checkpoint, model, optimizer)
    return optimizer


def read_metadata(path: str | os.PathLike | CheckpointFile) -> dict[str, str]:
    """The caller's ``metadata`` saved with the model at ``path`` (without the prefix)."""
    metadata = _read(path, with_tensors=False).metadata
    return {
        key[len(USER_PREFIX):]: value
        for key, value in metadata.items()
        if key.startswith(USER_PREFIX)
    }


def _safetensors_numpy(path: str | os.PathLike) -> Any:
    """The ``safetensors.numpy`` module (a dependency of nnscratch)."""
    import safetensors.numpy

    return safetensors.numpy


def _path_name(path: Any, action: str) -> str:
    """``path`` as a str, or a CheckpointError if it is not a usable file path."""
    try:
        name = os.fsdecode(path)
    except TypeError:
        raise CheckpointError(
            f"{action} takes a file path (a str or pathlib.Path), got {_QUOTE.repr(path)}; "
            "e.g. 'model.safetensors'"
        ) from None
    if not name or "\0" in name:
        raise CheckpointError(
            f"{action} takes a file path, got {_QUOTE.repr(name)}; e.g. 'model.safetensors'"
        )
    return name


def read(path: str | os.PathLike | CheckpointFile) -> CheckpointFile:
    """The checkpoint at ``path``, read once and checked (see the module docstring);
    pass it to ``load``, ``read_optimizer`` or ``read_metadata`` in place of the path."""
    return path if isinstance(path, CheckpointFile) else _read(path)


def _read(path: str | os.PathLike | CheckpointFile, with_tensors: bool = True
          ) -> CheckpointFile:
    """Read ``path`` through the safetensors package's reader, which checks the header's
    bounds, every tensor's dtype, shape and offsets, and that the tensors fill the file
    exactly, before any tensor is read; without ``with_tensors``, the metadata only."""
    if isinstance(path, CheckpointFile):
        return path
    from safetensors import SafetensorError, safe_open

    name = _path_name(path, "loading a checkpoint")
    with _open_regular_file(name) as (handle, size):
        # The file this process opened and checked, not whatever has the name by now.
        opened = f"/proc/self/fd/{handle.fileno()}"
        try:
            with safe_open(opened if os.path.exists(opened) else name,
                           framework="numpy") as reader:
                metadata, names = reader.metadata() or {}, reader.keys()
                for tensor in names:
                    dtype = reader.get_slice(tensor).get_dtype()
                    if dtype not in _SAFETENSORS_DTYPES:
                        raise _corrupt(name, f"tensor {_QUOTE.repr(tensor)} has the dtype "
                                             f"{dtype!r}, which nnscratch does not read (it "
                                             f"reads {', '.join(_SAFETENSORS_DTYPES)})")
                tensors = {tensor: reader.get_tensor(tensor) for tensor in names} \
                    if with_tensors else {}
        except SafetensorError as exc:
            raise _invalid(name, size, str(exc)) from exc
    return CheckpointFile(name, metadata, tensors)


@contextlib.contextmanager
def _open_regular_file(name: str) -> Iterator[tuple[BinaryIO, int]]:
    """``_files.open_regular(name)``, its errors as CheckpointError naming the fix."""
    try:
        with open_regular(name) as opened:
            yield opened
    except NotARegularFileError as exc:
        raise CheckpointError(
            f"{name} is {exc.kind}, not a regular file; checkpoints are files written by "
            "nn.save(model, path): pass the path of one"
        ) from exc
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"checkpoint file {name} does not exist; check the path (checkpoints are "
            "written by nn.save(model, path))"
        ) from exc
    except OSError as exc:
        raise CheckpointError(
            f"checkpoint file {name} cannot be read ({exc.strerror or exc}); check the path "
            "and its permissions"
        ) from exc


def _invalid(name: str, size: int, reason: str) -> CheckpointError:
    """What the safetensors reader refused, in words that say what to do."""
    reason = reason.removeprefix("Error while deserializing header: ")
    said = f"safetensors: {reason[:300]}"  # a hostile header must not make a huge message
    if size < 8:
        return _not_safetensors(name, f"it is only {size} bytes long" if size else
                                "the file is empty")
    if "header too small" in reason or "header too large" in reason:
        return _not_safetensors(name, f"its first 8 bytes give no usable header length; "
                                      f"{said}")
    if "invalid header length" in reason or "not fully covered" in reason:
        return CheckpointError(
            f"{name} is truncated or corrupt: its {size} bytes are not what its header "
            f"describes ({said}). It was cut short (an interrupted copy or download, a full "
            "disk?) or bytes were added: copy it again or save the model again")
    if "JSON" in reason:
        return CheckpointError(
            f"{name} is not a safetensors checkpoint, or a corrupt one: its header is not "
            f"the JSON safetensors describes ({said}); pass the path of a file written by "
            "nn.save(model, path), or save the model again")
    return _corrupt(name, f"its tensors' dtypes, shapes and data_offsets do not agree with "
                          f"each other or with the file; {said}")


def _not_safetensors(name: str, why: str) -> CheckpointError:
    return CheckpointError(f"{name} is not a safetensors checkpoint ({why}); pass the path "
                           "of a file written by nn.save(model, path)")


def _corrupt(name: str, why: str) -> CheckpointError:
    return CheckpointError(f"{name} is a corrupt safetensors file ({why}); it was damaged "
                           "or edited: save the model again")


def _metadata_json(path: str, key: str, text: str) -> Any:
    """The JSON in metadata ``key``, parsed within bounds on its size and nesting."""
    if len(text) > _MAX_METADATA_JSON_CHARS:
        raise CheckpointError(
            f"{path}: the {key!r} metadata is {len(text)} characters long, more than the "
            f"{_MAX_METADATA_JSON_CHARS} nnscratch reads; the file was edited or written by "
            "another program: save the model again"
        )
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise CheckpointError(
            f"{path}: the {key!r} metadata is not valid JSON ({_QUOTE.repr(str(exc))}); "
            "save the model again"
        ) from exc
    if _json_depth(value) > _MAX_JSON_DEPTH:
        raise CheckpointError(
            f"{path}: the {key!r} metadata nests lists and objects more than "
            f"{_MAX_JSON_DEPTH} levels deep; the file was edited: save the model again"
        )
    return value


def _json_depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (0 for a scalar), stopping early
    past the limit; a loop, not recursion, so no depth can overflow the stack."""
    deepest, pending = 0, [(value, 1)]
    while pending and deepest <= _MAX_JSON_DEPTH:
        item, depth = pending.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _architecture(checkpoint: _Checkpoint) -> list[dict[str, Any]]:
    """The saved ``model.config()``, after checking the format version."""
    path, metadata = checkpoint.path, checkpoint.metadata
    if ARCHITECTURE_KEY not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file but not an nnscratch checkpoint: it has no "
            f"{ARCHITECTURE_KEY!r} metadata, so the model cannot be rebuilt. Load files "
            "written by nn.save(model, path)"
        )
    version_text = metadata.get(FORMAT_KEY)
    if version_text is None or not _SMALL_INT.fullmatch(version_text) or int(version_text) < 1:
        raise CheckpointError(
            f"{path} has no valid {FORMAT_KEY!r} metadata (found {_QUOTE.repr(version_text)}); "
            "it was not written by nn.save, or was edited: save the model again"
        )
    from . import __version__

    if int(version_text) > FORMAT_VERSION:
        writer = _QUOTE.repr(metadata.get(VERSION_KEY, "a newer version")).strip("'\"")
        raise CheckpointError(
            f"{path} has checkpoint format version {version_text} (written by nnscratch "
            f"{writer}), but this nnscratch {__version__} reads format version "
            f"{FORMAT_VERSION} only: upgrade nnscratch (pip install -U nnscratch) to load it"
        )
    architecture = _metadata_json(path, ARCHITECTURE_KEY, metadata[ARCHITECTURE_KEY])
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
    state = nn_random.get_state()
    try:
        yield
    finally:
        nn_random.set_state(state)


# -- parameter shapes from a layer's config, before building it -----------------------------


def _no_parameters(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {}


def _layer_class(path: str, index: int, type_name: str) -> type[Layer]:
    cls = layers.LAYERS.get(type_name)
    if cls is None:
        raise CheckpointError(
            f"{path}: layer {index} has the unknown type {_QUOTE.repr(type_name)}; this "
            f"nnscratch rebuilds {', '.join(layers.LAYERS)}. If it is your own Layer subclass, "
            f"call nnscratch.io.register_layer({type_name[:80]}) before loading; otherwise "
            "upgrade nnscratch"
        )
    return cls


def _parameter_shapes(path: str, index: int, entry: dict[str, Any]
                      ) -> dict[str, tuple[int, ...]] | None:
    """``{parameter name: shape}`` of layer ``index`` from its saved config alone; None
    for a registered layer class that does not say (it is built first, checked after)."""
    cls = _layer_class(path, index, entry["type"])
    rule = getattr(cls, "parameter_shapes", None)
    if rule is None:
        if cls.parameters is not Layer.parameters:
            return None
        rule = _no_parameters  # a layer that keeps Layer.parameters() has none
    try:
        return {str(param): tuple(int(size) for size in shape)
                for param, shape in rule(entry["config"]).items()}
    except (TypeError, ValueError, OverflowError) as exc:  # ConfigError is a ValueError
        raise _cannot_rebuild(path, index, entry, exc) from exc


def _cannot_rebuild(path: str, index: int, entry: dict[str, Any], exc: Exception
                    ) -> CheckpointError:
    return CheckpointError(
        f"{path}: layer {index} ({entry['type']}) cannot be rebuilt from its saved config "
        f"{_QUOTE.repr(entry['config'])}: {exc}; the file was edited: save the model again"
    )


def _layer_index(tensor: str) -> int | None:
    """``i`` for a tensor named ``layers.<i>.<param>``, else None."""
    match = _LAYER_TENSOR.fullmatch(tensor)
    return int(match.group(1)) if match else None


def _check_tensor_names(path: str, expected: set[str], stored: set[str]) -> None:
    """The file must hold exactly the layer tensors the architecture needs."""
    missing, extra = sorted(expected - stored), sorted(stored - expected)
    if missing:
        raise CheckpointError(
            f"{path} lacks the tensor(s) {_QUOTE.repr(missing)[1:-1]} that its architecture "
            "needs; the file is incomplete or was edited: save the model again"
        )
    if extra:
        raise CheckpointError(
            f"{path} has tensor(s) {_QUOTE.repr(extra)[1:-1]} that its architecture does not "
            "use; the file was edited or written by another program: save the model again"
        )


def _check_shapes_before_building(checkpoint: _Checkpoint,
                                  architecture: list[dict[str, Any]]) -> None:
    """Every layer's parameter shapes, derived from its config, must be the shapes of its
    tensors in the file: so no layer is built larger than the data the file holds."""
    path = checkpoint.path
    expected: dict[str, tuple[int, ...]] = {}
    undeclared: set[int] = set()
    for index, entry in enumerate(architecture):
        shapes = _parameter_shapes(path, index, entry)
        if shapes is None:
            undeclared.add(index)
        else:
            expected.update({f"{LAYER_PREFIX}{index}.{name}": shape
                             for name, shape in shapes.items()})
    stored = {name: tuple(array.shape) for name, array in checkpoint.tensors.items()
              if not name.startswith((OPTIMIZER_PREFIX, STATE_PREFIX))
              and _layer_index(name) not in undeclared}
    _check_tensor_names(path, set(expected), set(stored))
    for name, shape in expected.items():
        if stored[name] != shape:
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {stored[name]}, but the architecture "
                f"expects {_QUOTE.repr(shape)}; the file does not match its architecture: "
                "save the model again"
            )


def _build_layer(path: str, index: int, entry: dict[str, Any]) -> Layer:
    """One layer from its ``{"type", "config"}`` entry.

    A layer's ``init`` only decides starting weights, which the stored tensors replace,
    so layers are built with ``init="zeros"``: nothing is drawn, and a custom
    initializer (saved by name only) need not exist here.
    """
    cls, config = _layer_class(path, index, entry["type"]), entry["config"]
    arguments = dict(config)
    if "init" in arguments:
        arguments["init"] = "zeros"
    try:
        layer = cls(**arguments)
    except (TypeError, ValueError, OverflowError) as exc:  # ConfigError is a ValueError
        raise _cannot_rebuild(path, index, entry, exc) from exc
    if "init" in config:
        layer.init = config["init"]
    return layer


def _build_model(checkpoint: _Checkpoint) -> Sequential:
    """The saved model on the active backend, with the stored parameter values."""
    from .model import Sequential

    architecture = _architecture(checkpoint)
    _check_shapes_before_building(checkpoint, architecture)
    with _random_streams_preserved():
        layers = [
            _build_layer(checkpoint.path, index, entry)
            for index, entry in enumerate(architecture)
        ]
    try:
        model = Sequential(*layers)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{checkpoint.path}: its layers do not form a model ({exc}); save the model again"
        ) from exc
    expected = {
        f"{LAYER_PREFIX}{index}.{param.name}": param
        for index, layer in enumerate(model.layers)
        for param in layer.parameters()
    }
    stored = {name for name in checkpoint.tensors
              if not name.startswith((OPTIMIZER_PREFIX, STATE_PREFIX))}
    _check_tensor_names(checkpoint.path, set(expected), stored)
    backend = get_backend()
    for name, param in expected.items():
        _check_tensor(checkpoint.path, name, checkpoint.tensors[name], param,
                      "the architecture", "the file does not match its architecture")
        param.value = backend.asarray(checkpoint.tensors[name], dtype=_dtype_name(param.value),
                                      copy=True)
    _restore_states(checkpoint, model)
    return model


def _restore_states(checkpoint: _Checkpoint, model: Sequential) -> None:
    """Every layer's ``state()`` from the ``state.<i>.<name>`` tensors, which must be
    exactly the layers' state arrays, of their shapes and dtypes."""
    current = {f"{STATE_PREFIX}{index}.{key}": (index, key, array)
               for index, layer in enumerate(model.layers)
               for key, array in layer.state().items()}
    stored = {name for name in checkpoint.tensors if name.startswith(STATE_PREFIX)}
    _check_tensor_names(checkpoint.path, set(current), stored)
    states: dict[int, dict[str, Any]] = {}
    for name, (index, key, array) in current.items():
        _check_tensor(checkpoint.path, name, checkpoint.tensors[name], Parameter(array, key),
                      "the architecture", "the file does not match its architecture")
        states.setdefault(index, {})[key] = get_backend().asarray(
            checkpoint.tensors[name], dtype=_dtype_name(array), copy=True)
    for index, state in states.items():
        model.layers[index].load_state(state)


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
            "with nn.save(model, path, optimizer=optimizer) to resume training, or load the "
            "model alone with nn.load(path)"
        )
    saved = _metadata_json(checkpoint.path, OPTIMIZER_KEY, text)
    if not (isinstance(saved, dict) and isinstance(saved.get("type"), str)
            and isinstance(saved.get("config"), dict)
            and isinstance(saved.get("t"), int) and not isinstance(saved["t"], bool)
            and 0 <= saved["t"] <= _MAX_OPTIMIZER_STEPS):
        raise CheckpointError(
            f"{checkpoint.path}: the {OPTIMIZER_KEY!r} metadata should be JSON "
            f'{{"type": str, "t": int >= 0 (below 2**63), "config": {{...}}}}, found '
            f"{_QUOTE.repr(text)}; save the model and optimizer again"
        )
    return saved


def _restore_optimizer(checkpoint: _Checkpoint, model: Sequential, optimizer: Optimizer) -> None:
    """Check the saved optimizer state against ``optimizer`` and ``model``, then load it."""
    path = checkpoint.path
    saved = _optimizer_header(checkpoint)
    kind, saved_kind = type(optimizer).__name__, saved["type"][:80]
    if saved["type"] != kind:
        raise CheckpointError(
            f"{path} holds the state of a {saved_kind} optimizer, which cannot be loaded "
            f"into a {kind}; pass a {saved_kind}, or use "
            "nnscratch.io.read_optimizer(path, model) to rebuild the saved one"
        )
    params = model.parameters()
    expected_slots = set(optimizer.slot_names)
    backend = get_backend()
    entries = []
    for name, array in checkpoint.tensors.items():
        if not name.startswith(OPTIMIZER_PREFIX):
            continue
        index_text, _, slot = name[len(OPTIMIZER_PREFIX):].partition(".")
        if not _SMALL_INT.fullmatch(index_text) or not slot:
            raise CheckpointError(
                f"{path}: the optimizer tensor {_QUOTE.repr(name)} is not named "
                "'optimizer.<parameter index>.<slot>'; save again"
            )
        entries.append((int(index_text), slot, name, array))
    arrays: dict[str, Any] = {}
    slots_found: dict[int, set[str]] = {}
    for index, slot, name, array in sorted(entries, key=lambda entry: entry[:2]):
        if index >= len(params):
            raise CheckpointError(
                f"{path}: the optimizer tensor {_QUOTE.repr(name)} belongs to parameter "
                f"{index}, but "
                f"the model has {len(params)} parameters; the optimizer state was saved "
                "for another model"
            )
        if slot not in expected_slots:
            keeps = ", ".join(sorted(expected_slots)) or "no state arrays"
            raise CheckpointError(
                f"{path}: the optimizer tensor {_QUOTE.repr(name)} is a "
                f"{_QUOTE.repr(slot)} state, but {optimizer!r} keeps {keeps}; create the "
                f"optimizer with the saved hyper-parameters {_QUOTE.repr(saved['config'])}"
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
    "CheckpointFile",
    "check_writable",
    "OPTIMIZER_TYPES",
    "load",
    "load_optimizer_state",
    "read",
    "read_metadata",
    "read_optimizer",
    "register_layer",
    "save",
]
