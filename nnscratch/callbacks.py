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


def _format_logs(logs: dict[str, float]) -> str:
    return "  ".join(f"{key} {value:.4f}" for key, value in logs.items())


class ProgressBar(Callback):
    """A line per epoch (loss, metrics, seconds) and, with ``per_step=True``, a bar within
    each epoch (tqdm if installed, else a plain one). The bar's loss is read from the
    device at most every ``refresh`` seconds, so it costs no host sync per step."""

    def __init__(self, per_step: bool = True, stream: TextIO | None = None,
                 refresh: float = 0.5, every: int | None = None) -> None:
        self.per_step, self.stream, self.refresh = per_step, stream, refresh
        self.every = every

    def on_train_begin(self, model: Any, info: dict[str, Any]) -> None:
        self.epochs, self.steps = info["epochs"], info["steps"]
        stream = self.stream or sys.stdout
        self._stream = stream
        # Many short epochs (XOR): print about 20 lines, not thousands.
        self._every = self.every or max(1, self.epochs // 20)
        self._bar: Any = None
        self._tty = hasattr(stream, "isatty") and stream.isatty()

    def on_epoch_begin(self, epoch: int) -> None:
        self._start = time.perf_counter()
        self._last_refresh = self._start
        self._epoch = epoch
        if self.per_step and self._shown(epoch):
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            label = f"epoch {epoch + 1}/{self.epochs}"
            if tqdm is not None:
                self._bar = tqdm(total=self.steps, desc=label, leave=False, file=self._stream,
                                 unit="step", dynamic_ncols=True, mininterval=self.refresh)
            else:
                self._bar = _PlainBar(self.steps, label, self._stream, self._tty)

    def on_batch_end(self, step: int, loss: Any) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        now = time.perf_counter()
        if now - self._last_refresh >= self.refresh:
            self._last_refresh = now
            value = float(loss)  # the one host sync, at most every `refresh` seconds
            self._bar.set_postfix_str(f"loss {value:.4f}" if math.isfinite(value)
                                      else f"loss {value} (diverging)")

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._shown(epoch):
            seconds = time.perf_counter() - self._start
            width = len(str(self.epochs))
            print(f"epoch {epoch + 1:>{width}}/{self.epochs}  {_format_logs(logs)}  "
                  f"{seconds:.2f}s", file=self._stream, flush=True)

    def _shown(self, epoch: int) -> bool:
        return epoch % self._every == 0 or epoch == self.epochs - 1


class _PlainBar:
    """A minimal progress bar for when tqdm is not installed."""

    def __init__(self, total: int, label: str, stream: TextIO, tty: bool) -> None:
        self.total, self.label, self.stream, self.tty = total, label, stream, tty
        self.count, self.postfix = 0, ""

    def update(self, count: int) -> None:
        self.count += count

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text
        if self.tty:
            share = self.count / max(self.total, 1)
            bar = "#" * int(30 * share)
            self.stream.write(f"\r{self.label} [{bar:<30}] {self.count}/{self.total} {text}")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()
