"""A BatchNorm model trained data-parallel, for tests/test_normalization.py:
``mpiexec -n 2 python batchnorm.py OUT``. Rank 1 spoils its running statistics before
fit; each rank writes its statistics as fit starts (after the broadcast from rank 0),
and its θ and statistics at the end, to ``OUT/rank<r>.npz``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import nnscratch as nn


class AtStart(nn.Callback):
    def on_train_begin(self, model, info):
        self.states = [nn.to_numpy(array).copy() for layer in model.layers
                       for array in layer.state().values()]


def main(out: str) -> None:
    comm = nn.distributed.init()
    rng = np.random.default_rng(0)
    X = rng.random((40, 1, 6, 6))
    y = rng.integers(0, 3, 40)
    nn.seed(0)
    model = nn.Sequential(nn.Conv2D(1, 2, 3, dtype="float64"),
                          nn.BatchNorm(2, dtype="float64"), nn.ReLU(), nn.Flatten(),
                          nn.Dense(32, 3, dtype="float64"))
    batchnorm = model.layers[1]
    batchnorm.running_mean = batchnorm.running_mean + 0.25  # rank 0's start, not fresh
    if comm.rank == 1:
        batchnorm.running_mean = batchnorm.running_mean + 5.0
        batchnorm.running_var = batchnorm.running_var * 9.0
    start = AtStart()
    model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.01), epochs=2,
              batch_size=10, seed=0, communicator=comm, callbacks=[start])
    np.savez(Path(out) / f"rank{comm.rank}.npz",
             theta=nn.to_numpy(model.parameters().vector.value),
             start_mean=start.states[0], start_var=start.states[1],
             end_mean=nn.to_numpy(batchnorm.running_mean))


if __name__ == "__main__":
    sys.exit(nn.distributed.run(main, sys.argv[1]))
