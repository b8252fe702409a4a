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


def line_data(axes) -> dict[str, tuple[list[float], list[float]]]:
    """Each plotted line of ``axes`` by its legend label: (x values, y values)."""
    return {line.get_label(): (np.asarray(line.get_xdata(), dtype=float).tolist(),
                               np.asarray(line.get_ydata(), dtype=float).tolist())
            for line in axes.lines}


def test_learning_curves_draw_the_history_in_order():
    figure = plots._learning_curves_figure(HISTORY)
    loss_axes, accuracy_axes = figure.axes
    assert (loss_axes.get_title(), accuracy_axes.get_title()) == ("loss", "accuracy")
    epochs = [1.0, 2.0, 3.0, 4.0]
    assert line_data(loss_axes) == {"training": (epochs, HISTORY["loss"]),
                                    "validation": (epochs, HISTORY["val_loss"])}
    assert line_data(accuracy_axes) == {"training": (epochs, HISTORY["accuracy"]),
                                        "validation": (epochs, HISTORY["val_accuracy"])}
    # training only: one line per panel, and a panel with nothing recorded says so
    figure = plots._learning_curves_figure({"loss": [3.0, 2.0, 1.5]})
    loss_axes, accuracy_axes = figure.axes
    assert line_data(loss_axes) == {"training": ([1.0, 2.0, 3.0], [3.0, 2.0, 1.5])}
    assert not accuracy_axes.lines
    assert [text.get_text() for text in accuracy_axes.texts] == ["no accuracy recorded"]


# true class i in row i, predicted class j in column j; not symmetric, so a matrix drawn
# transposed (or read with rows and columns swapped) differs from it
ASYMMETRIC = np.array([[5, 1, 0],
                       [3, 4, 2],
                       [0, 0, 7]])


def cell_texts(axes) -> dict[tuple[int, int], str]:
    """The numbers written in the heat map's cells, by (row, column) = (y, x)."""
    return {(round(text.get_position()[1]), round(text.get_position()[0])): text.get_text()
            for text in axes.texts}


def tick_names(axis) -> list[str]:
    return [label.get_text() for label in axis.get_ticklabels()]


def test_confusion_matrix_draws_rows_as_true_and_columns_as_predicted():
    figure = plots._confusion_matrix_figure(ASYMMETRIC)
    axes = figure.axes[0]
    np.testing.assert_array_equal(axes.images[0].get_array(), ASYMMETRIC)
    # imshow puts row 0 at the top: the rows run down the y axis, the columns along x
    assert axes.images[0].origin == "upper"
    assert axes.get_ylabel() == "true" and axes.get_xlabel() == "predicted"
    assert cell_texts(axes) == {(row, column): str(ASYMMETRIC[row, column])
                                for row in range(3) for column in range(3)}
    assert tick_names(axes.xaxis) == tick_names(axes.yaxis) == ["0", "1", "2"]
    assert axes.get_title() == "confusion matrix (accuracy 0.7273)"  # 16 of 22


def test_confusion_matrix_from_the_metric(tmp_path, backend):
    expected = np.array([0, 1, 2, 2, 1, 0, 2, 1, 1, 0, 0])
    predicted = np.array([0, 1, 2, 1, 1, 0, 2, 0, 1, 2, 2])
    matrix = nn.to_numpy(nn.confusion_matrix(backend.asarray(predicted),
                                             backend.asarray(expected), 3))
    assert matrix.tolist() == [[2, 0, 2], [1, 3, 0], [0, 1, 2]]  # M[true, predicted]
    path = tmp_path / "confusion_matrix.png"
    plots.plot_confusion_matrix(matrix, path, labels=["zero", "one", "two"])
    open_png(path, (300, 300), (1200, 1200))
    # Ten classes and large counts, as on MNIST.
    plots.plot_confusion_matrix(np.diag(np.arange(900, 1000, 10)), tmp_path / "ten.png")
    open_png(tmp_path / "ten.png", (500, 500), (1500, 1500))
    with pytest.raises(ShapeError, match="square"):
        plots.plot_confusion_matrix(np.zeros((2, 3)), tmp_path / "bad.png")
    with pytest.raises(ShapeError, match="one name per class"):
        plots.plot_confusion_matrix(matrix, tmp_path / "bad.png", labels=["a", "b"])
    assert not (tmp_path / "bad.png").exists()


def test_confusion_matrix_with_class_names():
    names = ["T-shirt/top", "Trouser", "Pullover"]
    axes = plots._confusion_matrix_figure(ASYMMETRIC, class_names=names).axes[0]
    assert tick_names(axes.xaxis) == tick_names(axes.yaxis) == names
    np.testing.assert_array_equal(axes.images[0].get_array(), ASYMMETRIC)
    # positional, as before, and under the older keyword
    for figure in (plots._confusion_matrix_figure(ASYMMETRIC, names),
                   plots._confusion_matrix_figure(ASYMMETRIC, labels=names)):
        assert tick_names(figure.axes[0].yaxis) == names
    with pytest.raises(nn.ConfigError, match="not both"):
        plots._confusion_matrix_figure(ASYMMETRIC, names, labels=names)
    with pytest.raises(ShapeError, match="4 class names for a 3x3"):
        plots._confusion_matrix_figure(ASYMMETRIC, class_names=[*names, "Dress"])


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


def test_misclassified_titles_say_true_then_predicted():
    rng = np.random.default_rng(1)
    images = rng.random((7, 64))
    true_labels = np.array([3, 1, 4, 1, 5, 9, 2])
    predicted = np.array([8, 7, 0, 6, 3, 4, 5])
    figure = plots._misclassified_figure(images, true_labels, predicted, max_images=5)
    grid = figure.axes
    assert len(grid) == 6  # 5 images on a 3x2 grid, the last cell empty
    assert [axes.get_title() for axes in grid[:5]] == [
        "true 3 / pred 8", "true 1 / pred 7", "true 4 / pred 0", "true 1 / pred 6",
        "true 5 / pred 3"]
    for index, axes in enumerate(grid[:5]):
        np.testing.assert_array_equal(axes.images[0].get_array(),
                                      images[index].reshape(8, 8))
    assert not grid[5].images and grid[5].get_title() == ""


def test_misclassified_titles_with_class_names():
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot"]
    figure = plots._misclassified_figure(np.zeros((3, 784)), [7, 0, 9], [8, 6, 7],
                                         class_names=names)
    assert [axes.get_title() for axes in figure.axes[:3]] == [
        "true Sneaker / pred Bag", "true T-shirt/top / pred Shirt",
        "true Ankle boot / pred Sneaker"]
    with pytest.raises(nn.DataError, match="label 10 has no class name"):
        plots._misclassified_figure(np.zeros((1, 4)), [10], [1], class_names=names)


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
