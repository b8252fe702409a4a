"""The digit app's API (nnscratch.app), through FastAPI's TestClient: every bad input gets
a 4xx that says what is wrong, predictions equal the model's, training runs stream their
events to the end, one run at a time, and a reconnecting client resumes."""

from __future__ import annotations

import base64
import json
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REASON = "fastapi not installed in this session: the app tests run in `nox -s app`"
pytest.importorskip("fastapi", reason=REASON)
pytest.importorskip("httpx", reason=REASON)

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from conftest import app_model as build_model  # noqa: E402
from conftest import softmax  # noqa: E402

import nnscratch as nn  # noqa: E402
from nnscratch.app import __main__ as cli  # noqa: E402
from nnscratch.app.core import (  # noqa: E402
    MAX_BODY_BYTES,
    AppState,
    DigitReader,
    TrainingRun,
    TrainSettings,
)
from nnscratch.app.server import create_app  # noqa: E402
from nnscratch.datasets import Dataset, read_idx  # noqa: E402
from nnscratch.errors import CheckpointError, DataError  # noqa: E402
from nnscratch.images import preprocess_digit  # noqa: E402


def stroke(height: int = 120, width: int = 90) -> list[list[int]]:
    """A picture of a thick vertical bar with a foot: grey levels 0-255 as lists."""
    picture = np.zeros((height, width), dtype=np.int64)
    picture[15:105, 40:52] = 255
    picture[95:105, 25:70] = 200
    return picture.tolist()


def tiny_dataset(train: int = 700, test: int = 200, seed: int = 0) -> Dataset:
    """Random 784-pixel 'images' whose label is the brightest of ten pixel blocks: quick to
    learn a little, no files needed."""
    rng = np.random.default_rng(seed)

    def split(count: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.random((count, 784), dtype=np.float32) * 0.2
        y = rng.integers(0, 10, count)
        for row, label in enumerate(y):
            x[row, label * 78:(label + 1) * 78] += 0.6
        return x, y.astype(np.int64)

    x_train, y_train = split(train)
    x_test, y_test = split(test)
    return Dataset(x_train, y_train, x_test, y_test, name="tiny", source="made by the test")


class GatedData:
    """A data loader that waits until the test opens the gate: a run stays 'going' for as
    long as the test needs."""

    def __init__(self, data: Dataset | None = None, error: Exception | None = None) -> None:
        self.gate, self.data, self.error = threading.Event(), data, error
        self.calls = 0

    def __call__(self) -> Dataset:
        self.calls += 1
        assert self.gate.wait(timeout=60), "the test never opened the gate"
        if self.error is not None:
            raise self.error
        return self.data


def client_for(state: AppState, **options: Any) -> TestClient:
    return TestClient(create_app(state, **options))


@pytest.fixture
def random_model() -> nn.Sequential:
    return build_model(784, (16,), seed=3)


@pytest.fixture
def client(random_model) -> TestClient:
    return client_for(AppState(DigitReader(random_model, "a random network")))


def read_events(client: TestClient, last_event_id: str | None = None
                ) -> list[tuple[str, dict[str, Any]]]:
    """(id, event) for every event of the stream, which must end after a done event."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events, event_id = [], None
    with client.stream("GET", "/api/train/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                events.append((event_id, json.loads(line[6:])))
    assert events and events[-1][1].get("done") is True, events[-1:]
    assert sum(1 for _, event in events if event.get("done")) == 1
    return events


# -- pages --------------------------------------------------------------------------------


def test_both_pages_and_their_files_are_served_from_the_package(client):
    draw, train = client.get("/"), client.get("/train")
    assert draw.status_code == train.status_code == 200
    assert 'id="pad"' in draw.text and 'id="prediction"' in draw.text
    assert 'id="probabilities"' in draw.text and 'id="clear"' in draw.text
    for name in ("hidden", "epochs", "lr", "batch-size", "start", "loss-chart",
                 "accuracy-chart", "weights", "misclassified", "save", "backend"):
        assert f'id="{name}"' in train.text, name
    assert "default-src 'self'" in draw.headers["content-security-policy"]
    for name, kind in (("draw.js", "javascript"), ("train.js", "javascript"),
                       ("common.js", "javascript"), ("app.css", "text/css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    # Nothing is fetched from elsewhere: it works offline (the SVG namespace is a name).
    static = Path(nn.__file__).parent / "app" / "static"
    for path in static.iterdir():
        text = path.read_text().replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"https?://|//cdn|@import", text), path.name
    assert client.get("/static/../core.py").status_code == 404


def test_the_pad_takes_pointer_input_without_scrolling_the_page():
    static = Path(nn.__file__).parent / "app" / "static"
    css = static.joinpath("app.css").read_text()
    assert re.search(r"#pad\s*{[^}]*touch-action:\s*none", css)
    script = static.joinpath("draw.js").read_text()
    for event in ("pointerdown", "pointermove", "pointerup", "pointercancel"):
        assert f'"{event}"' in script


# -- predictions --------------------------------------------------------------------------


def test_a_prediction_is_the_models_reading_of_the_preprocessed_picture(client, random_model):
    image = stroke()
    response = client.post("/api/predict", json={"image": image})
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == {"digit", "probabilities", "input"}
    pixels = preprocess_digit(np.array(image), white=255)
    expected = softmax(nn.to_numpy(random_model.predict(pixels[None, :]))[0])
    np.testing.assert_allclose(result["probabilities"], expected, rtol=1e-6, atol=1e-9)
    assert result["digit"] == int(np.argmax(expected))
    assert sum(result["probabilities"]) == pytest.approx(1.0)
    seen = np.array(result["input"])
    assert seen.shape == (28, 28) and seen.min() >= 0 and seen.max() <= 1
    np.testing.assert_allclose(seen.reshape(-1), pixels, atol=1e-5)


@pytest.fixture(scope="module")
def mnist_model(mnist_path) -> tuple[nn.Sequential, np.ndarray, np.ndarray]:
    """784-64-10 trained for two epochs on 10,000 MNIST images (about a second)."""
    images = read_idx(mnist_path / "train-images-idx3-ubyte.gz")[:10000]
    labels = read_idx(mnist_path / "train-labels-idx1-ubyte.gz")[:10000].astype(np.int64)
    model = build_model(784, (64,))
    model.fit(images.reshape(-1, 784) / np.float32(255), labels,
              loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=2e-3), epochs=2,
              batch_size=64, seed=0)
    test_images = read_idx(mnist_path / "t10k-images-idx3-ubyte.gz")[:40]
    test_labels = read_idx(mnist_path / "t10k-labels-idx1-ubyte.gz")[:40]
    return model, test_images, test_labels


def test_a_trained_model_reads_enlarged_mnist_test_digits(mnist_model):
    model, images, labels = mnist_model
    client = client_for(AppState(DigitReader(model, "trained by the test")))
    read = [client.post("/api/predict", json={"image": np.kron(image, np.ones((3, 3), int))
                                              .tolist()}).json()["digit"]
            for image in images]
    assert np.mean(np.array(read) == labels) >= 0.9, (read, labels.tolist())


def raw(body: bytes | str, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": body, "headers": {"Content-Type": content_type}}


BAD_PREDICTIONS = [
    ("not-json", raw(b"{not json"), 400, "not valid JSON"),
    ("not-utf8", raw(b"\xff\xfe{"), 400, "not valid JSON"),
    ("deeply-nested", raw("[" * 100_000), 400, "not valid JSON"),
    ("text-plain", raw(b'{"image": [[0, 255]]}', "text/plain"), 415, "application/json"),
    ("no-content-type", {"content": b'{"image": [[0, 255]]}'}, 415, "application/json"),
    ("not-an-object", {"json": [[0, 255]]}, 422, "JSON object"),
    ("missing-image", {"json": {}}, 422, 'missing "image"'),
    ("unknown-field", {"json": {"image": [[0, 255]], "side": 28}}, 422, "unknown field"),
    ("string", {"json": {"image": "0,255"}}, 422, "2-D list"),
    ("one-dimensional", {"json": {"image": [0, 255, 0]}}, 422, "2-D list"),
    ("three-dimensional", {"json": {"image": [[[0, 255]], [[0, 0]]]}}, 422, "2-D"),
    ("ragged", {"json": {"image": [[0, 255, 0], [0, 255]]}}, 422, "ragged rows: row 1"),
    ("empty", {"json": {"image": []}}, 422, "empty"),
    ("empty-rows", {"json": {"image": [[], []]}}, 422, "empty"),
    ("above-255", {"json": {"image": [[0, 256]]}}, 422, "0-255.*256"),
    ("negative", {"json": {"image": [[-1, 255]]}}, 422, "0-255.*-1"),
    ("huge-integer", {"json": {"image": [[10**400, 0]]}}, 422, "0-255"),
    ("overflowing-float", raw(b'{"image": [[1e400, 0]]}'), 422, "NaN or infinity"),
    ("nan", raw(b'{"image": [[NaN, 0]]}'), 422, "NaN"),
    ("infinity", raw(b'{"image": [[0, Infinity]]}'), 422, "Infinity"),
    ("strings", {"json": {"image": [["0", "255"]]}}, 422, "numbers 0-255, found str"),
    ("booleans", {"json": {"image": [[True, False]]}}, 422, "found bool"),
    ("nulls", {"json": {"image": [[None, 255]]}}, 422, "found NoneType"),
    ("too-tall", {"json": {"image": [[0]] * 1025}}, 413, "1024 x 1024"),
    ("too-wide", {"json": {"image": [[0] * 1025]}}, 413, "1024 x 1024"),
    ("blank", {"json": {"image": [[0] * 40] * 40}}, 422, "blank"),
    ("blank-white", {"json": {"image": [[255] * 40] * 40}}, 422, "blank"),
    ("too-many-bytes", raw(b'{"image": [[' + b"0," * (MAX_BODY_BYTES // 2) + b'0]]}'), 413,
     "larger than"),
    ("too-many-bytes-chunked", raw(iter([b'{"image": [[', b"0, " * (MAX_BODY_BYTES // 3),
                                         b"0]]}"])), 413, "larger than"),
]


@pytest.mark.parametrize(("request_options", "status", "message"),
                         [case[1:] for case in BAD_PREDICTIONS],
                         ids=[case[0] for case in BAD_PREDICTIONS])
def test_every_bad_picture_gets_a_4xx_that_says_what_is_wrong(client, request_options, status,
                                                              message):
    response = client.post("/api/predict", **request_options)
    assert response.status_code == status, response.text
    assert re.search(message, response.json()["detail"]), response.json()
    # The server is still up and still reads digits.
    assert client.post("/api/predict", json={"image": stroke()}).status_code == 200


def test_the_largest_picture_allowed_is_read(client):
    picture = np.zeros((1024, 1024), dtype=np.int64)
    picture[100:900, 480:560] = 255
    response = client.post("/api/predict", json={"image": picture.tolist()})
    assert response.status_code == 200, response.text


def test_without_a_model_predictions_point_to_the_train_page():
    client = client_for(AppState())
    response = client.post("/api/predict", json={"image": stroke()})
    assert response.status_code == 503
    assert "/train" in response.json()["detail"] and "--model" in response.json()["detail"]
    assert client.get("/api/status").json()["model"] is None


def test_a_model_that_does_not_read_28x28_digits_is_refused():
    with pytest.raises(CheckpointError, match="square picture"):
        DigitReader(nn.Sequential(nn.Dense(100, 3)), "three classes")
    with pytest.raises(CheckpointError, match="square picture"):
        DigitReader(nn.Sequential(nn.Dense(50, 10)), "50 inputs")


def test_requests_naming_another_host_are_refused_on_loopback(random_model):
    state = AppState(DigitReader(random_model, "a random network"))
    app = create_app(state, allowed_hosts=["127.0.0.1", "localhost"])
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/").status_code == 200
    assert TestClient(app, base_url="http://localhost:8000").get("/").status_code == 200
    # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1.
    assert TestClient(app, base_url="http://evil.example").get("/api/status").status_code == 400


# -- training -----------------------------------------------------------------------------


BAD_SETTINGS = [
    ("epochs-zero", {"epochs": 0}, "epochs.*1 to 50"),
    ("epochs-too-many", {"epochs": 51}, "epochs.*1 to 50"),
    ("epochs-string", {"epochs": "3"}, "epochs.*integer"),
    ("epochs-float", {"epochs": 2.5}, "epochs.*integer"),
    ("epochs-bool", {"epochs": True}, "epochs.*integer"),
    ("hidden-empty", {"hidden": []}, "hidden.*1 to 3"),
    ("hidden-four-layers", {"hidden": [8, 8, 8, 8]}, "hidden.*1 to 3"),
    ("hidden-zero", {"hidden": [0]}, "hidden.*1 to 1024"),
    ("hidden-too-wide", {"hidden": [100000]}, "hidden.*1 to 1024"),
    ("hidden-string", {"hidden": "128"}, "hidden.*list"),
    ("lr-zero", {"lr": 0}, "lr.*learning rate"),
    ("lr-negative", {"lr": -0.1}, "lr"),
    ("lr-too-large", {"lr": 5}, "lr"),
    ("lr-string", {"lr": "fast"}, "lr"),
    ("batch-zero", {"batch_size": 0}, "batch_size"),
    ("batch-too-large", {"batch_size": 100000}, "batch_size"),
    ("limit-too-small", {"limit": 10}, "limit.*100 to 55000"),
    ("limit-too-large", {"limit": 60000}, "limit.*100 to 55000"),
    ("unknown", {"epochs": 1, "momentum": 0.9}, "unknown field.*momentum"),
    ("not-an-object", [1, 2], "JSON object"),
]


@pytest.mark.parametrize(("settings", "message"), [case[1:] for case in BAD_SETTINGS],
                         ids=[case[0] for case in BAD_SETTINGS])
def test_bad_training_settings_are_refused_before_anything_starts(settings, message):
    loader = GatedData(tiny_dataset())
    client = client_for(AppState(load_data=loader))
    response = client.post("/api/train", json=settings)
    assert response.status_code == 422, response.text
    assert re.search(message, response.json()["detail"]), response.json()
    assert loader.calls == 0 and client.get("/api/status").json()["training"] is None


def test_nan_learning_rate_and_non_json_bodies_are_refused():
    client = client_for(AppState(load_data=GatedData(tiny_dataset())))
    response = client.post("/api/train", **raw(b'{"lr": NaN}'))
    assert response.status_code == 422 and "NaN" in response.json()["detail"]
    assert client.post("/api/train", **raw(b"epochs=3")).status_code == 400
    assert client.post("/api/train", **raw(b"{}", "text/plain")).status_code == 415


def test_before_any_run_the_event_stream_says_how_to_start_one():
    client = client_for(AppState(load_data=GatedData(tiny_dataset())))
    response = client.get("/api/train/events")
    assert response.status_code == 404 and "POST /api/train" in response.json()["detail"]


def check_epoch_event(event: dict[str, Any], epoch: int, epochs: int) -> None:
    assert event["epoch"] == epoch and event["epochs"] == epochs
    for key in ("loss", "val_loss"):
        assert isinstance(event[key], float) and event[key] > 0
    for key in ("accuracy", "val_accuracy"):
        assert 0 <= event[key] <= 1
    assert event["seconds"] >= 0
    tiles = base64.b64decode(event["weights"]["data"])
    assert len(tiles) == event["weights"]["count"] * 784


def test_a_training_run_streams_each_epoch_and_ends_with_done(random_model):
    data = tiny_dataset()
    loader = GatedData(data)
    loader.gate.set()
    state = AppState(DigitReader(random_model, "a random network"), load_data=loader)
    client = client_for(state)
    response = client.post("/api/train", json={"epochs": 3, "hidden": [24, 12], "lr": 0.01,
                                               "batch_size": 50})
    assert response.status_code == 202 and response.json()["run"] == 1
    events = read_events(client)
    ids = [event_id for event_id, _ in events]
    assert ids == [f"1:{i}" for i in range(len(events))]
    kinds = [event["kind"] for _, event in events]
    assert kinds[:2] == ["status", "start"] and kinds[-1] == "done"
    start = events[1][1]
    assert start["architecture"] == "784-24-12-10" and start["settings"]["hidden"] == [24, 12]
    # 700 images: 630 to train on, 70 held out for validation.
    assert (start["train_samples"], start["val_samples"]) == (630, 70)
    assert start["backend"] == str(nn.get_backend())
    epochs = [event for _, event in events if event["kind"] == "epoch"]
    assert len(epochs) == 3
    for number, event in enumerate(epochs, start=1):
        check_epoch_event(event, number, 3)
    assert epochs[-1]["val_accuracy"] > 0.5  # the blocks are easy: far above chance (0.1)
    done = events[-1][1]
    assert done["stopped"] is False and 0 <= done["test_accuracy"] <= 1
    # The digits it gets wrong really are wrong, by the model the app now reads with.
    wrong = done["misclassified"]
    model = state.reader.model
    predicted = np.argmax(nn.to_numpy(model.predict(data.x_test)), axis=1)
    assert done["test_accuracy"] == pytest.approx(np.mean(predicted == data.y_test))
    assert wrong["count"] == min(36, int(np.sum(predicted != data.y_test)))
    assert len(base64.b64decode(wrong["data"])) == wrong["count"] * 784
    assert all(label != guess for label, guess in zip(wrong["labels"], wrong["predicted"]))
    # The trained model is now the draw page's model.
    status = client.get("/api/status").json()
    assert status["training"] == {"run": 1, "running": False}
    assert "trained here (run 1" in status["model"]["source"]
    assert status["model"]["architecture"] == "784-24-12-10"
    result = client.post("/api/predict", json={"image": stroke()}).json()
    pixels = preprocess_digit(np.array(stroke()), white=255)
    np.testing.assert_allclose(result["probabilities"],
                               softmax(nn.to_numpy(model.predict(pixels[None, :]))[0]),
                               rtol=1e-6, atol=1e-9)


def test_a_one_epoch_run_on_a_small_part_of_mnist(mnist_path, monkeypatch):
    monkeypatch.setenv("NNSCRATCH_DATA", str(mnist_path))
    client = client_for(AppState(download=False))
    assert client.post("/api/train", json={"epochs": 1, "limit": 2000}).status_code == 202
    events = read_events(client)
    epochs = [event for _, event in events if event["kind"] == "epoch"]
    assert len(epochs) == 1
    check_epoch_event(epochs[0], 1, 1)
    assert epochs[0]["val_accuracy"] > 0.6, epochs[0]
    start = next(event for _, event in events if event["kind"] == "start")
    assert (start["train_samples"], start["val_samples"]) == (2000, 5000)
    assert events[-1][1]["test_accuracy"] > 0.6


def test_one_run_at_a_time_409_while_it_goes():
    loader = GatedData(tiny_dataset())
    client = client_for(AppState(load_data=loader))
    assert client.post("/api/train", json={"epochs": 1}).status_code == 202
    refused = client.post("/api/train", json={"epochs": 2})
    assert refused.status_code == 409 and "still going" in refused.json()["detail"]
    assert client.get("/api/status").json()["training"] == {"run": 1, "running": True}
    loader.gate.set()
    read_events(client)
    assert client.post("/api/train", json={"epochs": 1}).status_code == 202  # free again
    assert read_events(client)[0][0] == "2:0"


def test_a_reconnecting_client_resumes_after_the_last_event_it_saw():
    loader = GatedData(tiny_dataset())
    loader.gate.set()
    client = client_for(AppState(load_data=loader))
    client.post("/api/train", json={"epochs": 4})
    everything = read_events(client)
    resumed = read_events(client, last_event_id="1:3")
    assert resumed == everything[4:]
    assert read_events(client, last_event_id=everything[-2][0]) == everything[-1:]
    # An id from another run, or no id at all: from the beginning.
    assert read_events(client, last_event_id="7:3") == everything
    assert read_events(client, last_event_id="garbage") == everything


def test_a_client_that_reconnects_mid_run_gets_the_rest_exactly_once():
    loader = GatedData(tiny_dataset())
    client = client_for(AppState(load_data=loader))
    client.post("/api/train", json={"epochs": 2})
    with client.stream("GET", "/api/train/events") as response:
        lines = response.iter_lines()
        first_id = next(line for line in lines if line.startswith("id: "))[4:]
    assert first_id == "1:0"  # the 'loading' event; the run waits on the gate
    loader.gate.set()
    rest = read_events(client, last_event_id=first_id)
    assert [event_id for event_id, _ in rest] == [f"1:{i}" for i in range(1, len(rest) + 1)]
    assert [event["kind"] for _, event in rest][0] == "start"


@pytest.mark.parametrize(("error", "message"), [
    (DataError("MNIST not found (looked in /nowhere)"), "MNIST not found"),
    (RuntimeError("the disk caught fire"), "RuntimeError: the disk caught fire"),
])
def test_a_failing_run_ends_its_stream_with_an_error_event(error, message, capsys):
    loader = GatedData(error=error)
    loader.gate.set()
    client = client_for(AppState(load_data=loader))
    client.post("/api/train", json={})
    events = read_events(client)
    last = events[-1][1]
    assert last["kind"] == "error" and message in last["error"]
    assert client.get("/api/status").json()["training"]["running"] is False
    assert client.post("/api/train", json={}).status_code == 202  # not stuck
    read_events(client)


def test_a_missing_data_folder_is_named_as_the_command_line_named_it(tmp_path):
    """The server's --data folder is used or refused, and the error speaks of --data."""
    missing = tmp_path / "no-mnist"
    client = client_for(AppState(data_root=missing, download=False))
    client.post("/api/train", json={})
    last = read_events(client)[-1][1]
    assert last["kind"] == "error" and str(missing) in last["error"]
    assert "named by --data" in last["error"] and "root=None" not in last["error"]


def test_a_run_asked_to_stop_ends_after_its_current_epoch():
    loader = GatedData(tiny_dataset())
    client = client_for(AppState(load_data=loader))
    assert client.post("/api/train/stop", json={}).status_code == 409  # nothing to stop
    client.post("/api/train", json={"epochs": 50})
    assert client.post("/api/train/stop", json={}).status_code == 202
    loader.gate.set()
    events = read_events(client)
    assert [event["epoch"] for _, event in events if event["kind"] == "epoch"] == [1]
    assert events[-1][1]["stopped"] is True


def test_only_the_newest_progress_event_keeps_its_weights():
    run = TrainingRun(1, TrainSettings())
    run.emit("progress", step=1, weights={"data": "a"})
    run.emit("progress", step=2)
    being_sent = run.events_from(0)[0][1]  # a stream may be writing it out right now
    run.emit("progress", step=3, weights={"data": "b"})
    assert being_sent["weights"] == {"data": "a"}  # replaced in the list, not changed
    run.emit("epoch", epoch=1, weights={"data": "c"})
    run.emit("done", done=True)
    run.emit("progress", step=4)  # after done: ignored
    events = [event for _, event in run.events_from(0)]
    assert [event.get("weights") for event in events] == [None, None, {"data": "b"},
                                                          {"data": "c"}, None]
    assert run.finished and len(run) == 5


# -- saving -------------------------------------------------------------------------------


def test_saving_writes_where_the_server_was_told_and_nowhere_else(random_model, tmp_path):
    target = tmp_path / "mine.safetensors"
    client = client_for(AppState(DigitReader(random_model, "random"), save_path=target))
    refused = client.post("/api/save", json={"path": str(tmp_path / "elsewhere")})
    assert refused.status_code == 422 and "unknown field(s) 'path'" in refused.json()["detail"]
    response = client.post("/api/save", json={})
    assert response.status_code == 200 and response.json()["path"] == str(target.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.safetensors"]
    restored = nn.load(str(target))
    x = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    np.testing.assert_allclose(nn.to_numpy(restored.predict(x)),
                               nn.to_numpy(random_model.predict(x)), rtol=1e-6)
    assert client.post("/api/save", content=b"").status_code == 415


def test_without_model_path_it_never_replaces_an_existing_file(random_model, tmp_path,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert client_for(AppState()).post("/api/save", json={}).status_code == 409  # no model
    client = client_for(AppState(DigitReader(random_model, "random")))
    first = client.post("/api/save", json={})
    assert first.status_code == 200
    assert first.json()["path"] == str(tmp_path / "digits.safetensors")
    again = client.post("/api/save", json={})
    assert again.status_code == 409 and "--model" in again.json()["detail"]


def _trained_to(accuracy_wanted: str, data: Dataset) -> nn.Sequential:
    """A 784-16-10 network that reads the tiny dataset well ("good") or not ("poor")."""
    model = build_model(784, (16,), seed=5)
    if accuracy_wanted == "good":
        model.fit(data.x_train, data.y_train, loss=nn.SoftmaxCrossEntropy(),
                  optimizer=nn.Adam(lr=1e-2), epochs=15, batch_size=64, seed=0)
    return model


def test_save_says_what_it_replaces_and_asks_before_replacing_a_better_model(tmp_path):
    """--model names a file holding a model better than the one trained in the page:
    saving is refused (409, both test accuracies) until the client confirms with
    {"overwrite": true}; the answer says what was replaced and its accuracy."""
    data = tiny_dataset()
    target = tmp_path / "best.safetensors"
    nn.save(_trained_to("good", data), str(target))
    loader = GatedData(data)
    loader.gate.set()
    state = AppState(save_path=target, load_data=loader)
    client = client_for(state)
    assert client.get("/api/status").json()["trained"] is False
    client.post("/api/train", json={"epochs": 1, "lr": 1e-6, "hidden": [8]})
    done = read_events(client)[-1][1]
    assert done["kind"] == "done" and client.get("/api/status").json()["trained"] is True
    before = target.read_bytes()
    asked = client.post("/api/save", json={})
    assert asked.status_code == 409, asked.text
    answer = asked.json()
    assert answer["path"] == str(target.resolve())
    assert answer["accuracy"] == pytest.approx(done["test_accuracy"])
    assert answer["saved_accuracy"] > answer["accuracy"] + 0.3
    assert f"{answer['saved_accuracy']:.2%}" in answer["detail"] and "overwrite" in \
        answer["detail"]
    assert target.read_bytes() == before  # nothing replaced without the confirmation
    assert client.post("/api/save", json={"overwrite": "yes"}).status_code == 422
    confirmed = client.post("/api/save", json={"overwrite": True})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["replaced"]["accuracy"] == pytest.approx(answer["saved_accuracy"])
    assert nn.load(str(target)).layers[0].out_features == 8  # the page's model now
    # a model no better than the one trained here is replaced without asking, and said so
    again = client.post("/api/save", json={})
    assert again.status_code == 200
    assert again.json()["replaced"]["accuracy"] == pytest.approx(done["test_accuracy"])
    fresh = tmp_path / "new.safetensors"
    state.save_path = fresh
    assert client.post("/api/save", json={}).json()["replaced"] is None  # a new file


def test_an_oversized_body_gets_its_413_over_a_real_connection(random_model):
    """A real uvicorn server on 127.0.0.1 and a real client sending 27 MB: the 413 is
    delivered (the server reads and drops the rest of the body), whether the size is
    declared (Content-Length) or found as the body arrives (chunked)."""
    import http.client
    import socket
    import time

    import httpx
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(
        create_app(AppState(DigitReader(random_model, "random"))), host="127.0.0.1",
        port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        body = b'{"image": [[' + b"255," * (27 * 2**20 // 4) + b"0]]}"
        assert len(body) > 3 * MAX_BODY_BYTES
        headers = {"Content-Type": "application/json", "Connection": "close"}
        # http.client sends the whole body before it reads the answer; with "Connection:
        # close" (as urllib sends it) a server that answers and closes without reading
        # the body resets the connection under it (BrokenPipe), the 413 unread.
        for how in ("declared", "chunked"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                if how == "declared":
                    connection.request("POST", "/api/predict", body=body, headers=headers)
                else:
                    pieces = (body[i:i + 2**20] for i in range(0, len(body), 2**20))
                    connection.request("POST", "/api/predict", body=pieces, headers=headers,
                                       encode_chunked=True)
                answer = connection.getresponse()
                assert answer.status == 413, how
                assert "larger than" in json.loads(answer.read())["detail"], how
            finally:
                connection.close()
        url = f"http://127.0.0.1:{port}/api/predict"
        assert httpx.post(url, json={"image": stroke()}).status_code == 200  # still serves
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_without_data_the_train_page_names_the_apps_flag(tmp_path, monkeypatch):
    """No --data, an empty cache, --no-download: the run's error says --data DIR (the
    app's flag), not the library's root= or download=False; its first line is the
    summary."""
    monkeypatch.delenv("NNSCRATCH_DATA", raising=False)
    monkeypatch.setenv("NNSCRATCH_CACHE", str(tmp_path / "cache"))
    client = client_for(AppState(download=False))
    client.post("/api/train", json={})
    last = read_events(client)[-1][1]
    assert last["kind"] == "error"
    assert "--data DIR" in last["error"] and "--no-download" in last["error"]
    assert "root=" not in last["error"] and "download=False" not in last["error"]


# -- the command line ---------------------------------------------------------------------


@pytest.fixture
def fake_uvicorn(monkeypatch) -> dict[str, Any]:
    """uvicorn.run replaced: records what the app would have been served with."""
    import uvicorn

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app,
                                                                               **options))
    return served


def test_the_command_serves_a_saved_model_on_loopback(random_model, tmp_path, fake_uvicorn,
                                                      capsys):
    path = tmp_path / "digits.safetensors"
    nn.save(random_model, str(path))
    assert cli.main(["--model", str(path), "--port", "8123"]) == 0
    assert (fake_uvicorn["host"], fake_uvicorn["port"]) == ("127.0.0.1", 8123)
    out, err = capsys.readouterr()
    assert "http://127.0.0.1:8123/" in out and "784-16-10" in out and "warning" not in err
    client = TestClient(fake_uvicorn["app"], base_url="http://127.0.0.1:8123")
    assert client.post("/api/predict", json={"image": stroke()}).status_code == 200
    assert TestClient(fake_uvicorn["app"], base_url="http://evil.example").get("/").status_code \
        == 400


def test_the_command_warns_when_listening_beyond_this_machine(fake_uvicorn, capsys):
    assert cli.main(["--host", "0.0.0.0"]) == 0
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err
    assert TestClient(fake_uvicorn["app"], base_url="http://192.0.2.7").get("/").status_code \
        == 200


def test_the_command_explains_what_is_wrong(tmp_path, fake_uvicorn, capsys, monkeypatch):
    assert cli.main(["--model", str(tmp_path)]) == 1
    assert "is not a file" in capsys.readouterr().err
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    assert cli.main(["--model", str(tmp_path / "junk.safetensors")]) == 1
    assert "junk.safetensors" in capsys.readouterr().err
    assert cli.main(["--model", str(tmp_path / "new.safetensors")]) == 0
    assert "no model at" in capsys.readouterr().err
    fake_uvicorn.clear()
    with pytest.raises(SystemExit):
        cli.main(["--port", "70000"])
    monkeypatch.setitem(__import__("sys").modules, "uvicorn", None)
    assert cli.main([]) == 1
    assert "pip install 'nnscratch[app]'" in capsys.readouterr().err
    assert "app" not in fake_uvicorn
