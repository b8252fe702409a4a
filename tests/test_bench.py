"""The benchmarks compare like with like: the plain NumPy rows train the same network
to the same weights as nnscratch, and the scripts run end to end.

A benchmark row that did less work (a forgotten bias gradient, an Adam without bias
correction) would look fast and be wrong; these tests pin every row to nnscratch's
own result from the same start. What the scripts compute from their timings (per-round
ratios, the summary rows, PASS/FAIL against each target) is pinned on constructed
timings, and the results files of the quick runs must agree with their own timings.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from types import SimpleNamespace

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


# -- what the bench computes from its timings ------------------------------------------


@pytest.fixture(scope="module")
def common():
    return import_bench("common")


def test_spread_and_ratio_are_per_round(common):
    assert common.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0,
                                              "samples": [3.0, 1.0, 2.0]}
    assert common.spread([1.0, 2.0, 3.0, 10.0])["median"] == 2.5
    # round by round: 2/1, 6/3, 3/2; the ratio of the medians would be 3/2, of the
    # sorted samples 1.5, 2, 2
    assert common.ratio([2.0, 6.0, 3.0], [1.0, 3.0, 2.0]) == {
        "median": 2.0, "min": 1.5, "max": 2.0, "samples": [2.0, 2.0, 1.5]}


def test_verdict_on_both_sides_of_the_limit(common):
    assert common.verdict(0.74, 0.75) == "PASS"
    assert common.verdict(0.75, 0.75) == "PASS"  # "at most": the limit itself passes
    assert common.verdict(0.76, 0.75) == "FAIL"
    assert common.verdict(5.0, 5.0, at_most=False) == "PASS"  # "at least"
    assert common.verdict(4.9, 5.0, at_most=False) == "FAIL"
    assert common.verdict(6.0, 5.0, at_most=False) == "PASS"
    assert common.verdict(None, 0.75) == "n/a"


def target_rows(mlp, pytorch: float, reference: float, matmuls: float) -> list[dict]:
    """Results as mlp.main builds them, with the given medians for nnscratch's fit row;
    another batch size, with the opposite verdicts, must be ignored."""
    def results(batch: int, factor: float) -> dict:
        ours = {"name": "nnscratch numpy (fit)",
                "ratio_to_pytorch": {"median": pytorch * factor},
                "ratio_to_reference": {"median": reference * factor},
                "ratio_to_matmuls": {"median": matmuls * factor}}
        floor = {"name": mlp.FLOOR, "ratio_to_matmuls": {"median": 1.05}}
        return {"batch_size": batch, "rows": [ours, floor]}

    return [results(64, 10.0), results(mlp.TARGET_BATCH, 1.0), results(512, 0.1)]


@pytest.mark.parametrize("side", ["under", "over"])
def test_mlp_targets_pass_at_or_under_their_limits_and_fail_over(mlp, side):
    factor = 0.99 if side == "under" else 1.01
    limits = [mlp.TARGET_VS_PYTORCH, mlp.TARGET_VS_REFERENCE, mlp.TARGET_VS_MATMULS,
              mlp.TARGET_MEMORY]
    values = [limit * factor for limit in limits]
    targets = mlp.evaluate_targets(target_rows(mlp, *values[:3]), {"ratio": values[3]})
    verdict = "PASS" if side == "under" else "FAIL"
    assert [(t["value"], t["at_most"], t["verdict"]) for t in targets[:4]] == [
        (value, limit, verdict) for value, limit in zip(values, limits)]
    assert "PyTorch" in targets[0]["target"] and "reference" in targets[1]["target"]
    assert "matmuls" in targets[2]["target"] and "memory" in targets[3]["target"]
    assert targets[4] == {"target": "for scale: NumPy floor (no temporaries) vs matmuls",
                          "value": 1.05, "at_most": None, "verdict": "info"}


def test_mlp_targets_without_a_measurement_say_so(mlp):
    targets = mlp.evaluate_targets(target_rows(mlp, 0.5, 0.5, 0.5)[:1], None)  # batch 64
    assert [(t["value"], t["verdict"]) for t in targets] == [(None, "n/a")] * 4


def test_mlp_summary_rows_are_ratios_to_their_peers_in_the_same_round(mlp, common):
    def candidate(name: str, seconds: list[float]) -> object:
        return common.Candidate(name=name, run=common.nothing, steps=10, device="cpu",
                                seconds=seconds)

    ours = "nnscratch numpy (fit)"
    run = SimpleNamespace(batch=128, candidates=[
        candidate(ours, [0.002, 0.004]),
        candidate(mlp.PYTORCH_CPU, [0.001, 0.004]),
        candidate(mlp.REFERENCE, [0.004, 0.002]),
        candidate(mlp.MATMULS, [0.001, 0.001]),
    ], weights_after_warmup={
        ours: [np.array([[0.0, 0.5]], dtype=np.float32), np.array([-1e-3])],
        mlp.REFERENCE: [np.zeros((1, 2)), np.zeros(1)],
        mlp.MATMULS: [],
    })
    rows = {row["name"]: row for row in mlp.summarize(run)}
    row = rows[ours]
    assert row["ms_per_step"] == {"median": 3.0, "min": 2.0, "max": 4.0,
                                  "samples": [2.0, 4.0]}
    assert row["epoch_s"]["samples"] == pytest.approx([0.002 * 469, 0.004 * 469])  # MNIST
    assert row["ratio_to_pytorch"]["samples"] == pytest.approx([2.0, 1.0])
    assert row["ratio_to_reference"]["samples"] == pytest.approx([0.5, 2.0])
    assert row["ratio_to_matmuls"]["samples"] == pytest.approx([2.0, 4.0])
    assert row["matmul_gflops"]["samples"] == pytest.approx(
        [mlp.step_flops(128) / 0.002 / 1e9, mlp.step_flops(128) / 0.004 / 1e9])
    assert row["max_abs_weight_diff_after_warmup"] == 0.5
    assert rows[mlp.REFERENCE]["ratio_to_reference"]["samples"] == [1.0, 1.0]
    assert rows[mlp.REFERENCE]["max_abs_weight_diff_after_warmup"] == 0.0
    assert "max_abs_weight_diff_after_warmup" not in rows[mlp.MATMULS]  # no weights
    assert rows[mlp.PYTORCH_CPU]["ratio_to_pytorch"]["samples"] == [1.0, 1.0]


# -- the scripts, end to end --------------------------------------------------------------


def run_script(args: list[str], tmp_path) -> dict:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, *args, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(out.read_text(encoding="utf-8"))


def assert_per_round_ratio(stats: dict, numerator: dict, denominator: dict) -> None:
    """``stats`` is the per-round ratio of two rows' timings (as stored, in ms or µs)."""
    expected = [a / b for a, b in zip(numerator["samples"], denominator["samples"])]
    assert stats["samples"] == pytest.approx(expected, rel=1e-9)
    assert stats["median"] == pytest.approx(float(np.median(expected)), rel=1e-9)


@pytest.mark.skipif(nn.get_backend().name != "numpy",
                    reason="the benchmark scripts are run once, in the numpy session")
def test_mlp_benchmark_runs_and_reports_every_row(mlp, tmp_path):
    results = run_script(["bench/mlp.py", "--quick", "--backends", "numpy",
                          "--batch-sizes", "128", "--no-memory"], tmp_path)["mlp"]
    assert [entry["batch_size"] for entry in results["results"]] == [128]
    rows = {row["name"]: row for row in results["results"][0]["rows"]}
    ours, reference = rows["nnscratch numpy (fit)"], rows[mlp.REFERENCE]
    expected = {"nnscratch numpy (fit)", "nnscratch numpy (manual loop)", mlp.REFERENCE,
                mlp.MATMULS, mlp.FLOOR}
    if importlib.util.find_spec("torch") is not None:
        expected.add(mlp.PYTORCH_CPU)
        if "PyTorch cpu (Adam, fused)" not in results["skipped"]:  # where torch has it
            expected.add("PyTorch cpu (Adam, fused)")
    assert set(rows) == expected
    for name, row in rows.items():
        timings = row["ms_per_step"]
        assert len(timings["samples"]) == 2, name  # --quick: two interleaved rounds
        assert timings["min"] <= timings["median"] <= timings["max"], name
        # an MNIST epoch: 60,000 samples in 469 steps of (at most) 128
        assert row["epoch_s"]["median"] == pytest.approx(timings["median"] * 469 / 1e3)
        assert_per_round_ratio(row["ratio_to_reference"], timings, reference["ms_per_step"])
        assert_per_round_ratio(row["ratio_to_matmuls"], timings,
                               rows[mlp.MATMULS]["ms_per_step"])
        if mlp.PYTORCH_CPU in rows:
            assert_per_round_ratio(row["ratio_to_pytorch"], timings,
                                   rows[mlp.PYTORCH_CPU]["ms_per_step"])
        # every row trained the same network: weights within float32 noise after
        # warm-up (the matmuls row has no weights)
        if name == mlp.MATMULS:
            assert "max_abs_weight_diff_after_warmup" not in row
        else:
            assert row["max_abs_weight_diff_after_warmup"] < 1e-3, name
    assert reference["ratio_to_reference"]["samples"] == [1.0, 1.0]
    assert reference["max_abs_weight_diff_after_warmup"] == 0.0
    # the targets: nnscratch's fit row at batch 128 against each limit, no memory target
    # (--no-memory), and the floor for scale
    targets = results["targets"]
    measured = [ours["ratio_to_pytorch"]["median"] if mlp.PYTORCH_CPU in rows else None,
                ours["ratio_to_reference"]["median"], ours["ratio_to_matmuls"]["median"],
                None]
    assert [t["value"] for t in targets[:4]] == measured
    for target in targets[:4]:
        value, limit = target["value"], target["at_most"]
        assert target["verdict"] == (
            "n/a" if value is None else "PASS" if value <= limit else "FAIL"), target
    assert targets[4]["value"] == rows[mlp.FLOOR]["ratio_to_matmuls"]["median"]
    assert results["memory"] is None


@pytest.mark.skipif(nn.get_backend().name != "numpy",
                    reason="the benchmark scripts are run once, in the numpy session")
def test_xor_benchmark_runs_and_solves_xor(xor, tmp_path):
    results = run_script(["bench/xor.py", "--quick"], tmp_path)["xor"]
    rows = {row["name"]: row for row in results["results"]}
    reference = rows[xor.REFERENCE]
    expected = {"nnscratch numpy (fit)", "nnscratch numpy (manual loop)", xor.REFERENCE}
    torch_installed = importlib.util.find_spec("torch") is not None
    if torch_installed:
        expected.add(xor.PYTORCH)
    assert set(rows) == expected
    for name, row in rows.items():
        # 500 epochs from the same weights: the same network, XOR solved (the outputs
        # are 0.44, 0.55, 0.58, 0.40 at that point)
        assert row["solved"], (name, row["predictions"])
        np.testing.assert_allclose(row["predictions"], reference["predictions"], atol=2e-4)
        assert row["final_loss"] == pytest.approx(reference["final_loss"], rel=1e-5)
        assert_per_round_ratio(row["ratio_to_reference"], row["us_per_epoch"],
                               reference["us_per_epoch"])
        if torch_installed:  # "x faster": PyTorch's time over this row's
            assert_per_round_ratio(row["speedup_vs_pytorch"], rows[xor.PYTORCH]["us_per_epoch"],
                                   row["us_per_epoch"])
    assert reference["ratio_to_reference"]["samples"] == [1.0, 1.0]
    # a target per nnscratch row: at least TARGET_SPEEDUP times faster than PyTorch
    targets = results["targets"]
    if not torch_installed:
        assert targets == []
        return
    assert [t["target"] for t in targets] == [
        "nnscratch numpy (fit) vs PyTorch (x faster)",
        "nnscratch numpy (manual loop) vs PyTorch (x faster)"]
    for target, name in zip(targets, ("nnscratch numpy (fit)", "nnscratch numpy (manual loop)")):
        value = rows[name]["speedup_vs_pytorch"]["median"]
        assert target["value"] == value and target["at_least"] == xor.TARGET_SPEEDUP
        assert target["verdict"] == ("PASS" if value >= xor.TARGET_SPEEDUP else "FAIL")


@pytest.mark.skipif(nn.get_backend().name != "numpy",
                    reason="the benchmark scripts are run once, in the numpy session")
def test_scaling_benchmark_times_the_same_network_and_reports_per_round_ratios(tmp_path):
    pytest.importorskip("torch", reason="scaling.py compares with PyTorch")
    results = run_script(["bench/scaling.py", "--sizes", "16x8,8-4x4", "--rounds", "2",
                          "--seconds", "1e-7", "--data", str(tmp_path / "no-mnist")],
                         tmp_path)["scaling"]
    rows = results["rows"]
    assert [(row["hidden"], row["batch"]) for row in rows] == [(16, 8), ("8-4", 4)]
    assert rows[0]["parameters"] == 785 * 16 + 17 * 16 + 17 * 10
    assert rows[1]["parameters"] == 785 * 8 + 9 * 4 + 5 * 10
    for row in rows:
        assert row["steps"] == 2 and row["rounds"] == 2  # the fewest steps
        ms = row["ms_per_step"]
        assert_per_round_ratio(row["torch_over_nnscratch"], ms["PyTorch cpu (Adam)"],
                               ms["nnscratch numpy (fit)"])
        # two Adam steps from the same weights on the same samples: the same network
        assert row["max_abs_weight_difference_to_torch_after_warmup"][
            "nnscratch numpy (fit)"] < 1e-5


def test_scaling_step_flops_match_the_mlp_formula(mlp):
    scaling = import_bench("scaling")
    assert scaling.step_flops("256-128", 128) == mlp.step_flops(128) == 1_007_104 * 128
    assert scaling.layer_sizes(2048) == (784, 2048, 2048, 10)
    assert scaling.steps_per_round(4096, 512, 0.2) == scaling.MIN_STEPS
    assert scaling.steps_per_round(128, 64, 10.0) == 200
