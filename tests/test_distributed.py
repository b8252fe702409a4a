"""Data parallelism (nnscratch.distributed), tested as real MPI ranks.

Each test starts ``mpiexec -n 2`` or ``-n 3`` (the one installed next to this Python, from
the mpich wheel) on a script in tests/mpi_programs/, with a timeout: a rank that waits
forever for another is a failure, not a hung test session. The same script run as one
plain process is the reference: N ranks at a global batch B must take the steps one
process takes at batch B.

The rest (sharding arithmetic, the one-process communicator, the launch detection) runs
in this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import distributed
from nnscratch.errors import BackendError, ConfigError

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "tests" / "mpi_programs" / "train.py"
MNIST_PROGRAM = ROOT / "tests" / "mpi_programs" / "mnist.py"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
TIMEOUT = 120  # seconds for a whole mpiexec run; the runs here take a few
FAILURE_TIMEOUT = 30  # a failing rank must end every rank well within this

sys.path.insert(0, str(PROGRAM.parent))
import train as program  # noqa: E402  (tests/mpi_programs/train.py: the problem, the model)


def _mpi_missing() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return ("mpi4py is not installed in this environment; `nox -s distributed` installs "
                "it (pip install 'nnscratch[mpi]')")
    if not MPIEXEC.exists():
        return f"no mpiexec next to {sys.executable} (pip install mpich)"
    if nn.get_backend().name == "jax":
        return ("the mpiexec runs belong to the distributed session (numpy): on jax every "
                "rank steps eagerly (the all-reduce sits between backward and the update), "
                "tens of times slower, past these tests' time limits")
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=_mpi_missing() or "")


def _environment(threads: dict[str, str] | None = None) -> dict[str, str]:
    """This environment for the ranks, with the thread variables ``threads`` (by default
    1 thread per rank: 2 ranks on 2 cores; {} leaves them to nnscratch)."""
    env = {name: value for name, value in os.environ.items()
           if name not in nn.backend.THREAD_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"} if threads is None
               else threads)
    return env


def launch(ranks: int | None, *args: str | Path, program: Path = PROGRAM,
           timeout: float = TIMEOUT, threads: dict[str, str] | None = None) \
        -> subprocess.CompletedProcess:
    """Run ``program args`` on ``ranks`` MPI ranks (None: one plain process)."""
    command = [sys.executable, str(program), *map(str, args)]
    if ranks is not None:
        command = [str(MPIEXEC), "-n", str(ranks), *command]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=_environment(threads), cwd=ROOT)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()  # mpiexec passes it on to the ranks and cleans up
        try:
            out, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        pytest.fail(f"{' '.join(command)} did not end within {timeout} s (ranks waiting for "
                    f"each other?)\nstdout:\n{out}\nstderr:\n{err}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def outputs(folder: Path, ranks: int) -> list[dict]:
    """What each rank wrote: θ, the history, the scores, the rows of its batches."""
    found = []
    for rank in range(ranks):
        with np.load(folder / f"rank{rank}.npz") as saved:
            found.append({"theta": saved["theta"], "size": int(saved["size"]),
                          "history": json.loads(str(saved["history"])),
                          "scores": json.loads(str(saved["scores"])), "rows": saved["rows"]})
    return found


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    """The reference: the equivalence case as one plain process."""
    if _mpi_missing():
        pytest.skip(_mpi_missing())
    folder = tmp_path_factory.mktemp("one")
    succeeded(launch(None, "equivalence", folder))
    (reference,) = outputs(folder, 1)
    assert reference["size"] == 1
    return reference


def assert_same_run(got: dict, expected: dict, tolerance: float) -> None:
    assert got["theta"].shape == expected["theta"].shape
    np.testing.assert_allclose(got["theta"], expected["theta"], rtol=0, atol=tolerance)
    assert got["history"].keys() == expected["history"].keys()
    for key, values in expected["history"].items():
        np.testing.assert_allclose(got["history"][key], values, rtol=0, atol=tolerance,
                                   err_msg=key)


# -- N ranks take one process's steps ----------------------------------------------------------


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_train_the_one_process_model_float64(ranks, one_process, tmp_path):
    """37 samples in global batches of 10 (shards of 5/5 on 2 ranks, 3/3/4 on 3, the last
    batch of 7 as 3/4 and 2/2/3), Adam, an L2 penalty, 3 epochs = 12 steps: every rank
    ends with the one process's θ, history and validation scores to 1e-10, and the
    ranks hold bit-identical θ."""
    succeeded(launch(ranks, "equivalence", tmp_path))
    ranks_out = outputs(tmp_path, ranks)
    for got in ranks_out:
        assert got["size"] == ranks
        assert_same_run(got, one_process, 1e-10)
        for key, value in one_process["scores"].items():  # evaluate with the communicator
            assert got["scores"][key] == pytest.approx(value, abs=1e-12), key
        np.testing.assert_array_equal(got["theta"], ranks_out[0]["theta"])
    # the steps moved θ a long way from its start: the agreement is not trivial
    initial = program.theta(program.build_model())
    assert np.abs(one_process["theta"] - initial).max() > 0.05


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_each_rank_trains_on_its_shard_of_each_global_batch(ranks, one_process, tmp_path):
    """Rank r takes rows ⌊r·B/N⌋ .. ⌊(r+1)·B/N⌋ − 1 of each global batch: the row counts
    follow that formula (a split that gave every rank the whole batch, then averaged,
    would reach the same θ), and the ranks' rows add up to the one process's batch."""
    succeeded(launch(ranks, "equivalence", tmp_path))
    ranks_out = outputs(tmp_path, ranks)
    batches = [10, 10, 10, 7] * program.EPOCHS
    reference = one_process["rows"]  # (rows, sum of the inputs) per step
    np.testing.assert_array_equal(reference[:, 0], batches)
    for rank, got in enumerate(ranks_out):
        expected_rows = [(rank + 1) * size // ranks - rank * size // ranks for size in batches]
        np.testing.assert_array_equal(got["rows"][:, 0], expected_rows)
    total = sum(got["rows"][:, 1] for got in ranks_out)
    np.testing.assert_allclose(total, reference[:, 1], rtol=1e-12, atol=1e-12)


@needs_mpi
def test_rank_zero_weights_overwrite_the_others(one_process, tmp_path):
    """Ranks 1 and 2 build the model from other seeds; θ is broadcast from rank 0 when fit
    starts, so the run is still the one process's run."""
    succeeded(launch(3, "scrambled", tmp_path))
    for got in outputs(tmp_path, 3):
        assert_same_run(got, one_process, 1e-10)
    scrambled = program.theta(program.build_model(seed=100))
    assert np.abs(scrambled - program.theta(program.build_model(seed=0))).max() > 0.1


@needs_mpi
def test_full_batch_gradient_descent_on_three_ranks(tmp_path):
    """batch_size=None: one global batch of 37 split 12/12/13, five SGD steps."""
    (tmp_path / "one").mkdir()
    (tmp_path / "three").mkdir()
    succeeded(launch(None, "full-batch-sgd", tmp_path / "one"))
    succeeded(launch(3, "full-batch-sgd", tmp_path / "three"))
    (reference,) = outputs(tmp_path / "one", 1)
    for got in outputs(tmp_path / "three", 3):
        assert_same_run(got, reference, 1e-12)


@needs_mpi
def test_a_callback_stopping_on_one_rank_stops_every_rank(tmp_path):
    """Only rank 1 asks to stop after epoch 2: every rank stops there (none waits for the
    others in a third epoch), with the one process's weights after two epochs."""
    (tmp_path / "one").mkdir()
    succeeded(launch(None, "stop-one-rank", tmp_path / "one"))
    (tmp_path / "two").mkdir()
    succeeded(launch(2, "stop-one-rank", tmp_path / "two"))
    (reference,) = outputs(tmp_path / "one", 1)
    assert len(reference["history"]["loss"]) == program.EPOCHS  # one process: no stop
    for got in outputs(tmp_path / "two", 2):
        assert len(got["history"]["loss"]) == 2


@needs_mpi
def test_resumed_on_two_ranks_equals_uninterrupted(one_process, tmp_path):
    """Two epochs, a checkpoint written by rank 0, then every rank resumes from it for
    the third: the weights of the uninterrupted one-process run."""
    succeeded(launch(2, "resume", tmp_path))
    for got in outputs(tmp_path, 2):
        assert got["scores"]["resumed_from"] == 2
        np.testing.assert_allclose(got["theta"], one_process["theta"], rtol=0, atol=1e-10)
        for key, values in got["history"].items():  # the resumed fit's epoch: the third
            np.testing.assert_allclose(values, one_process["history"][key][2:], atol=1e-10)


# -- failures end every rank -------------------------------------------------------------------


def assert_all_ranks_failed(result: subprocess.CompletedProcess, *messages: str) -> str:
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    for message in messages:
        assert message in text, text
    return text


@needs_mpi
@pytest.mark.parametrize("how", ["run", "uncaught"])
def test_a_rank_raising_mid_epoch_ends_every_rank(how, tmp_path):
    """Rank 1 raises at epoch 2, step 3 while rank 0 waits in the next all-reduce: both
    end, non-zero, quickly, with rank 1's message (through run(), and through the
    excepthook that init() installs when a script does not use run())."""
    started = time.monotonic()
    args = ["raise", tmp_path] + (["uncaught"] if how == "uncaught" else [])
    result = launch(2, *args, timeout=FAILURE_TIMEOUT)
    assert_all_ranks_failed(result, "[rank 1/2]", "rank 1 fails on purpose at epoch 2, step 3")
    assert time.monotonic() - started < FAILURE_TIMEOUT


@needs_mpi
def test_a_rank_given_no_data_ends_every_rank(tmp_path):
    result = launch(2, "no-data", tmp_path, timeout=FAILURE_TIMEOUT)
    assert_all_ranks_failed(result, "[rank 1/2]", "DataError", "X is empty")


@needs_mpi
def test_more_ranks_than_samples_in_a_batch_is_refused_before_training(tmp_path):
    result = launch(3, "too-many-ranks", tmp_path, timeout=FAILURE_TIMEOUT)
    text = assert_all_ranks_failed(result, "ConfigError",
                                   "3 ranks cannot share a batch of 1 sample(s)",
                                   "37 samples in global batches of 12")
    assert "epoch" not in text.split("ConfigError")[0].lower()  # nothing trained


@needs_mpi
def test_ranks_with_different_models_are_refused(tmp_path):
    """Rank 1 builds 6-9-3, rank 0 6-8-3: a ConfigError naming the difference, not a
    broadcast of the wrong size or a hang."""
    result = launch(2, "mismatch", tmp_path, timeout=FAILURE_TIMEOUT)
    assert_all_ranks_failed(result, "ConfigError", "the ranks are not training the same run",
                            "model: rank 0 has")


@needs_mpi
def test_ctrl_c_ends_every_rank_with_rank_zeros_checkpoint(tmp_path):
    """SIGINT to mpiexec (what Ctrl-C in a terminal does: mpiexec forwards it to every
    rank) while two ranks train: rank 0 alone stops, every rank exits with 130, and rank
    0's last checkpoint is whole and resumable."""
    command = [str(MPIEXEC), "-n", "2", sys.executable, str(PROGRAM), "interrupt",
               str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=_environment(), cwd=ROOT)
    checkpoint = tmp_path / "run.safetensors"
    try:
        deadline = time.monotonic() + TIMEOUT
        while not checkpoint.exists() and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.05)
        time.sleep(0.3)  # a few more epochs
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=FAILURE_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == distributed.EXIT_INTERRUPTED, out + err
    assert "[rank 0/2] interrupted" in err
    assert "[rank 1/2]" not in err  # rank 1 ignored Ctrl-C and was ended by rank 0's exit
    run = nn.resume(checkpoint)
    assert run.epoch >= 1
    assert len(run.history["loss"]) == run.epoch


# -- each rank its share of the cores -----------------------------------------------------


def _thread_reports(folder: Path, ranks: int) -> list[dict]:
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(ranks)]


@needs_mpi
def test_each_rank_gets_its_share_of_the_cores(tmp_path):
    """No thread variable set: 2 ranks on this machine's C cores run ⌊C/2⌋ BLAS/OpenMP
    threads each (at least 1), not C each (2 ranks on 2 cores ran 4 threads, 12 times
    slower than one process), and say so: "2 ranks × 1 thread" on 2 cores."""
    succeeded(launch(2, "threads", tmp_path, threads={}))
    share = max(1, min(len(os.sched_getaffinity(0)), (os.cpu_count() or 1) // 2))
    for report in _thread_reports(tmp_path, 2):
        assert report["local_size"] == 2 and report["threads"] == share
        assert report["pools"] and set(report["pools"]) == {share}, report
        assert report["describe"] == f"2 ranks × {share} thread{'s' * (share > 1)}"


@needs_mpi
def test_a_thread_count_the_user_set_wins(tmp_path):
    """OPENBLAS_NUM_THREADS=2 given: the ranks keep 2 BLAS threads each, and say so."""
    succeeded(launch(2, "threads", tmp_path, threads={"OPENBLAS_NUM_THREADS": "2"}))
    for report in _thread_reports(tmp_path, 2):
        assert report["threads"] == 2 and report["describe"] == "2 ranks × 2 threads"
        assert 2 in report["pools"], report


# -- float32 on real MNIST -------------------------------------------------------------------


@needs_mpi
@pytest.mark.slow
def test_mnist_on_two_ranks_equals_one_process_float32(mnist_path, tmp_path):
    """The first 8000 MNIST training images, 784-512-256-10, Adam, batch 128, 2 epochs:
    1 and 2 ranks end with the same weights up to float32 summation order (relative
    difference per parameter ≤ 1e-4), and the same test accuracy."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    succeeded(launch(None, mnist_path, one, program=MNIST_PROGRAM, timeout=300))
    succeeded(launch(2, mnist_path, two, program=MNIST_PROGRAM, timeout=300))
    with np.load(one / "rank0.npz") as reference:
        expected = {key: reference[key] for key in reference.files}
    for rank in range(2):
        with np.load(two / f"rank{rank}.npz") as saved:
            for key in expected:
                if key == "accuracy":
                    assert float(saved[key]) == pytest.approx(float(expected[key]), abs=2e-4)
                    continue
                difference = np.linalg.norm(saved[key] - expected[key])
                assert difference <= 1e-4 * np.linalg.norm(expected[key]), key
    assert float(expected["accuracy"]) > 0.9  # it did learn


# -- in this process: the arithmetic and the one-process communicator ------------------------


@pytest.mark.parametrize("rows,ranks", [(10, 3), (7, 3), (37, 3), (5, 5), (128, 2), (3, 2)])
def test_shards_cover_a_batch_once_in_order(rows, ranks):
    pieces = [distributed.shard(100, 100 + rows, rank, ranks) for rank in range(ranks)]
    assert pieces[0][0] == 100 and pieces[-1][1] == 100 + rows
    assert all(pieces[r][1] == pieces[r + 1][0] for r in range(ranks - 1))
    sizes = [stop - start for start, stop in pieces]
    assert set(sizes) <= {rows // ranks, -(-rows // ranks)}


class FakeComm(distributed.Communicator):
    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size = rank, size


def test_local_batches_of_rank_one_of_three():
    """37 samples, global batch 10: rank 1 of 3 takes rows 3..5, 13..15, 23..25, 32..33."""
    rows, bounds, shares = distributed.local_batches(37, 10, FakeComm(1, 3))
    assert rows.tolist() == [3, 4, 5, 13, 14, 15, 23, 24, 25, 32, 33]
    assert bounds == [(0, 3), (3, 6), (6, 9), (9, 11)]
    assert shares == pytest.approx([0.3, 0.3, 0.3, 2 / 7])


def test_a_batch_smaller_than_the_ranks_is_refused():
    with pytest.raises(ConfigError, match="3 ranks cannot share a batch of 1 sample"):
        distributed.local_batches(37, 12, FakeComm(0, 3))
    with pytest.raises(ConfigError, match="4 ranks cannot share a batch of 3 sample"):
        distributed.local_batches(3, 128, FakeComm(0, 4))


def test_one_process_needs_no_mpi(monkeypatch):
    """Without an MPI launch, init() is rank 0 of 1, without importing mpi4py."""
    for name in distributed.LAUNCH_SIZE_VARIABLES + distributed.LAUNCH_RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(distributed, "_current", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # importing it would fail
    comm = distributed.init()
    assert (comm.rank, comm.size) == (0, 1)
    array = nn.get_backend().asarray(np.array([1.0, 2.0]))
    assert comm.allreduce_(array) is array
    assert comm.allreduce_scalars([3, 4.5]) == [3.0, 4.5]
    assert distributed.run(lambda: 7) == 7


def test_an_mpi_launch_without_mpi4py_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setattr(distributed, "_current", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(BackendError, match=r"PMI_SIZE=2.*pip install 'nnscratch\[mpi\]'"):
        distributed.init()



class TwoEqualRanks:
    """A stand-in for mpi4py's COMM_WORLD in this process: an all-reduce doubles the
    buffer (the sum of two ranks holding the same values), a broadcast writes rank 0's
    value, 7, everywhere. It sees only what MPI would see: the host buffer."""

    IN_PLACE, SUM, COMM_TYPE_SHARED = object(), object(), object()

    def Get_rank(self) -> int:  # noqa: N802 - mpi4py's names
        return 1

    def Get_size(self) -> int:  # noqa: N802
        return 2

    def Split_type(self, kind: object, key: int) -> TwoEqualRanks:  # noqa: N802
        return self

    def Allreduce(self, send: object, buffer: np.ndarray, op: object) -> None:  # noqa: N802
        assert send is self.IN_PLACE and op is self.SUM
        buffer *= 2

    def Bcast(self, buffer: np.ndarray, root: int) -> None:  # noqa: N802
        buffer[...] = 7


@pytest.mark.parametrize("dlpack", ["view", "copy"])
def test_allreduce_and_broadcast_write_the_device_array_in_place(dlpack, backend, monkeypatch):
    """Where DLPack gives a NumPy view of the array's memory MPI works on it directly;
    where it does not (a GPU array), on a host copy written back. Either way the array
    itself, on its device, holds the result."""
    if dlpack == "copy":
        monkeypatch.setattr(distributed, "_host_view", lambda array: None)
    comm = distributed.MPICommunicator(TwoEqualRanks(), TwoEqualRanks)
    assert (comm.rank, comm.size, comm.local_rank) == (1, 2, 1)
    array = backend.asarray(np.array([1.0, -2.5, 3.0], dtype=np.float32))
    window = array[1:]  # a view: sees the change only if `array` itself was written
    if not nn.backend.mutable(array):  # JAX: new arrays hold the results
        if dlpack == "view":
            assert distributed._host_view(array) is None  # never a view to write into
        summed = comm.allreduce_(array)
        np.testing.assert_array_equal(nn.to_numpy(summed), [2.0, -5.0, 6.0])
        np.testing.assert_array_equal(nn.to_numpy(array), [1.0, -2.5, 3.0])  # unchanged
        np.testing.assert_array_equal(nn.to_numpy(comm.broadcast_(summed)), [7.0] * 3)
        return
    if dlpack == "view":  # host memory on every CPU backend: MPI reads it without a copy
        assert distributed._host_view(array) is not None
    assert comm.allreduce_(array) is array
    np.testing.assert_array_equal(nn.to_numpy(array), [2.0, -5.0, 6.0])
    np.testing.assert_array_equal(nn.to_numpy(window), [-5.0, 6.0])
    assert array.device == backend.device
    comm.broadcast_(array)
    np.testing.assert_array_equal(nn.to_numpy(array), [7.0, 7.0, 7.0])


# -- bench/distributed.py: the model's arithmetic --------------------------------------------


@pytest.fixture(scope="module")
def bench():
    """bench/distributed.py as a module (it imports its neighbour ``common``)."""
    import importlib.util

    folder = ROOT / "bench"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("bench_distributed",
                                                      folder / "distributed.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def test_the_bench_counts_the_mlps_parameters(bench):
    for hidden, expected in (((256, 128), 235_146), ((512, 256), 535_818)):
        assert bench.parameter_count(hidden) == expected
        model = nn.Sequential(nn.Dense(784, hidden[0]), nn.ReLU(),
                              nn.Dense(hidden[0], hidden[1]), nn.ReLU(), nn.Dense(hidden[1], 10))
        assert model.parameter_count() == expected


def test_ring_allreduce_model(bench):
    """2 ranks at 100 Gb/s, 5 µs: 4P bytes once over the link, 2 latencies; 64 ranks:
    126/64 of it and 126 latencies."""
    bandwidth = 100e9 / 8
    two = bench.ring_allreduce_seconds(235_146, 2, bandwidth, 5e-6)
    assert two == pytest.approx(4 * 235_146 / bandwidth + 2 * 5e-6)
    many = bench.ring_allreduce_seconds(235_146, 64, bandwidth, 5e-6)
    assert many == pytest.approx(126 / 64 * 4 * 235_146 / bandwidth + 126 * 5e-6)


def test_at_the_break_even_batch_n_ranks_take_one_process_time(bench):
    per_sample, fixed, allreduce = 13e-6, 0.7e-3, 0.27e-3
    for ranks in (2, 3, 16):
        batch = bench.break_even_batch(per_sample, allreduce, ranks)
        one = per_sample * batch + fixed
        many = per_sample * batch / ranks + fixed + allreduce
        assert many == pytest.approx(one)
        assert per_sample * 2 * batch / ranks + fixed + allreduce < per_sample * 2 * batch + fixed


def test_step_costs_from_two_batch_sizes(bench):
    """c and t₀ come back from the fastest epochs of runs whose step time is c·B + t₀."""
    runs = [{"network": "net", "ranks": 1, "threads": 1, "batch": batch, "steps": 10,
             "epoch_seconds": [10 * (2e-5 * batch + 1e-3), 99.0]} for batch in (128, 512)]
    runs.append({**runs[0], "ranks": 2, "epoch_seconds": [99.0]})  # not a 1-thread run
    per_sample, fixed = bench.step_costs(runs, "net")
    assert per_sample == pytest.approx(2e-5) and fixed == pytest.approx(1e-3)


# -- the digit recognizer, data-parallel, with no extra flag -----------------------------


EXAMPLE = ROOT / "examples" / "mnist.py"


@needs_mpi
def test_the_example_trains_one_model_on_two_ranks_as_one_process_does(tmp_path, mnist_path):
    """`mpiexec -n 2 python examples/mnist.py ... --save A` and the same flags in one
    process (`--save B`): one `test accuracy` line, a model written by rank 0 only, and
    the same weights up to float32 summation order."""
    flags = ["--data", mnist_path, "--epochs", "2", "--limit", "4000", "--hidden", "64",
             "--quiet"]
    two = launch(2, *flags, "--save", tmp_path / "A.safetensors", program=EXAMPLE)
    one = launch(None, *flags, "--save", tmp_path / "B.safetensors", program=EXAMPLE)
    assert two.returncode == 0 and one.returncode == 0, two.stderr + one.stderr
    assert two.stdout.splitlines()[0] == "2 ranks × 1 thread", two.stdout  # OMP_NUM_THREADS=1
    assert "rank" not in one.stdout.splitlines()[0]
    lines = [line for line in two.stdout.splitlines() if line.startswith("test accuracy")]
    assert len(lines) == 1 and lines == [one.stdout.splitlines()[-1]], two.stdout
    assert two.stdout.count("saved the model to") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["A.safetensors",
                                                                "B.safetensors"]
    a, b = nn.load(tmp_path / "A.safetensors"), nn.load(tmp_path / "B.safetensors")
    for left, right in zip(a.parameters(), b.parameters()):
        left, right = nn.to_numpy(left.value), nn.to_numpy(right.value)
        assert np.linalg.norm(left - right) <= 1e-4 * np.linalg.norm(right)
