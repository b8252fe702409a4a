"""The benchmarks compare like with like: the plain NumPy rows train the same network
to the same weights as nnscratch, and the scripts run end to end.

A benchmark row that did less work (a forgotten bias gradient, an Adam without bias
correction) would look fast and be wrong; these tests pin every row to nnscratch's
own result from the same start.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

import nnscratch as nn

BENCH = ROOT / "bench"


def import_bench(name: str):
    """A script of bench/ as a module (they import their neighbour ``common``)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def mlp():
    return import_bench("mlp")


@pytest.fixture(scope="module")
def xor():
    return import_bench("xor")


def small_mnist_like(samples: int = 256) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.random((samples, 784), dtype=np.float32)
    y = rng.integers(0, 10, samples).astype(np.int64)
    return X, y


def nnscratch_epoch(mlp, X: np.ndarray, y: np.ndarray,
                    batch: int) -> tuple[list[np.ndarray], dict[str, list[float]]]:
    """One shuffled epoch of the bench's network through ``fit`` on NumPy: the weights
    and the history."""
    with nn.use_backend("numpy"):
        model = mlp.build_model(mlp.initial_weights())
        history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(),
                            optimizer=nn.Adam(lr=mlp.LR, betas=mlp.BETAS, eps=mlp.EPS),
                            epochs=1, batch_size=batch, seed=mlp.SEED)
        return [np.asarray(p.value) for p in model.parameters()], history.history


@pytest.mark.parametrize("row", ["NumpyMLP", "NumpyFloor"])
def test_numpy_rows_train_to_nnscratchs_weights(mlp, row):
    X, y = small_mnist_like()
    initial = mlp.initial_weights()
    implementation = getattr(mlp, row)(initial)
    # Two steps (batch 128 of 256 samples): rounding differs between the rows at 1e-8,
    # and over more steps it can flip a ReLU unit whose input is within ~1e-6 of 0 (it
    # did, at step 4 of 4, with NumPy 2.4.6), which moves its weights by 1e-4 legitimately.
    # Adam divides by √v: where a gradient is a sum that cancels to ~1e-8 (a bias's
    # gradient, summed by BLAS in nnscratch's x̃ᵀg and by np.sum here), rounding moves
    # that weight by a few 1e-6 (2.4e-6 seen); a wrong row is off by ~1e-3.
    loss, correct = implementation.epoch(X, y, 128)
    got = implementation.parameters()
    want, history = nnscratch_epoch(mlp, X, y, 128)
    start = [p for pair in initial for p in pair]
    for g, w, s in zip(got, want, start):
        assert g.dtype == np.float32, f"{row} left float32"
        # two Adam steps move every weight matrix by ~lr per step: a row that skipped
        # a gradient or the bias correction would be off by that much
        assert np.max(np.abs(w - s)) > 1e-3
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)
    # the epoch's mean loss and correct count, as fit reports them
    assert loss == pytest.approx(history["loss"][0], rel=1e-5)
    assert correct == round(history["accuracy"][0] * X.shape[0])


def test_xor_reference_matches_nnscratch(xor):
    initial = xor.initial_weights()
    reference = xor.NumpyXOR(initial, "bce")
    reference_loss = reference.train(xor.X_XOR, xor.Y_XOR, 300)
    with nn.use_backend("numpy"):
        model = xor.build_model()
        dense = [layer for layer in model.layers if isinstance(layer, nn.Dense)]
        for layer, (weight, bias) in zip(dense, initial):
            layer.weight.value = np.array(weight, copy=True)
            layer.bias.value = np.array(bias, copy=True)
        history = model.fit(xor.X_XOR, xor.Y_XOR, loss=nn.BinaryCrossEntropy(),
                            optimizer=nn.SGD(lr=xor.LR), epochs=300, batch_size=None)
        predictions = np.asarray(model.predict(xor.X_XOR))
    # the history's last loss is measured before the last step, the reference's too
    assert history.history["loss"][-1] == pytest.approx(reference_loss, rel=1e-4)
    np.testing.assert_allclose(predictions, reference.predict(xor.X_XOR), atol=1e-5)


def run_script(args: list[str], tmp_path) -> dict:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, *args, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.skipif(nn.get_backend().name != "numpy",
                    reason="the benchmark scripts are run once, in the numpy session")
def test_mlp_benchmark_runs_and_reports_every_row(tmp_path):
    results = run_script(["bench/mlp.py", "--quick", "--backends", "numpy",
                          "--batch-sizes", "128", "--no-memory"], tmp_path)["mlp"]
    rows = {row["name"]: row for row in results["results"][0]["rows"]}
    for name in ("nnscratch numpy (fit)", "nnscratch numpy (manual loop)",
                 "NumPy reference", "NumPy matmuls only",
                 "NumPy floor (out=, no temporaries)"):
        assert rows[name]["ms_per_step"]["median"] > 0
    assert rows["NumPy reference"]["ratio_to_reference"]["median"] == 1.0
    # every row trained the same network: weights within float32 noise after warm-up
    for name, row in rows.items():
        if "max_abs_weight_diff_after_warmup" in row:
            assert row["max_abs_weight_diff_after_warmup"] < 1e-3, name
    targets = {t["target"]: t for t in results["targets"]}
    assert targets["numpy epoch at batch 128 vs plain NumPy reference"]["verdict"] in (
        "PASS", "FAIL")


@pytest.mark.skipif(nn.get_backend().name != "numpy",
                    reason="the benchmark scripts are run once, in the numpy session")
def test_xor_benchmark_runs_and_solves_xor(tmp_path):
    results = run_script(["bench/xor.py", "--quick"], tmp_path)["xor"]
    assert results["targets"] and all(t["value"] > 0 for t in results["targets"])
