"""The digit app's logic, without HTTP: request checks, reading digits, training runs.

The web server (:mod:`nnscratch.app.server`) is a thin layer over these plain classes,
which tests can drive directly:

- :func:`parse_json`, :func:`parse_image`, :func:`parse_train_settings` turn a request
  body into checked values, or raise :class:`RequestError` with the HTTP status and a
  message that says what is wrong;
- :class:`DigitReader` reads a digit with a trained model, preprocessing the picture as
  MNIST's digits were (:func:`nnscratch.images.preprocess_digit`);
- :class:`Trainer` runs one training run at a time in a worker thread, so predictions
  stay responsive; each run records its progress as a list of events
  (:class:`TrainingRun`) that any number of clients can read, and read again from where
  they stopped;
- :class:`AppState` holds the model the draw page uses, and saves it where the server,
  never a client, decides.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import nnscratch as nn
from nnscratch.conv import image_side
from nnscratch.datasets import Dataset, Interface, load
from nnscratch.errors import CheckpointError, NNScratchError
from nnscratch.images import classify

CLASSES = 10
MAX_IMAGE_SIDE = 1024  # pixels, either side of a picture sent to /api/predict
# A 1024 x 1024 picture of integers is at most 4 MiB of JSON ("255," per value).
MAX_BODY_BYTES = 8 * 2**20
VALIDATION_SAMPLES = 5000  # the last 5,000 MNIST training images, as examples/mnist.py
WEIGHT_TILES = 32  # first-layer units shown as 28x28 tiles
MISCLASSIFIED_SHOWN = 36
PROGRESS_INTERVAL = 0.25  # seconds between progress events within an epoch
WEIGHTS_INTERVAL = 1.5  # seconds between weight snapshots within an epoch
DEFAULT_CHECKPOINT = "digits.safetensors"
# The loader's messages in the words of the app's own command line.
APP_INTERFACE = Interface(
    folder="--data", name_folder="--data DIR (python -m nnscratch.app --data DIR)",
    unname_folder="start the app without --data", choose="python examples/mnist.py "
    "--dataset {name} (the app trains on MNIST)", no_download="the app was started with "
    "--no-download", allow_download="start the app without --no-download, with internet access")


class RequestError(Exception):
    """A request the app refuses: ``status`` is the HTTP status, the message says what
    is wrong and how to do it right."""

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields  # more for the client to act on, sent beside "detail"


# -- request bodies -----------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise RequestError(422, f"{name} is not a number: values must be finite numbers")


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``; NaN and Infinity (which Python's json accepts but
    JSON does not) are refused."""
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except RequestError:
        raise
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise RequestError(400, f"the request body is not valid JSON: {err}") from err


def _object_with(payload: Any, allowed: tuple[str, ...], example: str) -> dict[str, Any]:
    """``payload`` as a JSON object holding only ``allowed`` keys."""
    if not isinstance(payload, dict):
        raise RequestError(422, f"the body must be a JSON object such as {example}")
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        known = f"the fields are {', '.join(map(repr, allowed))}" if allowed else \
            "this request takes no fields"
        raise RequestError(422, f"unknown field(s) {', '.join(map(repr, unknown))}; {known}")
    return payload


def no_fields(payload: Any) -> None:
    """Check a body that must be an empty JSON object, ``{}``."""
    _object_with(payload, (), "{}")


def parse_save_request(payload: Any) -> bool:
    """``POST /api/save``'s body, ``{}`` or ``{"overwrite": true}``: whether the client
    confirmed replacing a model that reads the test digits better."""
    payload = _object_with(payload, ("overwrite",), '{"overwrite": true}')
    overwrite = payload.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise RequestError(422, f'"overwrite" must be true or false, got {json.dumps(overwrite)}')
    return overwrite


def parse_image(payload: Any) -> np.ndarray:
    """The picture in ``{"image": [[...], ...]}``: a 2-D list of grey levels 0-255 (ink
    bright on dark), at most ``MAX_IMAGE_SIDE`` on a side, as a float64 array."""
    payload = _object_with(payload, ("image",), '{"image": [[0, 255, ...], ...]}')
    if "image" not in payload:
        raise RequestError(422, 'missing "image": send {"image": [[0, 255, ...], ...]}, '
                                "rows of grey levels 0-255")
    image = payload["image"]
    if not isinstance(image, list) or not all(isinstance(row, list) for row in image):
        raise RequestError(422, '"image" must be a 2-D list: a list of rows, each a list of '
                                "grey levels 0-255")
    if not image or not image[0]:
        raise RequestError(422, '"image" is empty: send at least one row of one pixel')
    height, width = len(image), len(image[0])
    if height > MAX_IMAGE_SIDE or width > MAX_IMAGE_SIDE:
        raise RequestError(413, f"the image is too large ({height} rows of {width}): at most "
                                f"{MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE} pixels; scale it down")
    for number, row in enumerate(image):
        if len(row) != width:
            raise RequestError(422, f"ragged rows: row {number} has {len(row)} values, row 0 "
                                    f"has {width}; every row must have the same length")
    kinds = set(map(type, itertools.chain.from_iterable(image)))
    if list in kinds:
        raise RequestError(422, '"image" must be 2-D, but its rows hold lists (3-D data? send '
                                "grey levels, one number per pixel)")
    if not kinds <= {int, float}:  # bool and str are refused, not read as 1 or parsed
        names = ", ".join(sorted(kind.__name__ for kind in kinds - {int, float}))
        raise RequestError(422, f"grey levels must be numbers 0-255, found {names}")
    try:
        pixels = np.array(image, dtype=np.float64)
    except OverflowError as err:  # an integer beyond float64's range
        raise RequestError(422, "grey levels must lie in 0-255, found a huge number") from err
    if not np.isfinite(pixels).all():
        raise RequestError(422, "grey levels must be finite numbers 0-255, found NaN or "
                                "infinity")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0 or high > 255:
        raise RequestError(422, f"grey levels must lie in 0-255, found values from {low:g} "
                                f"to {high:g}")
    return pixels


@dataclass(frozen=True)
class TrainSettings:
    """What ``POST /api/train`` may set; ``limit`` is the number of training images
    (None: all 55,000 that are not held out for validation)."""

    epochs: int = 3
    hidden: tuple[int, ...] = (128,)
    lr: float = 1e-3
    batch_size: int = 128
    limit: int | None = None
    model: str = "mlp"  # or "cnn": nn.cnn, trained on (N, 1, 28, 28) images


#: (low, high) for each numeric setting; the page shows them as the inputs' bounds.
SETTING_BOUNDS: dict[str, tuple[float, float]] = {
    "epochs": (1, 50),
    "hidden": (1, 1024),  # each layer's width; at most MAX_HIDDEN_LAYERS layers
    "lr": (1e-6, 1.0),
    "batch_size": (1, 4096),
    "limit": (100, 60000 - VALIDATION_SAMPLES),
}
MAX_HIDDEN_LAYERS = 3


def _integer(name: str, value: Any) -> int:
    low, high = SETTING_BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(422, f'"{name}" must be an integer from {low:g} to {high:g}, got '
                                f"{json.dumps(value)}")
    if not low <= value <= high:
        raise RequestError(422, f'"{name}" must be from {low:g} to {high:g}, got {value}')
    return value


def parse_train_settings(payload: Any) -> TrainSettings:
    """The settings in a ``POST /api/train`` body, each optional and checked."""
    fields = tuple(TrainSettings.__dataclass_fields__)
    payload = _object_with(payload, fields, '{"epochs": 3, "hidden": [128], "lr": 0.001, '
                                            '"batch_size": 128, "limit": 10000}')
    settings: dict[str, Any] = {}
    for name in ("epochs", "batch_size"):
        if name in payload:
            settings[name] = _integer(name, payload[name])
    if payload.get("limit") is not None:
        settings["limit"] = _integer("limit", payload["limit"])
    if "hidden" in payload:
        hidden = payload["hidden"]
        if isinstance(hidden, int) and not isinstance(hidden, bool):
            hidden = [hidden]
        if not isinstance(hidden, list) or not 1 <= len(hidden) <= MAX_HIDDEN_LAYERS:
            raise RequestError(422, '"hidden" must be a list of 1 to '
                                    f"{MAX_HIDDEN_LAYERS} layer widths, e.g. [128] or "
                                    f"[256, 128]; got {json.dumps(hidden)}")
        settings["hidden"] = tuple(_integer("hidden", width) for width in hidden)
    if "lr" in payload:
        lr, (low, high) = payload["lr"], SETTING_BOUNDS["lr"]
        if (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr)
                or not low <= lr <= high):
            raise RequestError(422, f'"lr" (the learning rate) must be a number from {low:g} '
                                    f"to {high:g}, got {json.dumps(lr)}")
        settings["lr"] = float(lr)
    if "model" in payload:
        if payload["model"] not in ("mlp", "cnn"):
            raise RequestError(422, '"model" must be "mlp" or "cnn", got '
                                    f"{json.dumps(payload['model'])}")
        settings["model"] = payload["model"]
    return TrainSettings(**settings)


# -- reading digits -----------------------------------------------------------------------


def architecture(model: nn.Sequential) -> str:
    """``784-128-10``: the widths of the inputs and of each Dense layer; for a CNN the
    image and the convolutions' channels first, ``28x28-conv16-conv32-128-10``."""
    side = image_side(model)
    widths = [model.in_features or f"{side}x{side}"] + [
        f"conv{layer.out_channels}" if isinstance(layer, nn.Conv2D) else layer.out_features
        for layer in model.layers if isinstance(layer, (nn.Conv2D, nn.Dense))]
    return "-".join(map(str, widths))


def model_inputs(model: nn.Sequential, rows: np.ndarray) -> np.ndarray:
    """Images as rows of pixels, as ``model`` takes them: (N, 1, side, side) for a CNN."""
    if model.in_features is not None:
        return rows
    side = math.isqrt(rows.shape[1])
    return rows.reshape(-1, 1, side, side)


class DigitReader:
    """A model that reads pictures of digits: ``side``² inputs, 10 outputs (logits);
    ``accuracy``: its test accuracy where known (a model trained here)."""

    def __init__(self, model: nn.Sequential, source: str, accuracy: float | None = None) \
            -> None:
        inputs, outputs = model.in_features, model.out_features
        side = math.isqrt(inputs) if inputs else image_side(model) or 0
        if (inputs and side * side != inputs) or side < 8 or outputs != CLASSES:
            raise CheckpointError(
                f"{source}: the model takes {inputs} inputs and gives {outputs} outputs; the "
                f"digit app needs a square picture's pixels in (e.g. 784 = 28 x 28) and "
                f"{CLASSES} class scores out, as examples/mnist.py trains")
        self.model, self.source, self.side, self.accuracy = model, source, side, accuracy
        # Layers keep what backward needs from their last forward: one forward at a time.
        self._lock = threading.Lock()

    def read(self, image: np.ndarray) -> dict[str, Any]:
        """``{"digit", "probabilities", "input"}`` for a picture of grey levels 0-255.

        Raises ``DataError`` for a blank picture."""
        with self._lock:
            pixels, probabilities = classify(self.model, image, white=255.0)
        return {
            "digit": int(np.argmax(probabilities)),
            "probabilities": [float(p) for p in probabilities],
            "input": np.round(pixels.reshape(self.side, self.side), 5).tolist(),
        }

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "architecture": architecture(self.model),
                "parameters": self.model.parameter_count(), "side": self.side,
                "accuracy": self.accuracy}


# -- training runs ------------------------------------------------------------------------


class TrainingRun:
    """One training run's events, in order; thread-safe.

    Every event is a JSON-ready dict with ``"kind"`` (``start``, ``status``,
    ``progress``, ``epoch``, ``done``, ``error``) and ``"run"`` (the run's number); the
    last one has ``"done": true``. Event ``i`` of run ``n`` has the id ``"n:i"``, which
    a reconnecting client sends back (``Last-Event-ID``) to resume after it. Only the
    newest progress event keeps its weight snapshot, so a long run's memory stays small.
    """

    def __init__(self, number: int, settings: TrainSettings) -> None:
        self.number, self.settings = number, settings
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._last_progress_weights: int | None = None
        self.finished = False
        self.stop_requested = False

    def emit(self, kind: str, **fields: Any) -> None:
        event = {"kind": kind, "run": self.number, **fields}
        with self._lock:
            if self.finished:
                return
            if kind == "progress" and "weights" in event:
                previous = self._last_progress_weights
                if previous is not None:  # a copy: a stream may be writing out the old one
                    self._events[previous] = {key: value for key, value
                                              in self._events[previous].items()
                                              if key != "weights"}
                self._last_progress_weights = len(self._events)
            self._events.append(event)
            self.finished = bool(event.get("done"))

    def events_from(self, index: int) -> list[tuple[str, dict[str, Any]]]:
        """(id, event) for each event from ``index`` on."""
        with self._lock:
            return [(f"{self.number}:{i}", event)
                    for i, event in enumerate(self._events[index:], start=index)]

    def index_after(self, last_event_id: str | None) -> int:
        """Where a client that last saw ``last_event_id`` resumes: after it when it is an
        id of this run, else from the first event."""
        if not last_event_id:
            return 0
        run, _, index = last_event_id.strip().partition(":")
        if run != str(self.number) or not index.isdigit():
            return 0
        return int(index) + 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)


def format_event(event_id: str, event: dict[str, Any]) -> str:
    """One server-sent event: an ``id:`` line, a ``data:`` line of JSON, a blank line."""
    return f"id: {event_id}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


def _finite(value: float) -> float | None:
    """JSON has no NaN: a non-finite number becomes null."""
    value = float(value)
    return value if math.isfinite(value) else None


def _tiles(weights: np.ndarray) -> str:
    """Columns of a first-layer weight matrix as base64 bytes: per tile, 0 maps to 127.5
    and ±max|w| to 0 or 255 (the page colours them blue to red)."""
    scale = np.abs(weights).max(axis=0, keepdims=True)
    scale[scale == 0] = 1.0
    levels = np.round(127.5 + 127.5 * weights / scale).astype(np.uint8)
    return base64.b64encode(np.ascontiguousarray(levels.T).tobytes()).decode("ascii")


def weight_snapshot(model: nn.Sequential) -> dict[str, Any]:
    """The first ``WEIGHT_TILES`` units of the first layer, each as a side x side tile;
    of a convolution, its filters (their first input channel), kh x kw each."""
    first = model.layers[0]
    if isinstance(first, nn.Conv2D):
        count, side = min(WEIGHT_TILES, first.out_channels), first.kernel_size[0]
        filters = nn.to_numpy(first.weight.value)[:count, 0].astype(np.float64)
        return {"count": count, "side": side,
                "data": _tiles(filters.reshape(count, -1)[:, :side * side].T)}
    count = min(WEIGHT_TILES, first.out_features)
    weights = nn.to_numpy(first.weight.value)[:, :count].astype(np.float64)
    return {"count": count, "side": math.isqrt(first.in_features), "data": _tiles(weights)}


class _RunEvents(nn.Callback):
    """Turns fit's hooks into the run's events: progress within the epoch (throttled),
    one event per epoch; stops after the epoch when the run is asked to."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run

    def on_train_begin(self, model: Any, info: dict[str, Any]) -> None:
        self.model, self.epochs, self.steps = model, info["epochs"], info["steps"]

    def on_epoch_begin(self, epoch: int) -> None:
        self.epoch = epoch
        self.started = self.last_progress = self.last_weights = time.perf_counter()

    def on_batch_end(self, step: int, loss: Any) -> None:
        now = time.perf_counter()
        if now - self.last_progress < PROGRESS_INTERVAL:
            return
        self.last_progress = now
        extra: dict[str, Any] = {}
        if now - self.last_weights >= WEIGHTS_INTERVAL:
            self.last_weights = now
            extra["weights"] = weight_snapshot(self.model)
        self.run.emit("progress", epoch=self.epoch + 1, epochs=self.epochs,
                      step=step + 1, steps=self.steps, loss=_finite(loss), **extra)
        if self.run.stop_requested:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.run.emit(
            "epoch", epoch=epoch + 1, epochs=self.epochs,
            loss=_finite(logs["loss"]), accuracy=_finite(logs["accuracy"]),
            val_loss=_finite(logs["val_loss"]), val_accuracy=_finite(logs["val_accuracy"]),
            seconds=round(time.perf_counter() - self.started, 3),
            weights=weight_snapshot(self.model))
        if self.run.stop_requested:
            self.model.stop_training = True


def accuracy_on(model: nn.Sequential, images: np.ndarray, labels: np.ndarray) -> float:
    """The share of ``images`` that ``model`` reads as their ``labels``."""
    predicted = np.argmax(nn.to_numpy(model.predict(images)), axis=1)
    return float(np.mean(predicted == labels))


def misclassified(model: nn.Sequential, images: np.ndarray, labels: np.ndarray,
                  shown: int = MISCLASSIFIED_SHOWN) -> tuple[float, dict[str, Any]]:
    """The test accuracy, and the first ``shown`` test images the model gets wrong (as
    base64 bytes, 0-255), with their true and predicted digits."""
    predicted = np.argmax(nn.to_numpy(model.predict(model_inputs(model, images))), axis=1)
    wrong = nn.metrics.misclassified(predicted, labels, shown)
    pixels = np.round(images[wrong] * 255).astype(np.uint8)
    return float(np.mean(predicted == labels)), {
        "count": int(wrong.size), "side": math.isqrt(images.shape[1]),
        "data": base64.b64encode(pixels.tobytes()).decode("ascii"),
        "labels": labels[wrong].tolist(), "predicted": predicted[wrong].tolist(),
    }


class Trainer:
    """One training run at a time, in a daemon worker thread.

    ``load_data`` returns the MNIST :class:`~nnscratch.datasets.Dataset` (called in the
    worker, once per run; the default loader keeps it after the first call). A finished
    run hands its model to ``on_trained``.
    """

    def __init__(self, load_data: Callable[[], Dataset],
                 on_trained: Callable[[nn.Sequential, str, float], None]) -> None:
        self._load_data, self._on_trained = load_data, on_trained
        self._lock = threading.Lock()
        self._runs = 0
        self.run: TrainingRun | None = None
        self.data: Dataset | None = None  # what the last run trained on (its test set)

    @property
    def busy(self) -> bool:
        return self.run is not None and not self.run.finished

    def start(self, settings: TrainSettings) -> TrainingRun:
        """Start a run in the worker; ``RequestError`` 409 while one is going."""
        with self._lock:
            if self.busy:
                raise RequestError(409, f"training run {self.run.number} is still going: one "
                                        "run at a time; watch it at /api/train/events or "
                                        "stop it with POST /api/train/stop")
            self._runs += 1
            run = self.run = TrainingRun(self._runs, settings)
        threading.Thread(target=self._work, args=(run,), name=f"nnscratch-train-{run.number}",
                         daemon=True).start()
        return run

    def stop(self) -> TrainingRun:
        """Ask the running run to stop after its current epoch."""
        with self._lock:
            if not self.busy:
                raise RequestError(409, "no training run is going")
            self.run.stop_requested = True
            return self.run

    def _work(self, run: TrainingRun) -> None:
        started = time.perf_counter()
        try:
            self._train(run, started)
        except NNScratchError as err:
            run.emit("error", done=True, error=str(err))
        except MemoryError:
            run.emit("error", done=True, error="not enough memory for this network: choose "
                                               "fewer or narrower hidden layers")
        except Exception as err:  # noqa: BLE001 - the stream must end, whatever went wrong
            traceback.print_exc()
            run.emit("error", done=True, error=f"training failed: {type(err).__name__}: {err}")

    def _train(self, run: TrainingRun, started: float) -> None:
        settings = run.settings
        run.emit("status", message="loading MNIST")
        data = self.data = self._load_data()
        x_train, y_train, x_val, y_val = data.split(VALIDATION_SAMPLES, settings.limit)
        nn.seed(0)
        side = math.isqrt(data.x_train.shape[1])
        model = nn.cnn((1, side, side), CLASSES) if settings.model == "cnn" else \
            nn.mlp([data.x_train.shape[1], *settings.hidden, CLASSES])
        x_train, x_val = model_inputs(model, x_train), model_inputs(model, x_val)
        run.emit("start", settings=asdict(settings), backend=str(nn.get_backend()),
                 architecture=architecture(model), parameters=model.parameter_count(),
                 train_samples=int(x_train.shape[0]), val_samples=int(x_val.shape[0]),
                 test_samples=int(data.x_test.shape[0]), data=data.source,
                 weights=weight_snapshot(model))
        events = _RunEvents(run)
        model.fit(x_train, y_train, loss=nn.SoftmaxCrossEntropy(),
                  optimizer=nn.Adam(lr=settings.lr), epochs=settings.epochs,
                  batch_size=min(settings.batch_size, x_train.shape[0]), seed=0,
                  validation_data=(x_val, y_val), callbacks=[events])
        accuracy, wrong = misclassified(model, data.x_test, data.y_test)
        source = (f"trained here (run {run.number}: {architecture(model)}, "
                  f"test accuracy {accuracy:.2%})")
        self._on_trained(model, source, accuracy)
        run.emit("done", done=True, stopped=run.stop_requested, test_accuracy=accuracy,
                 misclassified=wrong, seconds=round(time.perf_counter() - started, 3),
                 model=source)


# -- the app's state ----------------------------------------------------------------------


class AppState:
    """The model the draw page reads with, the trainer, and where a model is saved.

    ``save_path`` is chosen by whoever starts the server (``--model``), never by a
    client; without one, a trained model is saved as ``digits.safetensors`` in the
    working directory, but never over an existing file there (``--model`` names a file
    that may be replaced).
    """

    def __init__(self, reader: DigitReader | None = None, *, save_path: str | Path | None = None,
                 load_data: Callable[[], Dataset] | None = None,
                 data_root: str | Path | None = None, download: bool = True) -> None:
        self.reader = reader
        self.replace_allowed = save_path is not None
        self.save_path = Path(save_path if save_path is not None else DEFAULT_CHECKPOINT)
        self._data_root, self._download = data_root, download
        self._dataset: Dataset | None = None
        self._data_lock = threading.Lock()
        self.trainer = Trainer(load_data or self._mnist, self.adopt)
        self.trained = False  # whether the current model was trained here (Save applies)

    def _mnist(self) -> Dataset:
        with self._data_lock:
            if self._dataset is None:
                self._dataset = load("mnist", self._data_root, download=self._download,
                                     progress=False, interface=APP_INTERFACE)
            return self._dataset

    def adopt(self, model: nn.Sequential, source: str, accuracy: float | None = None) -> None:
        """Make ``model`` (trained here, of test ``accuracy``) the one the draw page reads
        with (one reference swap: a prediction in flight finishes with the model it
        started with)."""
        self.reader = DigitReader(model, source, accuracy)
        self.trained = True

    def read(self, image: np.ndarray) -> dict[str, Any]:
        reader = self.reader
        if reader is None:
            raise RequestError(503, "no model loaded yet: train one on the Train page "
                                    "(/train), or start the app with --model "
                                    "digits.safetensors (python examples/mnist.py --save "
                                    "digits.safetensors makes one)")
        return reader.read(image)

    def save(self, overwrite: bool = False) -> dict[str, Any]:
        """Write the current model to ``save_path``, atomically: ``{"path", "accuracy",
        "replaced"}``, ``replaced`` saying what the file held (``{"accuracy"}``, None if
        unknown) or None for a new file.

        A model of higher test accuracy (measured on the test set of the last run) is
        replaced only with ``overwrite``; otherwise ``RequestError`` 409 with both
        accuracies, for the page to ask."""
        reader = self.reader
        if reader is None:
            raise RequestError(409, "there is no model to save yet: train one first")
        path = self.save_path
        if path.exists() and not self.replace_allowed:
            raise RequestError(409, f"{path.resolve()} exists and was not named with --model: "
                                    "start the app with --model PATH to choose where "
                                    "trained models are saved")
        replaced = {"accuracy": self._accuracy_of(path)} if path.exists() else None
        better = replaced is not None and None not in (replaced["accuracy"], reader.accuracy) \
            and replaced["accuracy"] > reader.accuracy
        if better and not overwrite:
            raise RequestError(
                409, f"{path.resolve()} holds a model of test accuracy "
                     f"{replaced['accuracy']:.2%}, better than this one's {reader.accuracy:.2%}: "
                     "send {\"overwrite\": true} to replace it",
                path=str(path.resolve()), saved_accuracy=replaced["accuracy"],
                accuracy=reader.accuracy)
        try:
            nn.save(reader.model, str(path))
        except (OSError, NNScratchError) as err:
            raise RequestError(500, f"could not save the model to {path.resolve()}: {err}") \
                from err
        return {"path": str(path.resolve()), "accuracy": reader.accuracy, "replaced": replaced}

    def _accuracy_of(self, path: Path) -> float | None:
        """The test accuracy of the model saved at ``path`` on the last run's test set;
        None where there is no such set or the file holds no digit reader."""
        data = self.trainer.data
        if data is None:
            return None
        try:
            model = load_reader(path).model
            if model.in_features != data.x_test.shape[1]:
                return None
            return accuracy_on(model, data.x_test, data.y_test)
        except (OSError, NNScratchError):
            return None

    def status(self) -> dict[str, Any]:
        run = self.trainer.run
        return {
            "backend": str(nn.get_backend()),
            "model": None if self.reader is None else self.reader.describe(),
            "trained": self.trained,
            "training": None if run is None else {"run": run.number, "running": not run.finished},
            "save_path": str(self.save_path.resolve()),
            "defaults": asdict(TrainSettings()),
            "bounds": {**SETTING_BOUNDS, "hidden_layers": MAX_HIDDEN_LAYERS},
        }


def load_reader(path: str | Path) -> DigitReader:
    """The model saved at ``path`` (``nn.load``), checked to read digits."""
    model = nn.load(str(path))
    return DigitReader(model, f"{path}")


__all__ = [
    "MAX_BODY_BYTES", "MAX_IMAGE_SIDE", "AppState", "DigitReader",
    "RequestError", "TrainSettings", "Trainer", "TrainingRun", "accuracy_on", "format_event",
    "load_reader", "no_fields", "parse_image", "parse_json", "parse_save_request",
    "parse_train_settings",
]
