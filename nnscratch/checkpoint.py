"""Checkpoints of a training run: stop at any moment, resume, end with the same weights.

``Checkpoint(path)`` is a callback: at the end of every epoch it writes the model, the
optimizer's state, the number of epochs done, the history, the state of the random
streams and the caller's settings to one safetensors file (``nnscratch.io``), written
atomically, with Ctrl-C held back until the file is complete. ``resume(path)`` reads it
back; ``fit(..., initial_epoch=run.epoch)`` carries on::

    checkpoint = nn.Checkpoint("run.safetensors", settings={"hidden": [512, 256]})
    model.fit(X, y, loss=loss, optimizer=adam, epochs=10, seed=0, callbacks=[checkpoint])

    run = nn.resume("run.safetensors")      # after a Ctrl-C, a crash, a kill -9
    run.model.fit(X, y, loss=loss, optimizer=run.optimizer, epochs=10, seed=0,
                  initial_epoch=run.epoch, callbacks=[checkpoint.resumed_from(run)])

The resumed run ends with exactly the weights of an uninterrupted one: the weights and
the optimizer's moments are restored bit for bit, ``fit`` replays the shuffles of the
epochs already done, a schedule depends on the epoch only, and the random streams
(dropout masks) continue where they were.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import io
from . import random as nn_random
from .callbacks import Callback
from .errors import CheckpointError, ConfigError
from .model import Sequential
from .optim import Optimizer

EPOCH_KEY = "training.epoch"
HISTORY_KEY = "training.history"
SETTINGS_KEY = "training.settings"
RANDOM_KEY = "training.random"
# The epochs done: at most this many digits (an edited file is refused before int()).
_MAX_EPOCH_DIGITS = 9


@dataclass
class Run:
    """A training run read back by ``resume``: the model and optimizer as they were
    after ``epoch`` finished epochs, the history of those epochs, the caller's
    settings."""

    path: str
    model: Sequential
    optimizer: Optimizer
    epoch: int
    history: dict[str, list[float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


class Checkpoint(Callback):
    """Write the run to ``path`` at the end of every ``every``-th epoch (and of the last).

    ``settings`` (JSON data: numbers, strings, lists, dicts) is saved with it, for the
    caller to check and reuse on resume. The history spans the whole run: a checkpoint
    made by ``resumed_from(run)`` continues the history of ``run``.
    """

    def __init__(self, path: str | os.PathLike, settings: dict[str, Any] | None = None,
                 every: int = 1) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
            raise ConfigError(f"every must be a positive integer, got {every!r}")
        self.path, self.every = os.fspath(path), every
        self.settings = dict(settings or {})
        try:
            self._settings_json = json.dumps(self.settings, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"checkpoint settings must be plain JSON data: {exc}") from exc
        self.history: dict[str, list[float]] = {}
        self.epochs_done = 0
        self.last_saved: int | None = None  # the epochs done at this object's last write

    def resumed_from(self, run: Run) -> Checkpoint:
        """This callback, continuing the history of ``run``; returns itself."""
        self.history = {key: list(values) for key, values in run.history.items()}
        self.epochs_done = run.epoch
        return self

    def on_train_begin(self, model: Any, info: dict[str, Any]) -> None:
        self.model, self.optimizer = model, info["optimizer"]
        self.last_epoch = info["epochs"] - 1
        # Under a schedule the optimizer's rate changes every epoch; the run's rate, the
        # one a resumed fit schedules from, is the rate it started with.
        self.base_lr = self.optimizer.lr if info.get("schedule") is not None else None
        start = info["initial_epoch"]  # the history holds the epochs before it, no more
        self.history = {key: values[:start] for key, values in self.history.items()}

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        self.epochs_done = epoch + 1
        if self.epochs_done % self.every == 0 or epoch == self.last_epoch:
            self.save()

    def save(self) -> None:
        """Write the run as it stands now (after ``epochs_done`` epochs)."""
        metadata = {
            EPOCH_KEY: str(self.epochs_done),
            HISTORY_KEY: json.dumps(self.history),
            SETTINGS_KEY: self._settings_json,
            RANDOM_KEY: json.dumps(nn_random.get_state()),
        }
        scheduled_lr = self.optimizer.lr
        if self.base_lr is not None:
            self.optimizer.lr = self.base_lr
        try:
            with _ctrl_c_deferred():
                io.save(self.model, self.path, optimizer=self.optimizer, metadata=metadata)
        finally:
            self.optimizer.lr = scheduled_lr
        self.last_saved = self.epochs_done


def resume(path: str | os.PathLike) -> Run:
    """The run saved at ``path`` by a ``Checkpoint``, on the active backend; the random
    streams are put back as they were when it was saved. Raises ``CheckpointError`` for
    a file that is not such a checkpoint or whose run metadata is not valid."""
    saved = io.read(path)  # once: the model, the optimizer and the run come from it
    name = saved.path
    metadata = io.read_metadata(saved)
    missing = [key for key in (EPOCH_KEY, HISTORY_KEY, SETTINGS_KEY, RANDOM_KEY)
               if key not in metadata]
    if missing:
        raise CheckpointError(
            f"{name} is a model file, but not a checkpoint of a training run (it lacks "
            f"{', '.join(missing)}); resume takes files written by nn.Checkpoint"
        )
    epoch = _epoch(name, metadata[EPOCH_KEY])
    history = _history(name, _json(name, HISTORY_KEY, metadata[HISTORY_KEY]), epoch)
    settings = read_settings(saved)
    random_state = _json(name, RANDOM_KEY, metadata[RANDOM_KEY])
    model = io.load(saved)
    optimizer = io.read_optimizer(saved, model)
    if optimizer is None:
        raise CheckpointError(f"{name} holds no optimizer state, so training cannot resume")
    try:
        nn_random.set_state(random_state)
    except ConfigError as exc:
        raise CheckpointError(f"{name}: {exc}; the file was edited: save again") from exc
    return Run(name, model, optimizer, epoch, history, settings)


def read_settings(path: str | os.PathLike | io.CheckpointFile) -> dict[str, Any]:
    """The settings saved with the run at ``path`` (an empty dict for a model saved
    without them), without loading the run."""
    name = path.path if isinstance(path, io.CheckpointFile) else os.fspath(path)
    text = io.read_metadata(path).get(SETTINGS_KEY)
    settings = {} if text is None else _json(name, SETTINGS_KEY, text)
    if not isinstance(settings, dict):
        raise CheckpointError(f"{name}: the run's settings are not a JSON object: save again")
    return settings


def _json(name: str, key: str, text: str) -> Any:
    """The JSON in metadata ``key``, parsed within io's bounds on size and nesting."""
    return io._metadata_json(name, key, text)


def _epoch(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_EPOCH_DIGITS):
        raise CheckpointError(
            f"{name}: the number of epochs done should be a non-negative integer, found "
            f"{text[:40]!r}; the file was edited: save again"
        )
    return int(text)


def _history(name: str, history: Any, epoch: int) -> dict[str, list[float]]:
    valid = isinstance(history, dict) and all(
        isinstance(key, str) and isinstance(values, list) and len(values) <= epoch
        and all(isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value) for value in values)
        for key, values in history.items())
    if not valid:
        raise CheckpointError(
            f"{name}: the run's history should map metric names to at most {epoch} finite "
            "numbers each; the file was edited: save again"
        )
    return {key: [float(value) for value in values] for key, values in history.items()}


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Hold a Ctrl-C back until the block is done, then raise it: a checkpoint being
    written is finished first (from the main thread; elsewhere signals do not arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed and callable(previous):  # the handler that was there gets it, late
        previous(signal.SIGINT, pressed[0])
    elif pressed and previous != signal.SIG_IGN:  # the default action: end the process
        signal.raise_signal(signal.SIGINT)


__all__ = ["Checkpoint", "Run", "read_settings", "resume"]
