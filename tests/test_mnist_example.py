"""examples/mnist.py, the digit recognizer, called in-process with tiny settings: the
output a user sees, the loud fallback to the 8x8 digits when MNIST is unavailable,
--min-accuracy, --plots, and --predict on a picture of a digit."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import load_mnist_example

import nnscratch as nn
import nnscratch.datasets.mnist as mnist_data
from nnscratch.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "mnist.py"
TEST_ACCURACY_LINE = re.compile(r"^test accuracy: (0\.\d{4})$")
EPOCH_LINE = re.compile(
    r"^epoch 1/1  train loss \d+\.\d{4}  train accuracy 0\.\d{4}  "
    r"validation loss \d+\.\d{4}  validation accuracy (0\.\d{4})  \d+\.\ds$"
)

pytest.importorskip("safetensors", reason="checkpoints need the optional package safetensors")


mnist = load_mnist_example()


def run_main(*argv: str) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured (usable in module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = mnist.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def reported_accuracy(output: str) -> float:
    match = TEST_ACCURACY_LINE.match(output.splitlines()[-1])
    assert match, f"the last line is not 'test accuracy: 0.XXXX':\n{output}"
    return float(match.group(1))


# -- training on real MNIST ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(mnist_path, tmp_path_factory) -> tuple[Path, str]:
    """One epoch on 5,000 MNIST images with a 784-64-10 network: its checkpoint and output."""
    checkpoint = tmp_path_factory.mktemp("mnist") / "small.safetensors"
    code, out, err = run_main("--data", str(mnist_path), "--limit", "5000", "--epochs", "1",
                              "--hidden", "64", "--batch-size", "64", "--save",
                              str(checkpoint), "--quiet")
    assert code == 0, out + err
    return checkpoint, out


def test_training_on_mnist_prints_epoch_lines_and_the_test_accuracy_last(trained):
    checkpoint, out = trained
    lines = out.splitlines()
    assert lines[0].startswith("mnist: 5,000 training, 5,000 validation, 10,000 test samples")
    assert f"backend {nn.get_backend().name}" in out and "784-64-10" in out
    epoch_lines = [line for line in lines if line.startswith("epoch")]
    assert len(epoch_lines) == 1
    match = EPOCH_LINE.match(epoch_lines[0])
    assert match, epoch_lines[0]
    assert float(match.group(1)) > 0.8
    assert reported_accuracy(out) > 0.8  # chance is 0.1
    assert checkpoint.is_file() and f"saved the model to {checkpoint}" in out
    assert mnist.read_checkpoint_settings(checkpoint)[1] == 1


def test_min_accuracy_fails_the_run_below_the_target(trained, mnist_path, tmp_path):
    checkpoint, out = trained
    accuracy = reported_accuracy(out)
    # Resuming a finished run trains nothing: it evaluates the saved model again.
    code, out, err = run_main("--data", str(mnist_path), "--resume", str(checkpoint),
                              "--save", str(tmp_path / "a.st"), "--min-accuracy", "0.999")
    assert code == 1
    assert reported_accuracy(out) == accuracy
    assert f"test accuracy {accuracy:.4f} is below --min-accuracy 0.999" in err
    code, out, err = run_main("--data", str(mnist_path), "--resume", str(checkpoint),
                              "--save", str(tmp_path / "b.st"), "--min-accuracy", "0.5")
    assert code == 0, err
    assert not re.search(r"^epoch ", out, re.M)  # nothing left to train


# -- MNIST unavailable: the loud fallback ----------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """No MNIST anywhere (an empty --data folder, cache and NNSCRATCH_DATA) and every
    download failing, without touching the network."""
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    monkeypatch.setenv("NNSCRATCH_DATA", str(empty))
    monkeypatch.setenv("NNSCRATCH_CACHE", str(tmp_path / "cache"))

    def no_network(urls, dest, *args, **kwargs):
        raise DataError(f"could not download {Path(dest).name} (network disabled in tests)")

    monkeypatch.setattr(mnist_data, "download_file", no_network)
    return empty


DIGITS_QUICK = ["--epochs", "3", "--hidden", "32", "--batch-size", "32", "--lr", "0.01",
                "--quiet"]


def test_without_mnist_it_says_so_loudly_and_trains_on_the_8x8_digits(offline, tmp_path):
    pytest.importorskip("sklearn", reason="the 8x8 digits need scikit-learn")
    code, out, err = run_main("--data", str(offline), *DIGITS_QUICK,
                              "--save", str(tmp_path / "d.safetensors"))
    assert code == 0, err
    assert "MNIST IS NOT AVAILABLE" in err and "8x8 scikit-learn digits" in err
    assert err.count("!" * 78) == 2  # framed by two rules
    assert str(offline) in err and "train-images-idx3-ubyte.gz" in err  # where and what
    assert "network disabled in tests" in err  # why
    assert out.startswith("digits-8x8: ")
    assert "64-32-10" in out
    assert reported_accuracy(out) > 0.85


def test_the_fallback_never_passes_min_accuracy(offline, tmp_path):
    pytest.importorskip("sklearn", reason="the 8x8 digits need scikit-learn")
    code, out, err = run_main("--data", str(offline), "--no-download", *DIGITS_QUICK,
                              "--save", str(tmp_path / "d.safetensors"), "--min-accuracy", "0.1")
    assert code == 1
    assert "MNIST IS NOT AVAILABLE" in err and "download=False" in err
    assert "--min-accuracy 0.1 is a target for MNIST" in err
    reported_accuracy(out)  # it trained and reported, then failed on purpose


def test_without_mnist_and_without_scikit_learn_it_fails_with_both_reasons(offline, monkeypatch,
                                                                          tmp_path):
    def no_sklearn(*args, **kwargs):
        raise DataError("load_digits needs scikit-learn, which ships the 8x8 digits: "
                        "pip install scikit-learn")

    monkeypatch.setattr(mnist, "load_digits", no_sklearn)
    code, out, err = run_main("--data", str(offline), *DIGITS_QUICK,
                              "--save", str(tmp_path / "d.safetensors"))
    assert code == 1
    assert "MNIST is unavailable" in err and "network disabled in tests" in err
    assert "pip install scikit-learn" in err
    assert "test accuracy" not in out and not (tmp_path / "d.safetensors").exists()


def test_plots_flag_writes_the_three_pictures(tmp_path):
    pytest.importorskip("sklearn", reason="the 8x8 digits need scikit-learn")
    pytest.importorskip("matplotlib", reason="--plots needs matplotlib")
    code, out, err = run_main("--dataset", "digits", *DIGITS_QUICK, "--plots",
                              str(tmp_path / "plots"), "--save", str(tmp_path / "d.st"))
    assert code == 0, err
    assert "MNIST IS NOT AVAILABLE" not in err  # asked for the digits: no fallback banner
    for name in ("learning_curves.png", "confusion_matrix.png", "misclassified.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), name
    reported_accuracy(out)


def test_bad_flags_are_refused(capsys):
    for argv in (["--hidden", "64,0"], ["--epochs", "0"], ["--lr", "-1"],
                 ["--min-accuracy", "2"], ["--backend", "jax"]):
        with pytest.raises(SystemExit) as exit_info:
            mnist.main(argv)
        assert exit_info.value.code == 2, argv
    assert "--hidden takes positive layer widths" in capsys.readouterr().err


# -- reading a user's own digit --------------------------------------------------------------


def draw_seven(size: tuple[int, int] = (240, 320), ink: int = 0, paper: int = 255,
               mode: str = "L") -> Any:
    """A thick, off-centre "7" drawn with Pillow, as someone might photograph one."""
    Image = pytest.importorskip("PIL.Image", reason="--predict needs Pillow")
    from PIL import ImageDraw

    image = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(image)
    draw.line([(40, 60), (150, 60), (90, 280)], fill=ink, width=18)
    return image


def test_preprocessing_centres_a_drawn_digit_as_mnist_does():
    pixels = mnist.preprocess_digit_image(draw_seven())
    assert pixels.shape == (784,) and pixels.dtype == np.float32
    assert pixels.min() == 0.0 and pixels.max() == pytest.approx(1.0, abs=0.02)
    image = pixels.reshape(28, 28)
    rows = np.flatnonzero(image.max(axis=1) > 0.05)
    columns = np.flatnonzero(image.max(axis=0) > 0.05)
    height, width = rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1
    assert max(height, width) in (20, 21) and width < height  # longer side 20, aspect kept
    index = np.arange(28)
    row_centre = image.sum(axis=1) @ index / image.sum()
    column_centre = image.sum(axis=0) @ index / image.sum()
    assert abs(row_centre - 14) <= 0.6 and abs(column_centre - 14) <= 0.6
    # Black paper around white ink (a 7's top bar pulls its centre up, so its foot may
    # reach the bottom edge, as in MNIST).
    assert image[:2].max() == 0 and image[:, :3].max() == 0 and image[:, -3:].max() == 0


def test_preprocessing_handles_dark_paper_colour_and_transparency():
    reference = mnist.preprocess_digit_image(draw_seven())
    white_on_black = mnist.preprocess_digit_image(draw_seven(ink=255, paper=0))
    np.testing.assert_allclose(white_on_black, reference, atol=1e-6)
    coloured = mnist.preprocess_digit_image(draw_seven(ink=(20, 20, 90), paper=(250, 245, 230),
                                                       mode="RGB"))
    assert np.corrcoef(coloured, reference)[0, 1] > 0.99
    transparent = mnist.preprocess_digit_image(draw_seven(ink=(0, 0, 0, 255),
                                                          paper=(0, 0, 0, 0), mode="RGBA"))
    assert np.corrcoef(transparent, reference)[0, 1] > 0.99
    with pytest.raises(DataError, match="blank"):
        mnist.preprocess_digit_image(draw_seven(ink=255, paper=255))


def upscaled_black_on_white(pixels: np.ndarray) -> Any:
    """An MNIST image as a user's scan: 200x200, black ink on white paper."""
    Image = pytest.importorskip("PIL.Image", reason="--predict needs Pillow")
    grey = np.round(255 - pixels.reshape(28, 28) * 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").resize((200, 200), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def mnist_test_set(mnist_path) -> tuple[np.ndarray, np.ndarray]:
    dataset = mnist_data.load_mnist(mnist_path, download=False, progress=False)
    return dataset.x_test, dataset.y_test


def test_preprocessing_recovers_mnist_images_from_large_inverted_copies(mnist_test_set):
    images, _ = mnist_test_set
    correlations = [
        np.corrcoef(mnist.preprocess_digit_image(upscaled_black_on_white(images[i])),
                    images[i])[0, 1]
        for i in range(10)
    ]
    assert min(correlations) > 0.8, correlations
    assert np.mean(correlations) > 0.9, correlations


def test_predict_reads_a_picture_as_the_model_reads_the_original(trained, mnist_test_set,
                                                                 tmp_path):
    checkpoint, _ = trained
    images, labels = mnist_test_set
    model = nn.load(str(checkpoint))
    logits = nn.to_numpy(model.predict(images[:50])).astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    # An image the small model reads confidently, and right.
    index = next(i for i in range(50)
                 if probabilities[i].max() > 0.9 and probabilities[i].argmax() == labels[i])
    picture = tmp_path / "my_digit.png"
    upscaled_black_on_white(images[index]).save(picture)

    code, out, err = run_main("--predict", str(picture), "--save", str(checkpoint))
    assert code == 0, err
    assert re.search(r"^top 3: \d \(\d+\.\d%\), \d \(\d+\.\d%\), \d \(\d+\.\d%\)$", out, re.M)
    match = re.search(r"^predicted digit: (\d)$", out, re.M)
    assert match, out
    assert int(match.group(1)) == probabilities[index].argmax() == labels[index]


def test_predict_errors_name_the_fix(tmp_path, monkeypatch):
    picture = tmp_path / "digit.png"
    draw_seven().save(picture)
    missing = tmp_path / "none.safetensors"
    code, _, err = run_main("--predict", str(picture), "--save", str(missing))
    assert code == 1 and f"no trained model at {missing}" in err and "--save" in err

    checkpoint = tmp_path / "tiny.safetensors"
    nn.seed(0)
    nn.save(nn.Sequential(nn.Dense(784, 10)), str(checkpoint))
    code, out, err = run_main("--predict", str(picture), "--resume", str(checkpoint))
    assert code == 0 and "predicted digit: " in out, err  # an untrained model, but it runs

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a picture")
    code, _, err = run_main("--predict", str(not_an_image), "--resume", str(checkpoint))
    assert code == 1 and f"cannot read the image {not_an_image}" in err

    for module in [name for name in sys.modules if name == "PIL" or name.startswith("PIL.")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "PIL", None)
    code, _, err = run_main("--predict", str(picture), "--resume", str(checkpoint))
    assert code == 1 and "needs Pillow" in err and "pip install pillow" in err
