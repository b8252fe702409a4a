"""MNIST through fit, for tests/test_distributed.py: the first 8000 training images,
784-512-256-10 (He-normal, ReLU), Adam (lr 1e-3), global batch 128, 2 epochs, seed 0,
float32. ``python mnist.py DATA OUT`` (one process) or ``mpiexec -n N python mnist.py
DATA OUT``; rank r writes ``OUT/rank<r>.npz``: each parameter, and the test accuracy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import nnscratch as nn

LIMIT, HIDDEN, EPOCHS, BATCH = 8000, (512, 256), 2, 128


def main(data_dir: str, out: Path) -> int:
    comm = nn.distributed.init()
    mnist = nn.datasets.load("mnist", data_dir, download=False, report=None)
    nn.seed(0)
    widths = [mnist.x_train.shape[1], *HIDDEN]
    layers: list[nn.Layer] = []
    for width_in, width_out in zip(widths, widths[1:]):
        layers += [nn.Dense(width_in, width_out, init="he_normal"), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Dense(widths[-1], 10, init="he_normal"))
    model.fit(mnist.x_train[:LIMIT], mnist.y_train[:LIMIT], loss=nn.SoftmaxCrossEntropy(),
              optimizer=nn.Adam(lr=1e-3), epochs=EPOCHS, batch_size=BATCH, seed=0,
              communicator=comm)
    scores = model.evaluate(mnist.x_test, mnist.y_test, communicator=comm)
    parameters = {f"parameter{index}": nn.to_numpy(param.value)
                  for index, param in enumerate(model.parameters())}
    np.savez(out / f"rank{comm.rank}.npz", accuracy=scores["accuracy"], **parameters)
    return 0


if __name__ == "__main__":
    sys.exit(nn.distributed.run(main, sys.argv[1], Path(sys.argv[2])))
