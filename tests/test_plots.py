"""nnscratch.plots: learning curves, confusion matrix and misclassified digits as PNGs,
and a clear error where matplotlib is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import plots
from nnscratch.errors import ShapeError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

HISTORY = {
    "loss": [0.9, 0.4, 0.25, 0.2],
    "accuracy": [0.7, 0.88, 0.93, 0.95],
    "val_loss": [0.5, 0.35, 0.3, 0.29],
    "val_accuracy": [0.85, 0.9, 0.91, 0.92],
}


@pytest.fixture(autouse=True)
def matplotlib_installed() -> None:
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib (the examples extra)")


def open_png(path, min_size: tuple[int, int], max_size: tuple[int, int]) -> object:
    """Check ``path`` is a complete PNG whose size lies in the given range."""
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and data.endswith(b"IEND\xaeB`\x82")
    Image = pytest.importorskip("PIL.Image", reason="checking the PNGs needs Pillow")
    with Image.open(path) as image:
        image.load()
        width, height = image.size
    assert min_size[0] <= width <= max_size[0] and min_size[1] <= height <= max_size[1], \
        image.size
    return image


def test_learning_curves(tmp_path):
    path = tmp_path / "curves" / "learning_curves.png"  # the folder is created
    plots.plot_learning_curves(HISTORY, path)
    open_png(path, (600, 250), (1600, 700))
    # A History works as well as its dict, and training-only curves too.
    history = nn.History()
    for epoch, loss in enumerate([1.0, 0.5]):
        history.on_epoch_end(epoch, {"loss": loss, "accuracy": 0.5 + epoch / 4})
    plots.plot_learning_curves(history, tmp_path / "history.png")
    open_png(tmp_path / "history.png", (600, 250), (1600, 700))
    with pytest.raises(ShapeError, match="'loss'"):
        plots.plot_learning_curves({"accuracy": [0.5]}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_confusion_matrix_from_the_metric(tmp_path):
    expected = np.array([0, 1, 2, 2, 1, 0, 2, 1, 1, 0])
    predicted = np.array([0, 1, 2, 1, 1, 0, 2, 2, 1, 0])
    matrix = nn.to_numpy(nn.confusion_matrix(nn.get_backend().asarray(predicted),
                                             nn.get_backend().asarray(expected), 3))
    assert matrix.tolist() == [[3, 0, 0], [0, 3, 1], [0, 1, 2]]
    path = tmp_path / "confusion_matrix.png"
    plots.plot_confusion_matrix(matrix, path, labels=["zero", "one", "two"])
    open_png(path, (300, 300), (1200, 1200))
    # Ten classes and large counts, as on MNIST.
    plots.plot_confusion_matrix(np.diag(np.arange(900, 1000, 10)), tmp_path / "ten.png")
    open_png(tmp_path / "ten.png", (500, 500), (1500, 1500))
    with pytest.raises(ShapeError, match="square"):
        plots.plot_confusion_matrix(np.zeros((2, 3)), tmp_path / "bad.png")
    with pytest.raises(ShapeError, match="labels"):
        plots.plot_confusion_matrix(matrix, tmp_path / "bad.png", labels=["a", "b"])


@pytest.mark.parametrize("side", [28, 8])
def test_misclassified_grid(tmp_path, side):
    rng = np.random.default_rng(0)
    images = rng.random((50, side * side)).astype(np.float32)
    true_labels = rng.integers(0, 10, 50)
    predicted = (true_labels + 1) % 10
    path = tmp_path / "misclassified.png"
    plots.plot_misclassified(images, true_labels, predicted, path)  # 36 of the 50: 6x6
    open_png(path, (600, 700), (1200, 1300))
    plots.plot_misclassified(images[:5].reshape(5, side, side), true_labels[:5],
                             predicted[:5], tmp_path / "five.png", max_images=4)
    open_png(tmp_path / "five.png", (200, 200), (500, 500))


def test_misclassified_with_none_and_bad_shapes(tmp_path):
    plots.plot_misclassified(np.zeros((0, 784)), [], [], tmp_path / "none.png")
    open_png(tmp_path / "none.png", (200, 100), (600, 300))
    with pytest.raises(ShapeError, match="square number"):
        plots.plot_misclassified(np.zeros((2, 10)), [1, 2], [2, 1], tmp_path / "bad.png")
    with pytest.raises(ShapeError, match="must match"):
        plots.plot_misclassified(np.zeros((2, 784)), [1], [2, 1], tmp_path / "bad.png")


def test_missing_matplotlib_names_the_install_command(tmp_path, monkeypatch):
    for module in [name for name in sys.modules
                   if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path = tmp_path / "learning_curves.png"
    with pytest.raises(plots.PlottingUnavailableError, match="pip install matplotlib") as error:
        plots.plot_learning_curves(HISTORY, path)
    assert "nnscratch[examples]" in str(error.value)
    assert isinstance(error.value, ImportError) and isinstance(error.value, nn.NNScratchError)
    assert not path.exists()
