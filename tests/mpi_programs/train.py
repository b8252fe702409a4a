"""A training run for tests/test_distributed.py: the same script runs as one process
(``python train.py CASE OUT``) and as N ranks (``mpiexec -n N python train.py CASE OUT``).

Each rank writes what it ended with to ``OUT/rank<r>.npz`` (θ, the history, the scores of
``evaluate``); the test compares the ranks with each other and with the one process.
The cases that must fail make one rank (or all) go wrong on purpose.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import nnscratch as nn

SAMPLES, FEATURES, CLASSES, HIDDEN = 37, 6, 3, 8
GLOBAL_BATCH = 10  # 37 samples: batches of 10, 10, 10, 7; on 3 ranks shards of 3 or 4
EPOCHS = 3


def problem(dtype: str = "float64") -> dict[str, np.ndarray]:
    """A small 3-class problem (host arrays), the same on every rank."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(SAMPLES + 11 + 13, FEATURES))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.8)
    X = X.astype(dtype)
    return {"X": X[:SAMPLES], "y": y[:SAMPLES],
            "X_val": X[SAMPLES:SAMPLES + 11], "y_val": y[SAMPLES:SAMPLES + 11],
            "X_test": X[SAMPLES + 11:], "y_test": y[SAMPLES + 11:]}


class RowCounter(nn.Layer):
    """The identity, noting each training batch's rows: how many, and their sum."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    def forward(self, x: object, training: bool = False) -> object:
        if training:
            self.seen.append((int(x.shape[0]), float(nn.get_backend().xp.sum(x))))
        return x

    def backward(self, grad_output: object, need_input_grad: bool = True) -> object:
        return grad_output


def build_model(seed: int = 0, hidden: int = HIDDEN, dtype: str = "float64",
                counter: RowCounter | None = None) -> nn.Sequential:
    nn.seed(seed)
    first = [counter] if counter is not None else []
    return nn.Sequential(*first, nn.Dense(FEATURES, hidden, dtype=dtype, l2=1e-3), nn.ReLU(),
                         nn.Dense(hidden, CLASSES, dtype=dtype))


def theta(model: nn.Sequential) -> np.ndarray:
    return np.concatenate([nn.to_numpy(p.value).ravel() for p in model.parameters()])


def save(out: Path, comm: nn.distributed.Communicator, model: nn.Sequential,
         history: dict[str, list[float]], rows: list | None = None, **scores: float) -> None:
    np.savez(out / f"rank{comm.rank}.npz", theta=theta(model), size=comm.size,
             history=json.dumps(history), scores=json.dumps(scores),
             rows=np.asarray(rows or [], dtype=np.float64))


def fit(model: nn.Sequential, data: dict[str, np.ndarray], comm: nn.distributed.Communicator,
        **options: object) -> nn.History:
    settings = {"loss": nn.SoftmaxCrossEntropy(), "optimizer": nn.Adam(lr=0.01),
                "epochs": EPOCHS, "batch_size": GLOBAL_BATCH, "seed": 0,
                "validation_data": (data["X_val"], data["y_val"]), **options}
    return model.fit(data["X"], data["y"], communicator=comm, **settings)


class FailAt(nn.Callback):
    """Raise at step ``step`` of epoch ``epoch``, on one rank."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step, self.current = epoch, step, -1

    def on_epoch_begin(self, epoch: int) -> None:
        self.current = epoch

    def on_batch_end(self, step: int, loss: object) -> None:
        if (self.current, step) == (self.epoch, self.step):
            raise RuntimeError(f"rank {nn.distributed.init().rank} fails on purpose "
                               f"at epoch {self.epoch + 1}, step {step + 1}")


class StopAfter(nn.Callback):
    """Ask to stop after ``epochs`` epochs (given to one rank only)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_begin(self, model: object, info: dict) -> None:
        self.model = model

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if epoch + 1 >= self.epochs:
            self.model.stop_training = True


class Slow(nn.Callback):
    """A pause at every epoch's end, so that a test can interrupt the run."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        time.sleep(0.05)


def main(case: str, out: Path) -> int:
    comm = nn.distributed.init()
    data = problem()
    if case in ("equivalence", "scrambled"):
        # "scrambled": every rank but 0 builds other initial weights; rank 0's win.
        counter = RowCounter()
        model = build_model(seed=comm.rank * 100 if case == "scrambled" else 0,
                            counter=counter)
        history = fit(model, data, comm)
        scores = model.evaluate(data["X_test"], data["y_test"], communicator=comm)
        tiny = model.evaluate(data["X_test"][:2], data["y_test"][:2], communicator=comm)
        save(out, comm, model, history.history, counter.seen, test_loss=scores["loss"],
             test_accuracy=scores["accuracy"], tiny_loss=tiny["loss"],
             tiny_accuracy=tiny["accuracy"])
    elif case == "full-batch-sgd":  # batch_size=None: one step per epoch over all samples
        model = build_model()
        history = fit(model, data, comm, batch_size=None, optimizer=nn.SGD(lr=0.1),
                      epochs=5, validation_data=None)
        save(out, comm, model, history.history)
    elif case == "raise":
        fit(build_model(), data, comm, callbacks=[FailAt(1, 2)] if comm.rank == 1 else [])
    elif case == "no-data":
        if comm.rank == 1:
            data = {**data, "X": data["X"][:0], "y": data["y"][:0]}
        fit(build_model(), data, comm)
    elif case == "too-many-ranks":  # 37 samples in batches of 12: the last one holds 1
        fit(build_model(), data, comm, batch_size=12)
    elif case == "mismatch":
        fit(build_model(hidden=HIDDEN + comm.rank), data, comm)
    elif case == "stop-one-rank":  # only rank 1's callback asks to stop, after epoch 2
        model = build_model()
        history = fit(model, data, comm, callbacks=[StopAfter(2)] if comm.rank == 1 else [])
        save(out, comm, model, history.history)
    elif case == "resume":  # stopped after 2 of 3 epochs, resumed from rank 0's checkpoint
        path = out / "run.safetensors"
        model = build_model()
        first = [nn.Checkpoint(path)] if comm.rank == 0 else []
        fit(model, data, comm, callbacks=[*first, StopAfter(2)])
        comm.barrier()  # the file is written before anyone reads it
        run = nn.resume(path)
        then = [nn.Checkpoint(path).resumed_from(run)] if comm.rank == 0 else []
        history = fit(run.model, data, comm, optimizer=run.optimizer,
                      initial_epoch=run.epoch, callbacks=then)
        save(out, comm, run.model, history.history, resumed_from=run.epoch)
    elif case == "interrupt":  # trains until Ctrl-C, writing a checkpoint every epoch
        checkpoint = [nn.Checkpoint(out / "run.safetensors")] if comm.rank == 0 else []
        fit(build_model(), data, comm, epochs=10_000, callbacks=[*checkpoint, Slow()])
    elif case == "threads":  # the thread pools each rank was left with
        from threadpoolctl import threadpool_info

        pools = [pool["num_threads"] for pool in threadpool_info()]
        (out / f"rank{comm.rank}.json").write_text(json.dumps(
            {"threads": comm.threads, "describe": comm.describe(), "pools": pools,
             "local_size": comm.local_size}))
    else:
        raise SystemExit(f"unknown case {case!r}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[3] == "uncaught":  # no run(): the excepthook aborts
        nn.distributed.init()
        sys.exit(main(sys.argv[1], Path(sys.argv[2])))
    sys.exit(nn.distributed.run(main, sys.argv[1], Path(sys.argv[2])))
