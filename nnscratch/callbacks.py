"""Callbacks: code that ``fit`` runs at the start and end of training, epochs and steps.

``History`` records every epoch's metrics; ``EarlyStopping`` stops when the monitored
metric stops improving; ``ProgressBar`` shows progress within an epoch and a line per
epoch. A step's loss reaches ``on_batch_end`` as a device array: reading it (``float``)
makes the host wait for the device, so callbacks do it only when they must print.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from .backend import namespace
from .progress import Progress


class Callback:
    """Base class: override the hooks you need. Set ``model.stop_training = True`` to stop
    after the current epoch."""

    def on_train_begin(self, model: Any, info: dict[str, Any]) -> None: ...

    def on_epoch_begin(self, epoch: int) -> None: ...

    def on_batch_end(self, step: int, loss: Any) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self) -> None: ...


class History(Callback):
    """Per-epoch metrics: ``history.history["loss"][e]``, ``"accuracy"``, ``"val_loss"``,
    ``"val_accuracy"`` (those that apply), and ``history.epochs``."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epochs: list[int] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.epochs.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __repr__(self) -> str:
        last = {key: values[-1] for key, values in self.history.items()}
        return f"History(epochs={len(self.epochs)}, last={last})"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs; with ``restore_best`` put back the weights of the best epoch at the end.

    ``monitor`` defaults to ``val_loss`` when there is validation data, else ``loss``;
    metrics whose name contains "accuracy" improve upwards, the others downwards.
    """

    def __init__(self, patience: int = 3, monitor: str | None = None, min_delta: float = 0.0,
                 restore_best: bool = True) -> None:
        from .errors import ConfigError

        if not isinstance(patience, int) or patience < 0:
            raise ConfigError(f"patience must be a non-negative integer, got {patience!r}")
        self.patience, self.min_delta = patience, float(min_delta)
        self._monitor_argument = self.monitor = monitor
        self.restore_best = restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None

    def on_train_begin(self, model: Any, info: dict[str, Any]) -> None:
        self.model = model
        self.monitor = self._monitor_argument or ("val_loss" if info.get("validation")
                                                  else "loss")
        self.best, self.best_epoch, self.stopped_epoch = None, None, None
        self._waited, self._best_values = 0, None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            from .errors import ConfigError

            raise ConfigError(
                f"EarlyStopping monitors {self.monitor!r}, which fit does not report; "
                f"it reports: {', '.join(logs)}"
            )
        value = logs[self.monitor]
        upward = "accuracy" in self.monitor
        improved = self.best is None or (
            value > self.best + self.min_delta if upward else value < self.best - self.min_delta
        )
        if improved:
            self.best, self.best_epoch, self._waited = value, epoch, 0
            if self.restore_best:
                self._best_values = [
                    namespace(p.value).asarray(p.value, copy=True)
                    for p in self.model.parameters()
                ]
        else:
            self._waited += 1
            if self._waited > self.patience:
                self.stopped_epoch = epoch
                self.model.stop_training = True

    def on_train_end(self) -> None:
        if self.restore_best and self._best_values is not None:
            for param, value in zip(self.model.parameters(), self._best_values):
                param.value = value


_LOG_NAMES = {"loss": "train loss", "accuracy": "train accuracy",
              "val_loss": "validation loss", "val_accuracy": "validation accuracy"}


def format_logs(logs: dict[str, float]) -> str:
    """``train loss 0.2345  train accuracy 0.9301  validation loss ...``: an epoch's logs
    as a line for people."""
    return "  ".join(f"{_LOG_NAMES.get(key, key)} {value:.4f}" for key, value in logs.items())


class ProgressBar(Callback):
    """A line per epoch on ``stream`` (default stdout): the epoch's metrics and seconds;
    with ``per_step=True`` also a display within each epoch, on stderr
    (``nnscratch.progress``: tqdm, or one line rewritten on a terminal). The step's loss
    is read from the device at most every ``refresh`` seconds, so the display costs no
    host sync per step. With many short epochs (XOR) about 20 lines are printed, or one
    every ``every`` epochs."""

    def __init__(self, per_step: bool = True, stream: TextIO | None = None,
                 refresh: float = 0.5, every: int | None = None) -> None:
        self.per_step, self.stream, self.refresh = per_step, stream, refresh
        self.every = every

    def on_train_begin(self, model: Any, info: dict[str, Any]) -> None:
        self.epochs, self.steps = info["epochs"], info["steps"]
        self._every = self.every or max(1, self.epochs // 20)
        self._bar: Progress | None = None

    def on_epoch_begin(self, epoch: int) -> None:
        self._start = self._last_refresh = time.perf_counter()
        if self.per_step and self._shown(epoch):
            self._bar = Progress(self.steps, f"epoch {epoch + 1}/{self.epochs}", unit="step",
                                 refresh=self.refresh)

    def on_batch_end(self, step: int, loss: Any) -> None:
        if self._bar is None:
            return
        now = time.perf_counter()
        if now - self._last_refresh >= self.refresh:
            self._last_refresh = now
            value = float(loss)  # the one host sync, at most every `refresh` seconds
            self._bar.set_postfix_str(f"loss {value:.4f}" if math.isfinite(value)
                                      else f"loss {value} (diverging)")
        self._bar.update(1)  # drawn with the loss just read

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.close()
        if self._shown(epoch):
            seconds = time.perf_counter() - self._start
            width = len(str(self.epochs))
            print(f"epoch {epoch + 1:>{width}}/{self.epochs}  {format_logs(logs)}  "
                  f"{seconds:.1f}s", file=self.stream or sys.stdout, flush=True)

    def on_train_end(self) -> None:
        self.close()

    def close(self) -> None:
        """End the display within the epoch (also when training stops half-way)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _shown(self, epoch: int) -> bool:
        return epoch % self._every == 0 or epoch == self.epochs - 1
