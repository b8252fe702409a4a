"""Ctrl-C and --resume in examples/mnist.py: an interrupted run, resumed, ends with the
weights (and optimizer state) of the uninterrupted run with the same seed.

The in-process tests train on the 8x8 digits (scikit-learn) so that they need no
MNIST; a callback raises KeyboardInterrupt where Ctrl-C would. One test sends a real
SIGINT to the script running as a subprocess on MNIST.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import load_mnist_example

import nnscratch as nn
from nnscratch.checkpoint import EPOCH_KEY, HISTORY_KEY, read_settings

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "mnist.py"

pytest.importorskip("safetensors", reason="checkpoints need the optional package safetensors")


mnist = load_mnist_example()


@pytest.fixture
def digits_available() -> None:
    pytest.importorskip("sklearn", reason="the 8x8 digits need scikit-learn")


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def assert_same_tensors(actual: Path, expected: Path) -> None:
    """Every weight and optimizer-state tensor equal up to float32 rounding noise."""
    got, want = read_tensors(actual), read_tensors(expected)
    assert sorted(got) == sorted(want)
    assert any(name.startswith("optimizer.") for name in want)
    for name in want:
        scale = np.max(np.abs(want[name])) + 1e-30
        error = np.max(np.abs(got[name] - want[name])) / scale
        assert error < 1e-6, f"{name}: relative error {error:.3g}"


class InterruptAt(nn.Callback):
    """Raise KeyboardInterrupt (as Ctrl-C does) when the run reaches epoch ``epoch``
    (from 0), at its start or after ``step`` steps of it."""

    def __init__(self, epoch: int, step: int | None = None) -> None:
        self.epoch, self.step = epoch, step
        self.current = -1

    def on_epoch_begin(self, epoch: int) -> None:
        self.current = epoch
        if self.step is None and epoch == self.epoch:
            raise KeyboardInterrupt

    def on_batch_end(self, step: int, loss: Any) -> None:
        if self.step is not None and self.current == self.epoch and step == self.step:
            raise KeyboardInterrupt


def saved_run(path: Path) -> tuple[dict, int, dict]:
    """The settings, the epochs done and the history a run's checkpoint holds."""
    metadata = nn.io.read_metadata(path)
    return (read_settings(path), int(metadata[EPOCH_KEY]),
            json.loads(metadata[HISTORY_KEY]))


DIGITS_RUN = ["--dataset", "digits", "--epochs", "3", "--hidden", "16", "--batch-size", "32",
              "--seed", "3", "--quiet"]


@pytest.mark.parametrize("step", [None, 5], ids=["at-epoch-start", "mid-epoch"])
def test_interrupted_and_resumed_run_ends_with_the_uninterrupted_weights(
        tmp_path, capsys, digits_available, step):
    full, partial, resumed = (tmp_path / name for name in
                              ("full.safetensors", "partial.safetensors", "resumed.safetensors"))
    assert mnist.main([*DIGITS_RUN, "--save", str(full)]) == 0
    capsys.readouterr()

    # Ctrl-C in the second epoch (at its start, or mid-way: then the half-done epoch is
    # dropped and the checkpoint holds the state at the end of the first).
    code = mnist.main([*DIGITS_RUN, "--save", str(partial)], callbacks=[InterruptAt(1, step)])
    assert code == mnist.EXIT_INTERRUPTED == 130
    out, err = capsys.readouterr()
    assert out.count("epoch 1/3") == 1 and "epoch 2/3" not in out
    assert "after epoch 1 of 3" in err and f"--resume {partial}" in err
    settings, epochs_done, history = saved_run(partial)
    assert epochs_done == 1 and settings["seed"] == 3 and settings["hidden"] == [16]
    assert len(history["loss"]) == 1

    assert mnist.main(["--resume", str(partial), "--save", str(resumed), "--quiet"]) == 0
    out, _ = capsys.readouterr()
    assert "resuming" in out and "epoch 1/3" not in out
    assert "epoch 2/3" in out and "epoch 3/3" in out
    assert_same_tensors(resumed, full)
    _, epochs_done, history = saved_run(resumed)
    assert epochs_done == 3 and len(history["val_accuracy"]) == 3
    # The same test accuracy line as the uninterrupted run, on a resumed model.
    assert out.splitlines()[-1].startswith("test accuracy: ")


def test_without_save_the_run_lives_in_the_interrupted_file_until_it_ends(
        tmp_path, capsys, digits_available, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = mnist.main(DIGITS_RUN, callbacks=[InterruptAt(2)])
    assert code == 130 and saved_run(Path(mnist.INTERRUPTED))[1] == 2
    assert not Path(mnist.DEFAULT_SAVE).exists()
    assert mnist.main(["--resume", mnist.INTERRUPTED, "--quiet"]) == 0
    assert saved_run(Path(mnist.DEFAULT_SAVE))[1] == 3
    assert not Path(mnist.INTERRUPTED).exists()  # the run ended: its in-progress file went
    capsys.readouterr()


def test_interrupt_before_the_first_epoch_ends_leaves_nothing_to_resume(
        tmp_path, capsys, digits_available):
    partial = tmp_path / "partial.safetensors"
    code = mnist.main([*DIGITS_RUN, "--save", str(partial)], callbacks=[InterruptAt(0, step=2)])
    assert code == 130
    assert "before the first epoch finished: nothing to resume" in capsys.readouterr().err
    assert not partial.exists()


def test_an_edited_checkpoint_is_refused(tmp_path, capsys, digits_available):
    partial = tmp_path / "partial.safetensors"
    assert mnist.main([*DIGITS_RUN, "--save", str(partial)], callbacks=[InterruptAt(1)]) == 130
    run = nn.resume(partial)
    for key, value, message in (("hidden", [512, 256], "not the 64-512-256-10 of its settings"),
                                ("epochs", -5, "settings are not valid"),
                                ("lr", "fast", "settings are not valid"),
                                ("dataset", "cifar", "settings are not valid")):
        edited = tmp_path / f"edited-{key}.safetensors"
        settings = {**run.settings, key: value}
        nn.save(run.model, edited, optimizer=run.optimizer, metadata={
            **nn.io.read_metadata(partial), "training.settings": json.dumps(settings)})
        capsys.readouterr()
        assert mnist.main(["--resume", str(edited), "--quiet"]) == 1, key
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (key, err)


def test_resume_refuses_other_settings_but_allows_more_epochs(tmp_path, capsys,
                                                              digits_available):
    partial = tmp_path / "partial.safetensors"
    assert mnist.main([*DIGITS_RUN, "--save", str(partial)], callbacks=[InterruptAt(1)]) == 130
    capsys.readouterr()
    code = mnist.main(["--resume", str(partial), "--hidden", "32", "--lr", "0.01",
                       "--save", str(tmp_path / "other.safetensors")])
    assert code == 1
    err = capsys.readouterr().err
    assert "--hidden [32] (the run has [16])" in err and "--lr 0.01" in err
    assert not (tmp_path / "other.safetensors").exists()

    longer = tmp_path / "longer.safetensors"
    assert mnist.main(["--resume", str(partial), "--epochs", "4", "--save", str(longer),
                       "--quiet"]) == 0
    assert "epoch 4/4" in capsys.readouterr().out
    assert saved_run(longer)[1] == 4


def test_resume_from_a_missing_or_foreign_file_says_so(tmp_path, capsys):
    assert mnist.main(["--resume", str(tmp_path / "nope.safetensors")]) == 1
    assert "does not exist" in capsys.readouterr().err

    foreign = tmp_path / "plain.safetensors"
    nn.seed(0)
    nn.save(nn.Sequential(nn.Dense(4, 2)), str(foreign))  # a model, but no training run in it
    assert mnist.main(["--resume", str(foreign)]) == 1
    assert "not a checkpoint of a training run" in capsys.readouterr().err


def test_sigint_to_the_script_saves_a_checkpoint_that_matches_the_run(tmp_path, mnist_path):
    """A real Ctrl-C: SIGINT to `python examples/mnist.py` once an epoch line is out. It
    exits with 130 after writing the state at the last finished epoch boundary, which is
    the state an in-process run with the same settings reaches after that many epochs."""
    checkpoint = tmp_path / "interrupted.safetensors"
    settings = ["--data", str(mnist_path), "--limit", "2000", "--hidden", "16",
                "--batch-size", "50", "--epochs", "500", "--seed", "1", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *settings, "--save", str(checkpoint)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    first_epoch = threading.Event()

    def read_stdout() -> None:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("epoch"):
                first_epoch.set()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    try:
        assert first_epoch.wait(timeout=120), "no epoch line within 120 s:\n" + "".join(lines)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)  # stderr is a few lines: no pipe can fill up
        stderr = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=10)
    assert code == 130, "".join(lines) + stderr
    assert f"--resume {checkpoint}" in stderr
    assert "Traceback" not in stderr
    assert "test accuracy" not in "".join(lines)

    saved, epochs_done, history = saved_run(checkpoint)
    assert 1 <= epochs_done < 500 and len(history["loss"]) == epochs_done
    assert saved["limit"] == 2000 and saved["seed"] == 1
    model = nn.load(str(checkpoint))
    assert model.in_features == 784 and model.out_features == 10

    # The same settings in-process, stopped at that epoch boundary: the same weights.
    start = time.perf_counter()
    again = tmp_path / "again.safetensors"
    code = mnist.main([*settings, "--save", str(again)], callbacks=[InterruptAt(epochs_done)])
    assert code == 130, f"in-process run failed after {time.perf_counter() - start:.1f}s"
    assert_same_tensors(again, checkpoint)


def test_resume_reads_the_data_named_by_data(tmp_path, capsys, digits_available, mnist_path):
    """--data with --resume is used (or refused), never ignored."""
    partial = tmp_path / "partial.safetensors"
    flags = ["--data", str(mnist_path), "--limit", "500", "--hidden", "8", "--epochs", "2",
             "--quiet"]
    assert mnist.main([*flags, "--save", str(partial)], callbacks=[InterruptAt(1)]) == 130
    capsys.readouterr()
    missing = tmp_path / "moved"
    assert mnist.main(["--resume", str(partial), "--data", str(missing)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
