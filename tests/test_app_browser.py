"""The digit app in a real browser: Playwright drives Chromium against a real server
(``python -m nnscratch.app`` in a child process). A mouse stroke and a finger swipe are
read, MNIST test digits painted on the pad are read exactly as ``model.predict`` reads
them, and a training run draws its curves. A failing test keeps a screenshot.

Playwright's own browser download needs the internet, so the tests use the system's
Chromium (``apt-get install chromium``; another one with ``NNSCRATCH_CHROMIUM``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REASON = "{} not installed in this session: the app tests run in `nox -s app`"
for _package in ("fastapi", "uvicorn", "httpx"):
    pytest.importorskip(_package, reason=REASON.format(_package))
sync_api = pytest.importorskip("playwright.sync_api", reason=REASON.format("playwright"))

CHROMIUM = os.environ.get("NNSCRATCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: install it (apt-get install chromium) or point "
                "NNSCRATCH_CHROMIUM at one", allow_module_level=True)

import httpx  # noqa: E402
from conftest import app_model as build_model  # noqa: E402
from conftest import softmax  # noqa: E402

import nnscratch as nn  # noqa: E402
from nnscratch.datasets import read_idx  # noqa: E402
from nnscratch.images import preprocess_digit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BROWSER_ARGS = ["--no-sandbox", "--disable-background-networking",
                "--disable-component-update", "--headless"]
PAD = 280  # the pad's size in canvas pixels: ten per MNIST pixel


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``python -m nnscratch.app`` on a free loopback port, in a child process."""

    def __init__(self, folder: Path, *arguments: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"server-{self.port}.log"
        env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nnscratch.app", "--port", str(self.port),
                 "--no-download", *arguments],
                cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the app exited with {self.process.returncode}:\n"
                            f"{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/api/status", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"the app did not answer within 60 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def digits_model(mnist_path, tmp_path_factory) -> tuple[Path, nn.Sequential]:
    """784-128-10 trained for two epochs on 20,000 MNIST images (a few seconds), good
    enough to read a drawn 1; saved for the server to load."""
    with nn.use_backend("numpy"):
        images = read_idx(mnist_path / "train-images-idx3-ubyte.gz")[:20000]
        labels = read_idx(mnist_path / "train-labels-idx1-ubyte.gz")[:20000]
        model = build_model(784, (128,))
        model.fit(images.reshape(-1, 784) / np.float32(255), labels.astype(np.int64),
                  loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=2e-3), epochs=2,
                  batch_size=64, seed=0)
        path = tmp_path_factory.mktemp("model") / "digits.safetensors"
        nn.save(model, str(path))
    return path, nn.load(str(path))


@pytest.fixture(scope="module")
def draw_server(digits_model, tmp_path_factory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("draw-server"), "--model", str(digits_model[0]))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=BROWSER_ARGS)
        yield browser
        browser.close()


def open_page(browser: Any, request: pytest.FixtureRequest, tmp_path: Path,
              **context_options: Any) -> Iterator[Any]:
    """A fresh page that records its errors and requests, and leaves a screenshot in
    ``tmp_path/screenshots`` when the test fails."""
    context = browser.new_context(**{"viewport": {"width": 1000, "height": 700},
                                     **context_options})
    page = context.new_page()
    page.errors, page.requests = [], []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: page.errors.append(message.text)
            if message.type == "error" else None)
    page.on("request", lambda sent: page.requests.append(sent.url))
    failed_before = request.session.testsfailed
    yield page
    # The call phase has been reported by now: a failure has raised the count.
    if request.session.testsfailed > failed_before:
        folder = tmp_path / "screenshots"
        folder.mkdir(exist_ok=True)
        shot = folder / f"{request.node.name}.png"
        page.screenshot(path=str(shot), full_page=True)
        sys.__stderr__.write(f"\nscreenshot of the failed page: {shot}\n")
    context.close()


@pytest.fixture
def page(browser, request, tmp_path) -> Iterator[Any]:
    yield from open_page(browser, request, tmp_path)


@pytest.fixture
def touch_page(browser, request, tmp_path) -> Iterator[Any]:
    yield from open_page(browser, request, tmp_path, has_touch=True)


def check_clean(page: Any, server: Server, statuses: tuple[int, ...] = ()) -> None:
    """No script errors, and nothing fetched but from the app itself (works offline).
    ``statuses``: HTTP refusals the test provoked (Chromium logs them as errors)."""
    provoked = [f"the server responded with a status of {status} " for status in statuses]
    assert [error for error in page.errors
            if not any(reason in error for reason in provoked)] == []
    outside = [url for url in page.requests
               if not url.startswith(server.url + "/") and not url.startswith("data:")]
    assert outside == []


def expect_prediction(page: Any, digit: str) -> None:
    sync_api.expect(page.locator("#prediction")).to_have_text(digit, timeout=10_000)


def pad_box(page: Any) -> dict[str, float]:
    return page.locator("#pad").bounding_box()


# -- the Draw page ------------------------------------------------------------------------


def test_a_vertical_mouse_stroke_reads_1(page, draw_server):
    page.goto(draw_server.url + "/")
    sync_api.expect(page.locator("#probabilities .bar-row")).to_have_count(10)
    box = pad_box(page)
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 0.15 * box["height"])
    page.mouse.down()
    for step in range(1, 31):
        page.mouse.move(x, box["y"] + (0.15 + 0.7 * step / 30) * box["height"])
        page.wait_for_timeout(25)  # about 0.75 s of drawing: read while drawing, too
    page.mouse.up()
    expect_prediction(page, "1")
    sync_api.expect(page.locator("#probabilities .bar-row.top")).to_have_attribute(
        "data-digit", "1")
    assert page.locator("#pad").get_attribute("data-last-pointer") == "mouse"
    predictions = [url for url in page.requests if url.endswith("/api/predict")]
    assert len(predictions) >= 2  # at least one while drawing, and one at the end
    # The 28x28 input the network saw is drawn: a thin vertical bar.
    seen = np.array(page.evaluate("""() => {
        const data = document.getElementById('input').getContext('2d')
            .getImageData(0, 0, 28, 28).data;
        return Array.from({length: 784}, (_, i) => data[4 * i]); }""")).reshape(28, 28)
    columns = np.flatnonzero(seen.max(axis=0) > 50)
    rows = np.flatnonzero(seen.max(axis=1) > 50)
    assert len(rows) >= 18 and len(columns) <= 6, (rows, columns)

    page.click("#clear")
    sync_api.expect(page.locator("#prediction")).to_have_text("")
    sync_api.expect(page.locator("#probabilities .bar-row.top")).to_have_count(0)
    assert page.evaluate("() => window.digitApp.lastResult") is None
    check_clean(page, draw_server)


PAINT = """([pixels, scale]) => {
    const pad = document.getElementById('pad');
    const context = pad.getContext('2d');
    context.fillStyle = '#000';
    context.fillRect(0, 0, pad.width, pad.height);
    pixels.forEach((value, i) => {
        if (value === 0) return;
        context.fillStyle = `rgb(${value}, ${value}, ${value})`;
        context.fillRect((i % 28) * scale, Math.floor(i / 28) * scale, scale, scale);
    });
    const data = context.getImageData(0, 0, pad.width, pad.height).data;
    return Array.from({length: pad.width * pad.height}, (_, i) => data[4 * i]);
}"""


def test_mnist_digits_painted_on_the_pad_are_read_as_model_predict_reads_them(
        page, draw_server, digits_model, mnist_path):
    _, model = digits_model
    images = read_idx(mnist_path / "t10k-images-idx3-ubyte.gz")[:12]
    labels = read_idx(mnist_path / "t10k-labels-idx1-ubyte.gz")[:12]
    page.goto(draw_server.url + "/")
    answers = []
    for image in images:
        enlarged = np.kron(image, np.ones((PAD // 28, PAD // 28), dtype=np.uint8))
        painted = page.evaluate(PAINT, [image.reshape(-1).tolist(), PAD // 28])
        np.testing.assert_array_equal(np.array(painted).reshape(PAD, PAD), enlarged)
        result = page.evaluate("() => window.digitApp.predict()")

        pixels = preprocess_digit(enlarged, white=255)
        expected = softmax(nn.to_numpy(model.predict(pixels[None, :]))[0])
        assert result["digit"] == int(np.argmax(expected))
        np.testing.assert_allclose(result["probabilities"], expected, atol=1e-6)
        np.testing.assert_allclose(np.array(result["input"]).reshape(-1), pixels, atol=1e-5)
        expect_prediction(page, str(result["digit"]))
        answers.append(result["digit"])
    assert np.mean(np.array(answers) == labels) >= 0.9, (answers, labels.tolist())
    check_clean(page, draw_server)


def test_a_finger_swipe_on_a_touch_screen_reads_1(touch_page, draw_server):
    page = touch_page
    page.goto(draw_server.url + "/")
    sync_api.expect(page.locator("#probabilities .bar-row")).to_have_count(10)
    box = pad_box(page)
    x = box["x"] + box["width"] / 2
    touch = page.context.new_cdp_session(page)

    def send(kind: str, y: float | None = None) -> None:
        points = [] if y is None else [{"x": x, "y": box["y"] + y * box["height"]}]
        touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

    send("touchStart", 0.2)
    for step in range(1, 21):
        send("touchMove", 0.2 + 0.6 * step / 20)
        page.wait_for_timeout(15)
    send("touchEnd")
    expect_prediction(page, "1")
    assert page.locator("#pad").get_attribute("data-last-pointer") == "touch"
    assert page.evaluate("() => window.scrollY") == 0  # the swipe drew, it did not scroll
    check_clean(page, draw_server)


def train_in_page(page: Any, **fields: str) -> None:
    """Fill the Train page's form (field id: value), press Start, wait for the run's end."""
    for field, value in fields.items():
        page.fill(f"#{field}", value)
    page.click("#start")
    sync_api.expect(page.locator("#state")).to_have_attribute("data-state", "done",
                                                              timeout=60_000)


# -- the Train page -----------------------------------------------------------------------


def test_a_one_epoch_run_draws_its_curves_and_becomes_the_draw_pages_model(
        page, mnist_path, tmp_path):
    server = Server(tmp_path, "--data", str(mnist_path))
    try:
        page.goto(server.url + "/")
        sync_api.expect(page.locator("#message")).to_contain_text("No model yet")
        page.click("nav >> text=Train")
        sync_api.expect(page.locator("#backend")).to_have_text(str(nn.get_backend()))
        train_in_page(page, hidden="32", epochs="1", limit="2000")
        # One epoch: a training and a validation point on each chart.
        for chart in ("#loss-chart", "#accuracy-chart"):
            sync_api.expect(page.locator(f"{chart} circle.point.train")).to_have_count(1)
            sync_api.expect(page.locator(f"{chart} circle.point.val")).to_have_count(1)
        titles = page.locator("#accuracy-chart circle.point title").all_text_contents()
        assert all("%" in title for title in titles), titles
        sync_api.expect(page.locator("#weights canvas")).to_have_count(32)
        assert page.locator("#misclassified .tile").count() > 0
        sync_api.expect(page.locator("#test-accuracy")).to_contain_text("test accuracy")

        page.click("#save")
        sync_api.expect(page.locator("#save-result")).to_contain_text("saved to")
        assert (tmp_path / "digits.safetensors").is_file()
        page.click("nav >> text=Draw")
        sync_api.expect(page.locator("#model")).to_contain_text("trained here (run 1")
        check_clean(page, server)
    finally:
        server.stop()


# -- a phone, errors, saving, the form across reloads --------------------------------------

PHONE = {"width": 390, "height": 844}


def page_width(page: Any) -> int:
    return page.evaluate("document.scrollingElement.scrollWidth")


def boxes_overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def check_chart_boxes_fit_their_charts(page: Any) -> None:
    """Each chart's box is as tall as its chart and caption, not stretched."""
    for chart in ("#loss-chart", "#accuracy-chart"):
        figure = page.locator(f"figure:has({chart})").bounding_box()
        svg = page.locator(chart).bounding_box()
        assert figure["height"] < svg["height"] + 60, (chart, figure, svg)


def test_both_pages_fit_a_phone_and_an_error_keeps_the_page_in_shape(browser, request,
                                                                     digits_model, tmp_path):
    """390 px wide, a model path long enough to push the header (it did: 575 px), no
    MNIST to train on: no sideways scroll on either page, before or after the run's
    error; the error's first line shows and the rest waits behind "details"; the chart
    boxes keep their charts' height; the form's values survive a reload."""
    deep = tmp_path / ("a-rather-long-folder-name-for-models-" * 3) / "digits.safetensors"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(digits_model[0].read_bytes())  # the header shows its path
    server = Server(tmp_path, "--model", str(deep),
                    env={"NNSCRATCH_CACHE": str(tmp_path / "empty-cache"), "NNSCRATCH_DATA": ""})
    pages = open_page(browser, request, tmp_path, viewport=PHONE)
    page = next(pages)
    try:
        page.goto(server.url + "/")
        sync_api.expect(page.locator("#model")).to_contain_text(str(deep))
        assert page_width(page) <= PHONE["width"]
        page.goto(server.url + "/train")
        sync_api.expect(page.locator("#backend")).not_to_have_text("…")
        assert page_width(page) <= PHONE["width"]
        check_chart_boxes_fit_their_charts(page)
        page.fill("#epochs", "7")
        page.fill("#hidden", "64,32")
        page.reload()
        sync_api.expect(page.locator("#backend")).not_to_have_text("…")
        assert page.input_value("#epochs") == "7" and page.input_value("#hidden") == "64,32"
        page.click("#start")
        state = page.locator("#state")
        sync_api.expect(state).to_have_attribute("data-state", "error", timeout=30_000)
        sync_api.expect(state).to_contain_text("--data DIR")
        assert "root=" not in state.inner_text()
        details = state.locator("details")
        sync_api.expect(details).to_have_count(1)
        assert details.get_attribute("open") is None  # the rest on demand
        if os.environ.get("NNSCRATCH_SCREENSHOTS"):  # to look at the page oneself
            page.screenshot(path=os.path.join(os.environ["NNSCRATCH_SCREENSHOTS"],
                                              "train-390px-error.png"), full_page=True)
        assert page_width(page) <= PHONE["width"]
        check_chart_boxes_fit_their_charts(page)
        assert page.locator("#save").is_disabled()  # nothing trained here
        check_clean(page, server)
    finally:
        next(pages, None)
        server.stop()


def test_save_asks_before_replacing_a_better_model_and_the_form_states_are_right(
        page, digits_model, mnist_path, tmp_path):
    """--model names a good model; the page trains a poor one (1 epoch at a tiny rate).
    Save asks (confirm), naming both accuracies; declined, the file is kept; accepted,
    it says what it replaced. A rejected Start ("abc" as hidden layers) echoes what was
    typed and leaves Save enabled. After a reload, the form shows the charts' run."""
    best = tmp_path / "best.safetensors"
    best.write_bytes(digits_model[0].read_bytes())
    server = Server(tmp_path, "--model", str(best), "--data", str(mnist_path))
    dialogs: list[str] = []
    try:
        page.goto(server.url + "/train")
        sync_api.expect(page.locator("#backend")).to_have_text(str(nn.get_backend()))
        train_in_page(page, hidden="16", epochs="1", limit="500", lr="0.000001")
        save_button = page.locator("#save")
        one_line = save_button.bounding_box()["height"]
        before = best.read_bytes()

        def decline(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", decline)
        page.click("#save")
        sync_api.expect(page.locator("#save-result")).to_contain_text("not saved")
        assert best.read_bytes() == before
        assert len(dialogs) == 1 and str(best) in dialogs[0] and "better than" in dialogs[0]
        assert dialogs[0].count("%") == 2

        def accept(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        page.click("#save")
        result = page.locator("#save-result")
        sync_api.expect(result).to_contain_text("replacing a model of test accuracy")
        assert best.read_bytes() != before and nn.load(str(best)).layers[0].out_features == 16
        # the button keeps one line, and the message stays clear of the charts
        assert save_button.bounding_box()["height"] == one_line
        for chart in ("#loss-chart", "#accuracy-chart"):
            assert not boxes_overlap(result.bounding_box(),
                                     page.locator(f"figure:has({chart})").bounding_box())
        # a rejected Start: what was typed is echoed, and Save stays enabled
        page.fill("#hidden", "abc")
        page.click("#start")
        sync_api.expect(page.locator("#state")).to_contain_text('"abc"')
        assert "null" not in page.locator("#state").inner_text()
        sync_api.expect(save_button).to_be_enabled()
        # a reload shows the last run's charts, and the form shows that run's settings
        page.reload()
        sync_api.expect(page.locator("#loss-chart circle.point.train")).to_have_count(1)
        assert page.input_value("#hidden") == "16" and page.input_value("#epochs") == "1"
        assert page.input_value("#limit") == "500"
        sync_api.expect(save_button).to_be_enabled()
        check_clean(page, server, statuses=(409,))  # the Save that asked first
    finally:
        server.stop()
