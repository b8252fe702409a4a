"""nn.augment: random affine and elastic distortions of a batch of images, resampled on
the device; fit(augment=...), and resuming an augmented run."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from conftest import load_mnist_example

import nnscratch as nn
from nnscratch import random as nn_random

A = nn.augment


def images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random host images in [0, 1) with a blank border (as digits have)."""
    host = np.random.default_rng(seed).random(shape)
    host[..., :2, :] = host[..., -2:, :] = host[..., :, :2] = host[..., :, -2:] = 0
    return host


def apply(backend: nn.Backend, transform: A.Transform, host: np.ndarray,
          dtype: str = "float32", seed: int = 0) -> np.ndarray:
    nn.seed(seed)
    return backend.to_numpy(transform(backend.asarray(host, dtype=dtype)))


def shifted(host: np.ndarray, down: int, right: int) -> np.ndarray:
    """``host`` moved by whole pixels (down, right), zeros coming in."""
    out = np.zeros_like(host)
    height, width = host.shape[-2:]
    rows_out, rows_in = slice(max(down, 0), height + min(down, 0)), \
        slice(max(-down, 0), height - max(down, 0))
    cols_out, cols_in = slice(max(right, 0), width + min(right, 0)), \
        slice(max(-right, 0), width - max(right, 0))
    out[..., rows_out, cols_out] = host[..., rows_in, cols_in]
    return out


CHAIN = A.RandomAffine(rotation=15, translate=0.1, scale=0.1, shear=10) \
    + A.ElasticDistortion(alpha=20, sigma=3)


# -- the transforms -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 12, 10), (3, 2, 12, 10)], ids=["NHW", "NCHW"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_strength_is_exactly_the_identity(backend, shape, dtype):
    host = np.random.default_rng(1).random(shape)  # content up to the border
    x = backend.asarray(host, dtype=dtype)
    expected = backend.to_numpy(x)
    for transform in (A.RandomAffine(), A.ElasticDistortion(alpha=0),
                      A.RandomAffine(scale=(1, 1)) + A.ElasticDistortion(alpha=0, sigma=2),
                      A.ElasticDistortion(alpha=0) + A.RandomAffine()):
        out = transform(x)
        assert out.dtype == x.dtype and tuple(out.shape) == shape
        np.testing.assert_array_equal(backend.to_numpy(out), expected)


@pytest.mark.parametrize("angle,turns", [(90, 1), (-90, -1), (180, 2)])
def test_a_quarter_turn_is_rot90(backend, angle, turns):
    """rotation=+90 turns the content counter-clockwise as displayed (row 0 on top):
    numpy.rot90 over the image axes."""
    host = images((3, 2, 9, 9))
    out = apply(backend, A.RandomAffine(rotation=(angle, angle)), host)
    np.testing.assert_allclose(out, np.rot90(host, k=turns, axes=(-2, -1)), atol=1e-6)


@pytest.mark.parametrize("down,right", [(3, 3), (-2, -2), (0, 0)])
def test_translating_by_whole_pixels_is_a_shift(backend, down, right):
    host = images((4, 14, 14))
    fraction = right / 14  # the same fraction of the width and the height (square)
    out = apply(backend, A.RandomAffine(translate=(fraction, fraction)), host)
    np.testing.assert_allclose(out, shifted(host, down, right), atol=1e-6)


def test_a_chain_applies_its_transforms_in_order(backend):
    """t₁ + t₂ is t₂(t₁(x)): a quarter turn then a shift is not a shift then a turn."""
    host = images((2, 10, 10))
    turn, shift = A.RandomAffine(rotation=(90, 90)), A.RandomAffine(translate=(0.2, 0.2))
    out = apply(backend, turn + shift, host)
    expected = shifted(np.rot90(host, axes=(-2, -1)), 2, 2)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.abs(expected - np.rot90(shifted(host, 2, 2), axes=(-2, -1))).max() > 0.1


def test_shape_dtype_and_channels_are_kept(backend):
    """(N, C, H, W): each image's channels share its transform."""
    one = images((5, 1, 16, 12))
    host = np.concatenate([one, one, one], axis=1)
    for dtype in ("float32", "float64"):
        x = backend.asarray(host, dtype=dtype)
        nn.seed(4)
        out = CHAIN(x)
        assert out.dtype == x.dtype and tuple(out.shape) == (5, 3, 16, 12)
        got = backend.to_numpy(out)
        np.testing.assert_array_equal(got[:, 0], got[:, 1])
        np.testing.assert_array_equal(got[:, 0], got[:, 2])
        assert np.abs(got - host).max() > 0.1  # it did distort


def test_every_image_gets_its_own_transform(backend):
    copies = np.repeat(images((1, 16, 16)), 6, axis=0)
    for transform in (A.RandomAffine(rotation=20), A.ElasticDistortion(alpha=20, sigma=3)):
        out = apply(backend, transform, copies)
        for i in range(6):
            for j in range(i + 1, 6):
                assert np.abs(out[i] - out[j]).max() > 1e-3, (transform, i, j)


def test_the_callers_images_are_unchanged(backend):
    host = images((4, 2, 12, 12))
    x = backend.asarray(host, dtype="float32")
    before = backend.to_numpy(x).copy()
    CHAIN(x)
    (A.ElasticDistortion(alpha=20, sigma=3) + A.RandomAffine(rotation=30))(x)
    np.testing.assert_array_equal(backend.to_numpy(x), before)


def test_one_seed_gives_one_output_on_every_backend(backend):
    """The active backend against NumPy, from the same seed: the same distortions."""
    host = images((6, 1, 20, 20))
    two_passes = A.ElasticDistortion(alpha=20, sigma=3) + A.RandomAffine(rotation=10)
    for transform in (CHAIN, two_passes):
        got = apply(backend, transform, host, seed=7)
        with nn.use_backend("numpy") as numpy_backend:
            expected = apply(numpy_backend, transform, host, seed=7)
        np.testing.assert_allclose(got, expected, atol=2e-5)
        assert np.abs(expected - host).max() > 0.1
        assert np.abs(apply(backend, transform, host, seed=8) - got).max() > 0.1


def test_the_distortions_match_an_independent_resampling(backend):
    """Against scipy: the maps of the docstrings, drawn from the same stream, read by
    scipy.ndimage.map_coordinates (bilinear, zeros outside), the elastic field smoothed
    by scipy.ndimage.gaussian_filter. The fused chain is E(A(x)): in(m_A(u + Δ(u)))."""
    ndimage = pytest.importorskip("scipy.ndimage", reason="the reference needs scipy")
    n, height, width = 4, 18, 14
    host = images((n, height, width), seed=2)
    affine = A.RandomAffine(rotation=25, translate=0.15, scale=(0.8, 1.3), shear=15)
    elastic = A.ElasticDistortion(alpha=30, sigma=3)
    got = apply(backend, affine + elastic, host, dtype="float64", seed=11)

    nn.seed(11)
    unit = nn_random.uniform((n, 5), 0.0, 1.0, stream="augment")
    field = nn_random.uniform((n, 2, height, width), -1.0, 1.0, stream="augment")
    rotation, shear = (-25 + 50 * unit[:, 0]) * np.pi / 180, (-15 + 30 * unit[:, 1]) * np.pi / 180
    scale = 0.8 + 0.5 * unit[:, 2]
    shift = np.stack([(-0.15 + 0.3 * unit[:, 3]) * width,
                      (-0.15 + 0.3 * unit[:, 4]) * height], axis=1)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    expected = np.empty_like(host)
    for k in range(n):
        smooth = ndimage.gaussian_filter(field[k], sigma=(0, 3, 3), mode="constant",
                                         radius=(0, height, width))
        u = np.stack([cols - cx + 30 * smooth[0], rows - cy + 30 * smooth[1]])
        c, s = np.cos(rotation[k]), np.sin(rotation[k])
        matrix = np.array([[c, -s], [s, c]]) @ np.array([[1, np.tan(shear[k])], [0, 1]])
        source = np.einsum("ij,jhw->ihw", matrix / scale[k], u - shift[k][:, None, None])
        expected[k] = ndimage.map_coordinates(host[k], [source[1] + cy, source[0] + cx],
                                              order=1, mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_the_gaussian_matrix_is_a_normalised_kernel(backend):
    kernel = backend.to_numpy(A.ElasticDistortion(sigma=2).kernel(
        40, backend.xp.float64, backend.device))
    assert kernel.shape == (40, 40)
    np.testing.assert_allclose(kernel.sum(axis=1)[10:30], 1.0, atol=1e-12)  # interior
    np.testing.assert_allclose(kernel[20, 22] / kernel[20, 20], np.exp(-4 / 8), rtol=1e-12)
    assert kernel.sum(axis=1)[0] < 0.6  # the border: half the kernel lies outside


def test_bad_settings_and_inputs_are_refused(backend):
    for make, message in ((lambda: A.RandomAffine(rotation=-5), "rotation=-5"),
                          (lambda: A.RandomAffine(rotation=(10, -10)), "lo <= hi"),
                          (lambda: A.RandomAffine(translate="a lot"), "translate="),
                          (lambda: A.RandomAffine(scale=1.5), "scale=1.5"),
                          (lambda: A.RandomAffine(scale=(0, 2)), "positive"),
                          (lambda: A.RandomAffine(shear=90), "strictly between"),
                          (lambda: A.ElasticDistortion(sigma=0), "sigma"),
                          (lambda: A.ElasticDistortion(alpha=float("nan")), "alpha"),
                          (lambda: A.Compose([A.RandomAffine(), "flip"]), "Compose takes")):
        with pytest.raises(nn.ConfigError, match=message):
            make()
    with pytest.raises(nn.ShapeError, match="Reshape them"):
        A.RandomAffine()(backend.asarray(np.zeros((4, 784)), dtype="float32"))
    with pytest.raises(nn.DataError, match="real floating"):
        A.RandomAffine()(backend.asarray(np.zeros((4, 5, 5), dtype=np.int64)))


# -- in training ------------------------------------------------------------------------------

def digit_like(n: int = 96, side: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Images of three classes: a bright row, column or diagonal, with noise."""
    rng = np.random.default_rng(5)
    labels = np.arange(n) % 3
    pictures = rng.random((n, side, side)) * 0.2
    for k, label in enumerate(labels):
        if label == 0:
            pictures[k, side // 2, 1:-1] = 1
        elif label == 1:
            pictures[k, 1:-1, side // 2] = 1
        else:
            pictures[k][np.arange(1, side - 1), np.arange(1, side - 1)] = 1
    return pictures.astype(np.float32), labels


def small_model(seed: int = 1) -> nn.Sequential:
    nn.seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Dense(64, 16), nn.ReLU(), nn.Dense(16, 3))


def weights(model: nn.Sequential) -> list[np.ndarray]:
    return [nn.to_numpy(param.value).copy() for param in model.parameters()]


class Recorder(A.Transform):
    """Records the batches it is given and returns them as they are."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: Any) -> Any:
        self.shapes.append(tuple(batch.shape))
        return batch


def test_fit_augments_each_training_batch_and_nothing_else(backend):
    X, y = digit_like()
    x = backend.asarray(X)
    before = backend.to_numpy(x).copy()
    recorder = Recorder()
    model = small_model()
    model.fit(x, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.01), epochs=2,
              batch_size=40, seed=0, validation_data=(X[:30], y[:30]), augment=recorder)
    # 96 samples in batches of 40: 40, 40, 16 per epoch; the 30 validation images never
    assert recorder.shapes == [(40, 8, 8), (40, 8, 8), (16, 8, 8)] * 2
    np.testing.assert_array_equal(backend.to_numpy(x), before)

    # an identity augmentation trains exactly as none; a real one differs
    trained = []
    for augment in (None, A.RandomAffine(), CHAIN):
        model = small_model()
        model.fit(x, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.01), epochs=2,
                  batch_size=32, seed=0, augment=augment)
        trained.append(weights(model))
    for plain, identity in zip(trained[0], trained[1]):
        np.testing.assert_array_equal(identity, plain)
    assert max(np.abs(a - b).max() for a, b in zip(trained[0], trained[2])) > 1e-3
    np.testing.assert_array_equal(backend.to_numpy(x), before)


def test_fit_refuses_an_augment_that_is_not_a_transform(backend):
    X, y = digit_like()
    with pytest.raises(nn.ConfigError, match="augment must be a transform"):
        small_model().fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(),
                          augment="rotate")
    with pytest.raises(nn.ShapeError, match="Reshape them"):  # rows, not images
        nn.mlp([64, 3]).fit(X.reshape(96, 64), y, loss=nn.SoftmaxCrossEntropy(),
                            optimizer=nn.Adam(), augment=CHAIN)


class InterruptAt(nn.Callback):
    """Ctrl-C (KeyboardInterrupt) after ``step`` steps of epoch ``epoch``."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step, self.current = epoch, step, -1

    def on_epoch_begin(self, epoch: int) -> None:
        self.current = epoch

    def on_batch_end(self, step: int, loss: Any) -> None:
        if self.current == self.epoch and step == self.step:
            raise KeyboardInterrupt


def test_a_resumed_augmented_run_ends_with_the_uninterrupted_weights(backend, tmp_path):
    """The checkpoint keeps the augment stream's position: the resumed epochs draw the
    distortions the uninterrupted run drew (else the weights would differ)."""
    pytest.importorskip("safetensors", reason="checkpoints need safetensors")
    X, y = digit_like()
    settings = dict(loss=nn.SoftmaxCrossEntropy(), epochs=3, batch_size=32, seed=0,
                    augment=CHAIN)
    full = small_model()
    full.fit(X, y, optimizer=nn.Adam(lr=0.01), **settings,
             callbacks=[nn.Checkpoint(tmp_path / "full.safetensors")])

    partial = small_model()
    checkpoint = nn.Checkpoint(tmp_path / "partial.safetensors")
    with pytest.raises(KeyboardInterrupt):  # mid-way through the second epoch
        partial.fit(X, y, optimizer=nn.Adam(lr=0.01), **settings,
                    callbacks=[checkpoint, InterruptAt(1, step=1)])
    nn.seed(99)  # a fresh process: the streams are elsewhere until resume restores them
    run = nn.resume(tmp_path / "partial.safetensors")
    assert run.epoch == 1
    run.model.fit(X, y, optimizer=run.optimizer, initial_epoch=run.epoch, **settings,
                  callbacks=[checkpoint.resumed_from(run)])
    for got, expected in zip(weights(run.model), weights(full)):
        np.testing.assert_array_equal(got, expected)

    unaugmented = small_model()
    unaugmented.fit(X, y, optimizer=nn.Adam(lr=0.01), **{**settings, "augment": None})
    assert max(np.abs(a - b).max() for a, b in zip(weights(unaugmented), weights(full))) > 1e-3


# -- the recognizer: examples/mnist.py --augment ------------------------------------------------

mnist = load_mnist_example()
DIGITS_RUN = ["--dataset", "digits", "--epochs", "3", "--hidden", "16", "--batch-size", "32",
              "--seed", "3", "--quiet", "--augment"]


def test_the_examples_defaults_stay_and_augment_brings_its_recipe():
    plain = mnist.resolve_settings(mnist.parse_args([]))
    assert plain == {"dataset": "mnist", "hidden": [512, 256], "epochs": 10,
                     "batch_size": 128, "lr": 1e-3, "seed": 0, "limit": None,
                     "augment": False, "model": "mlp"}
    augmented = mnist.resolve_settings(mnist.parse_args(["--augment"]))
    assert augmented == {**plain, **A.mnist_recipe().settings, "augment": True}
    assert mnist.resolve_settings(mnist.parse_args(["--augment", "--epochs", "4"]))["epochs"] == 4


def test_the_example_resumes_an_augmented_run_to_the_uninterrupted_weights(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="the 8x8 digits need scikit-learn")
    pytest.importorskip("safetensors", reason="checkpoints need safetensors")
    from safetensors.numpy import load_file

    full, partial, resumed = (tmp_path / f"{name}.safetensors"
                              for name in ("full", "partial", "resumed"))
    assert mnist.main([*DIGITS_RUN, "--save", str(full)]) == 0
    code = mnist.main([*DIGITS_RUN, "--save", str(partial)], callbacks=[InterruptAt(1, 5)])
    assert code == mnist.EXIT_INTERRUPTED
    assert nn.checkpoint.read_settings(partial)["augment"] is True
    nn.seed(99)
    assert mnist.main(["--resume", str(partial), "--save", str(resumed), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "distorted" in out
    got, expected = load_file(str(resumed)), load_file(str(full))
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7,
                                   err_msg=name)
    # a run of before --augment (no such setting) resumes as a plain run
    run = nn.resume(partial)
    older = tmp_path / "older.safetensors"
    settings = {key: value for key, value in run.settings.items() if key != "augment"}
    nn.save(run.model, older, optimizer=run.optimizer, metadata={
        **nn.io.read_metadata(partial), "training.settings": json.dumps(settings)})
    assert mnist.main(["--resume", str(older), "--save", str(tmp_path / "o.st"), "--quiet"]) == 0
    assert "distorted" not in capsys.readouterr().out


def test_the_picture_of_augmented_digits(tmp_path, backend):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib")
    from nnscratch import plots

    digits = images((5, 12, 12))
    copies = [apply(backend, CHAIN, digits, seed=k) for k in range(3)]
    figure = plots._augmented_figure(digits.reshape(5, 144), copies)
    assert len(figure.axes) == 4 * 5
    np.testing.assert_allclose(figure.axes[0].images[0].get_array(), digits[0])
    np.testing.assert_allclose(figure.axes[5].images[0].get_array(), copies[0][0])
    plots.plot_augmented(digits, copies, tmp_path / "augmented.png")
    assert (tmp_path / "augmented.png").read_bytes().startswith(b"\x89PNG")
    written = plots.plot_training_run(tmp_path, {"loss": [1.0, 0.5]}, digits,
                                      np.arange(5) % 3, np.arange(5) % 2, augment=CHAIN)
    assert written[-1].endswith("augmented.png") and len(written) == 4
    with pytest.raises(nn.ShapeError, match="same shape"):
        plots.plot_augmented(digits, [copies[0][:3]], tmp_path / "bad.png")


@pytest.mark.slow
@pytest.mark.skipif(nn.get_backend().name != "numpy",
                    reason="the benchmark scripts are run once, in the numpy session")
def test_the_augmentation_benchmark_runs_and_its_ratios_are_per_round(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "bench/augment.py", "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(out.read_text(encoding="utf-8"))["augment"]["results"]
    assert set(results) == {"numpy 784-256-128-10", "numpy 784-800-800-10"}
    for label, row in results.items():
        times = row["ms_per_step"]
        plain, augmented = times[f"{label[6:]} plain"], times[f"{label[6:]} augmented"]
        expected = [a / b for a, b in zip(augmented["samples"], plain["samples"])]
        assert len(expected) == 2  # --quick: two interleaved rounds
        assert row["augmented_over_plain"]["samples"] == pytest.approx(expected, rel=1e-9)
