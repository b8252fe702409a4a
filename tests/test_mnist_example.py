"""examples/mnist.py, the digit recognizer, called in-process with tiny settings: the
output a user sees, data used as named or refused, the loud fallback to the 8x8 digits
when nothing was named and MNIST cannot be had, datasets by name with their class names,
every output path checked before training, --min-accuracy, --plots and --predict."""

from __future__ import annotations

import contextlib
import io
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import load_mnist_example

import nnscratch as nn
import nnscratch.datasets.download as downloads
from nnscratch.checkpoint import EPOCH_KEY, read_settings
from nnscratch.datasets import load, write_idx
from nnscratch.errors import DataError

TEST_ACCURACY_LINE = re.compile(r"^test accuracy: ([01]\.\d{4})$")
EPOCH_LINE = re.compile(
    r"^epoch 1/1  train loss \d+\.\d{4}  train accuracy 0\.\d{4}  "
    r"validation loss \d+\.\d{4}  validation accuracy (0\.\d{4})  \d+\.\ds$"
)

pytest.importorskip("safetensors", reason="checkpoints need the optional package safetensors")
mnist = load_mnist_example()


def run_main(*argv: str, callbacks=()) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured (usable in module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = mnist.main(list(argv), callbacks=callbacks)
    return code, out.getvalue(), err.getvalue()


def reported_accuracy(output: str) -> float:
    match = TEST_ACCURACY_LINE.match(output.splitlines()[-1])
    assert match, f"the last line is not 'test accuracy: 0.XXXX':\n{output}"
    return float(match.group(1))


def epochs_done(path: Path) -> int:
    return int(nn.io.read_metadata(path)[EPOCH_KEY])


def test_the_example_reads_in_one_sitting():
    """Under 280 non-blank lines (the machinery lives in the library), and the README's
    claim is the number measured (it said "under 250 lines" of 284, 250 non-blank)."""
    source = (Path(mnist.__file__)).read_text(encoding="utf-8").splitlines()
    count = len([line for line in source if line.strip()])
    assert count < 280
    readme = (Path(mnist.__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    claim = re.search(r"`examples/mnist.py` \(under (\d+) non-blank lines", readme)
    assert claim and count < int(claim.group(1)) <= 280, claim


def test_the_readmes_mpi_numbers_are_for_the_network_the_example_trains():
    """The "Many processes" section quoted speed-ups of 784-256-128-10, a network the
    example does not train; its numbers are the example's own network's."""
    readme = (Path(mnist.__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Many processes", 1)[1].split("\n## ", 1)[0]
    hidden = mnist.SETTINGS["hidden"][1]
    shipped = "-".join(map(str, [784, *hidden, 10]))
    networks = set(re.findall(r"\b784(?:-\d+)+\b", section))
    assert networks == {shipped}, networks
    assert "2 ranks × 1 thread" in section


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
    assert epochs_done(checkpoint) == 1 and read_settings(checkpoint)["hidden"] == [64]


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


# -- named data: used, or refused ----------------------------------------------------------


def test_a_missing_data_folder_stops_the_run_and_names_it(tmp_path):
    missing = tmp_path / "no" / "such"
    code, out, err = run_main("--data", str(missing), "--epochs", "1", "--save",
                              str(tmp_path / "m.st"))
    assert code == 1
    assert str(missing) in err and "--data" in err and "does not exist" in err
    assert "epoch" not in out and "8x8" not in err and not (tmp_path / "m.st").exists()


def write_idx_set(folder: Path, seed: int = 0, train: int = 600, test: int = 200) -> None:
    """Well-formed IDX files in the MNIST layout that are not the canonical ones: each
    class a bright bar at its own row, so that a network can learn them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 40, (count, 28, 28)).astype(np.uint8)
        for index, label in enumerate(labels):
            images[index, 4 + 2 * label:6 + 2 * label, 4:24] = 250
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)


QUICK = ["--epochs", "2", "--hidden", "32", "--batch-size", "32", "--lr", "0.01", "--quiet"]


def test_well_formed_files_of_ones_own_are_trained_on_with_one_note(tmp_path):
    own = tmp_path / "own"
    write_idx_set(own)
    code, out, err = run_main("--data", str(own), *QUICK, "--save", str(tmp_path / "o.st"))
    assert code == 0, err
    notes = [line for line in err.splitlines() if "not the canonical MNIST files" in line]
    assert len(notes) == 1 and str(own) in notes[0] and "as given" in notes[0]
    assert out.startswith("mnist: 540 training, 60 validation, 200 test samples")
    assert reported_accuracy(out) > 0.9  # the bars are easy: it learnt these files


@pytest.mark.parametrize("defect", ["truncated", "bad magic", "labels out of range"])
def test_a_structural_defect_in_named_files_stops_the_run(tmp_path, defect):
    own = tmp_path / "own"
    write_idx_set(own)
    broken = own / "train-labels-idx1-ubyte"
    data = load("mnist", own, report=None)
    (own / "train-labels-idx1-ubyte.gz").unlink()
    labels = data.y_train.astype(np.uint8)
    raw = b"\x00\x00\x08\x01" + struct.pack(">I", 600) + labels.tobytes()
    raw = {"truncated": raw[:-7], "bad magic": b"\x01" + raw[1:],
           "labels out of range": raw[:-1] + bytes([11])}[defect]
    broken.write_bytes(raw)
    code, out, err = run_main("--data", str(own), *QUICK, "--save", str(tmp_path / "o.st"))
    assert code == 1 and str(broken) in err and "epoch" not in out


def test_datasets_by_name_carry_their_class_names_to_the_output(tmp_path):
    fashion = tmp_path / "fashion"
    write_idx_set(fashion, seed=1)
    model = tmp_path / "fashion.safetensors"
    code, out, err = run_main("--dataset", "fashion-mnist", "--data", str(fashion), *QUICK,
                              "--save", str(model))
    assert code == 0, err
    assert out.startswith("fashion-mnist: ") and "Fashion-MNIST" in err  # the note names it
    picture = tmp_path / "bar.png"
    Image = pytest.importorskip("PIL.Image", reason="--predict needs Pillow")
    bar = np.zeros((28, 28), np.uint8)
    bar[4 + 2 * 7:6 + 2 * 7, 4:24] = 255  # class 7: Sneaker
    Image.fromarray(bar).save(picture)
    code, out, err = run_main("--predict", str(picture), "--save", str(model))
    assert code == 0, err
    assert "(Fashion-MNIST)" in out
    names = "|".join(re.escape(name) for name in nn.datasets.DATASETS["fashion-mnist"]
                     .class_names)
    assert re.search(rf"^predicted: ({names}) \(\d+\.\d%\)$", out, re.M), out


# -- nothing named, and MNIST unavailable: the loud fallback ---------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path) -> None:
    """Nothing named (no --data, no NNSCRATCH_DATA), an empty cache, and every download
    failing without touching the network."""
    monkeypatch.delenv("NNSCRATCH_DATA", raising=False)
    monkeypatch.setenv("NNSCRATCH_CACHE", str(tmp_path / "cache"))

    def no_network(urls, dest, *args, **kwargs):
        raise DataError(f"could not download {Path(dest).name} (network disabled in tests)")

    monkeypatch.setattr(downloads, "download_file", no_network)


DIGITS_QUICK = ["--epochs", "3", "--hidden", "32", "--batch-size", "32", "--lr", "0.01",
                "--quiet"]


def test_without_mnist_it_says_so_loudly_and_trains_on_the_8x8_digits(offline, tmp_path):
    pytest.importorskip("sklearn", reason="the 8x8 digits need scikit-learn")
    saved = tmp_path / "d.safetensors"
    code, out, err = run_main(*DIGITS_QUICK, "--save", str(saved))
    assert code == 0, err
    assert "MNIST IS NOT AVAILABLE" in err and "8x8" in err
    assert err.count("!" * 78) == 2  # framed by two rules
    assert "network disabled in tests" in err  # why
    assert out.startswith("digits-8x8: ") and "64-32-10" in out
    assert "the model is not saved" in out and not saved.exists()
    assert reported_accuracy(out) > 0.85


def test_a_fallback_never_replaces_a_saved_model(offline, tmp_path, monkeypatch):
    pytest.importorskip("sklearn", reason="the 8x8 digits need scikit-learn")
    monkeypatch.chdir(tmp_path)
    nn.seed(0)
    nn.save(nn.mlp([784, 8, 10]), "digits.safetensors")
    before = Path("digits.safetensors").read_bytes()
    code, out, err = run_main(*DIGITS_QUICK)
    assert code == 0, err
    assert Path("digits.safetensors").read_bytes() == before
    assert not Path(mnist.INTERRUPTED).exists()


def test_the_fallback_never_passes_min_accuracy(offline, tmp_path):
    pytest.importorskip("sklearn", reason="the 8x8 digits need scikit-learn")
    code, out, err = run_main("--no-download", *DIGITS_QUICK, "--save",
                              str(tmp_path / "d.safetensors"), "--min-accuracy", "0.1")
    assert code == 1
    assert "MNIST IS NOT AVAILABLE" in err
    assert "--min-accuracy 0.1 is a target for mnist" in err
    reported_accuracy(out)  # it trained and reported, then failed on purpose


def test_without_mnist_and_without_scikit_learn_it_fails_with_both_reasons(offline, monkeypatch,
                                                                          tmp_path):
    import nnscratch.datasets.digits as digits

    def no_sklearn(*args, **kwargs):
        raise DataError("load_digits needs scikit-learn, which ships the 8x8 digits: "
                        "pip install scikit-learn")

    monkeypatch.setattr(digits, "load_digits", no_sklearn)
    code, out, err = run_main(*DIGITS_QUICK, "--save", str(tmp_path / "d.safetensors"))
    assert code == 1
    assert "network disabled in tests" in err and "pip install scikit-learn" in err
    assert "test accuracy" not in out and not (tmp_path / "d.safetensors").exists()


def test_an_unavailable_named_dataset_names_the_command_line_flags(offline, tmp_path):
    """--dataset fashion-mnist with no cache and no network: the error says --data DIR (not
    the library's root=), and its first line is the summary, the mirrors' failures after."""
    code, out, err = run_main("--dataset", "fashion-mnist", *QUICK, "--save",
                              str(tmp_path / "f.st"))
    assert code == 1 and "epoch" not in out
    first, *details = err.strip().splitlines()
    assert first.startswith("error: Fashion-MNIST is not in the per-user cache")
    assert "--data DIR" in first and "root=" not in err and "download=" not in err
    assert details and "network disabled in tests" in details[-1]
    code, out, err = run_main("--dataset", "fashion-mnist", "--no-download", *QUICK,
                              "--save", str(tmp_path / "f.st"))
    assert code == 1 and "--no-download" in err and "download=" not in err


def test_a_folder_of_another_dataset_suggests_the_dataset_flag(tmp_path, monkeypatch):
    """A folder of the canonical MNIST files named for Fashion-MNIST: refused, with
    --dataset mnist as the fix (the library says load('mnist'))."""
    import nnscratch.datasets.loader as loader

    mnist_like = tmp_path / "mnist"
    write_idx_set(mnist_like)
    monkeypatch.setattr(loader, "_is_canonical", lambda read, file: file.name in read.path.name
                        and file.md5 is not None)  # these files pass for MNIST's own
    code, out, err = run_main("--dataset", "fashion-mnist", "--data", str(mnist_like), *QUICK,
                              "--save", str(tmp_path / "f.st"))
    assert code == 1, err
    assert "to use them, --dataset mnist;" in err and "load(" not in err
    assert "drop --data" in err


# -- every output checked before training ----------------------------------------------------


class CountEpochs(nn.Callback):
    def __init__(self) -> None:
        self.epochs = 0

    def on_epoch_begin(self, epoch: int) -> None:
        self.epochs += 1


@pytest.mark.parametrize("target", ["save-directory", "save-in-a-file", "plots-file"])
def test_an_unwritable_output_stops_the_run_before_training(tmp_path, target):
    pytest.importorskip("sklearn", reason="the 8x8 digits need scikit-learn")
    afile = tmp_path / "a-file"
    afile.write_text("x")
    flags = {"save-directory": ["--save", str(tmp_path)],
             "save-in-a-file": ["--save", str(afile / "model.safetensors")],
             "plots-file": ["--save", str(tmp_path / "m.st"), "--plots", str(afile)]}[target]
    counter = CountEpochs()
    code, out, err = run_main("--dataset", "digits", *DIGITS_QUICK, *flags,
                              callbacks=[counter])
    assert code == 1 and counter.epochs == 0, err
    assert "cannot save" in err and "test accuracy" not in out


def test_replacing_a_model_of_another_dataset_says_so(tmp_path):
    pytest.importorskip("sklearn", reason="the 8x8 digits need scikit-learn")
    saved = tmp_path / "m.safetensors"
    nn.seed(0)
    nn.save(nn.mlp([784, 8, 10]), saved)
    code, out, err = run_main("--dataset", "digits", *DIGITS_QUICK, "--save", str(saved))
    assert code == 0, err
    assert f"note: {saved} holds a model of ? (784 inputs); this run replaces it with one " \
           "of digits (64 inputs)" in out
    assert nn.load(saved).in_features == 64
    # the same dataset and width again: nothing to say
    code, out, err = run_main("--dataset", "digits", *DIGITS_QUICK, "--save", str(saved))
    assert code == 0 and "note:" not in out


LIMITED_CHILD = """
import resource, runpy, sys
root, script, arguments = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(0, root)
import nnscratch  # imported before the limit, as the script would import it
for line in open("/proc/self/status"):
    if line.startswith("VmSize:"):  # the address space it holds after its imports
        limit = int(line.split()[1]) * 1024 + (2 << 30)  # and 2 GiB more
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
sys.argv = [script, *arguments]
runpy.run_path(script, run_name="__main__")
"""


def run_limited(*argv: str) -> subprocess.CompletedProcess:
    """examples/mnist.py in a child process limited to 2 GiB more address space than
    its imports take, so that a regression that allocates what it was told fails this
    test instead of taking the test runner down."""
    if not Path("/proc/self/status").exists():
        pytest.skip("the memory limit needs /proc/self/status (Linux)")
    script = Path(mnist.__file__)
    return subprocess.run([sys.executable, "-c", LIMITED_CHILD, str(script.parents[1]),
                           str(script), *argv], capture_output=True, text=True, timeout=120)


def test_a_network_too_large_for_the_machine_is_refused_with_its_size(tmp_path):
    pytest.importorskip("sklearn", reason="the 8x8 digits need scikit-learn")
    done = run_limited("--dataset", "digits", "--hidden", "1000000,1000000",
                       "--save", str(tmp_path / "m.st"))
    assert done.returncode == 1, done.stdout + done.stderr
    parameters = 65 * 10**6 + (10**6 + 1) * 10**6 + (10**6 + 1) * 10  # (in + 1) · out
    assert f"{parameters:,} parameters" in done.stderr and "GB" in done.stderr
    assert "MemoryError" not in done.stderr and "epoch" not in done.stdout


def test_a_picture_too_large_to_decode_is_refused_without_decoding(tmp_path):
    pytest.importorskip("PIL.Image", reason="--predict needs Pillow")
    checkpoint = tmp_path / "tiny.safetensors"
    nn.seed(0)
    nn.save(nn.Sequential(nn.Dense(784, 10)), str(checkpoint))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(40000, 40000))  # 1.6 G pixels: more than the child has
    done = run_limited("--predict", str(bomb), "--resume", str(checkpoint))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pixels" in done.stderr and "Traceback" not in done.stderr


def test_plots_flag_writes_the_three_pictures(tmp_path):
    pytest.importorskip("sklearn", reason="the 8x8 digits need scikit-learn")
    pytest.importorskip("matplotlib", reason="--plots needs matplotlib")
    code, out, err = run_main("--dataset", "digits", *DIGITS_QUICK, "--plots",
                              str(tmp_path / "plots"), "--save", str(tmp_path / "d.st"))
    assert code == 0, err
    assert "NOT AVAILABLE" not in err  # asked for the digits: no fallback banner
    for name in ("learning_curves.png", "confusion_matrix.png", "misclassified.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), name
    reported_accuracy(out)


def test_bad_flags_are_refused(capsys):
    for argv in (["--hidden", "64,0"], ["--epochs", "0"], ["--lr", "-1"],
                 ["--min-accuracy", "2"], ["--backend", "tensorflow"], ["--dataset", "cifar"],
                 ["--seed", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            mnist.main(argv)
        assert exit_info.value.code == 2, argv
    err = capsys.readouterr().err
    assert "--hidden takes positive layer widths" in err and "fashion-mnist" in err


# -- reading a user's own digit --------------------------------------------------------------


def upscaled_black_on_white(pixels: np.ndarray) -> Any:
    """An MNIST image as a user's scan: 200x200, black ink on white paper."""
    Image = pytest.importorskip("PIL.Image", reason="--predict needs Pillow")
    grey = np.round(255 - pixels.reshape(28, 28) * 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").resize((200, 200), Image.Resampling.BICUBIC)


def test_predict_reads_a_picture_as_the_model_reads_the_original(trained, mnist_path,
                                                                 tmp_path):
    checkpoint, _ = trained
    test = load("mnist", mnist_path, report=None)
    images, labels = test.x_test[:50], test.y_test[:50]
    model = nn.load(str(checkpoint))
    logits = nn.to_numpy(model.predict(images)).astype(np.float64)
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
    match = re.search(r"^predicted: (\d) \(\d+\.\d%\)$", out, re.M)
    assert match, out
    assert int(match.group(1)) == probabilities[index].argmax() == labels[index]


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height grey pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_predict_errors_name_the_fix(tmp_path, monkeypatch):
    pytest.importorskip("PIL.Image", reason="--predict needs Pillow")
    picture = tmp_path / "digit.png"
    upscaled_black_on_white(np.eye(28, dtype=np.float32).reshape(-1)).save(picture)
    missing = tmp_path / "none.safetensors"
    code, _, err = run_main("--predict", str(picture), "--save", str(missing))
    assert code == 1 and f"no trained model at {missing}" in err and "--save" in err

    checkpoint = tmp_path / "tiny.safetensors"
    nn.seed(0)
    nn.save(nn.Sequential(nn.Dense(784, 10)), str(checkpoint))
    code, out, err = run_main("--predict", str(picture), "--resume", str(checkpoint))
    assert code == 0 and "predicted: " in out, err  # an untrained model, but it runs

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a picture")
    code, _, err = run_main("--predict", str(not_an_image), "--resume", str(checkpoint))
    assert code == 1 and f"cannot read the image {not_an_image}" in err

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(20000, 20000))
    code, _, err = run_main("--predict", str(bomb), "--resume", str(checkpoint))
    assert code == 1 and "pixels" in err and "Traceback" not in err


@pytest.mark.slow
def test_the_cnn_trains_resumes_and_reads_a_digit(mnist_path, tmp_path):
    """--model cnn: nn.cnn on (N, 1, 28, 28) images, saved with its settings, resumed for
    one more epoch, and used by --predict."""
    checkpoint = tmp_path / "cnn.safetensors"
    code, out, err = run_main("--model", "cnn", "--data", str(mnist_path), "--limit", "600",
                              "--epochs", "1", "--save", str(checkpoint), "--quiet")
    assert code == 0, out + err
    assert "parameters (cnn); Adam lr 0.002" in out  # nn.CNN_TRAINING's rate
    assert reported_accuracy(out) > 0.2  # five steps: learning (chance is 0.1)
    assert read_settings(checkpoint)["model"] == "cnn" and epochs_done(checkpoint) == 1
    model = nn.load(checkpoint)
    assert isinstance(model.layers[0], nn.Conv2D) and model.takes_images
    code, out, err = run_main("--resume", str(checkpoint), "--epochs", "2", "--data",
                              str(mnist_path), "--save", str(checkpoint), "--quiet")
    assert code == 0, out + err
    assert "resuming" in out and epochs_done(checkpoint) == 2
    assert reported_accuracy(out) > 0.5
    test = load("mnist", mnist_path, report=None)
    picture = tmp_path / "digit.png"
    upscaled_black_on_white(test.x_test[0]).save(picture)
    code, out, err = run_main("--predict", str(picture), "--save", str(checkpoint))
    assert code == 0, err
    assert re.search(r"^predicted: \d \(\d+\.\d%\)$", out, re.M), out
