"""The two XOR networks of the course notes, trained by hand-written gradient descent.

    python examples/xor.py                       # numpy, seed 0, 20,000 iterations
    python examples/xor.py --backend torch --seed 3 --iterations 5000
    python examples/xor.py --init normal --min-accuracy 0   # the notes' 0.01·randn: stalls

Network 1: 2-4-1, sigmoid hidden units and a sigmoid output.
Network 2: 2-5-1, tanh hidden units and a sigmoid output.

Both minimise the logistic loss (binary cross-entropy) with full-batch gradient descent,
learning rate 0.3, written as the notes' loop: forward, loss, backward, update.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import nnscratch as nn
from nnscratch.datasets.synthetic import make_xor

NETWORKS = {
    "2-4-1 sigmoid": (4, nn.Sigmoid),
    "2-5-1 tanh": (5, nn.Tanh),
}


def train_xor(hidden_units: int, activation: type[nn.Layer], *, iterations: int = 20_000,
              lr: float = 0.3, seed: int = 0, init: str = "glorot_uniform") -> dict[str, Any]:
    """Train one 2-hidden-1 network on XOR; returns its final ``outputs`` (host floats, one
    per input row), ``accuracy`` and ``loss``."""
    backend = nn.get_backend()
    X_host, y_host = make_xor()
    X, y = backend.asarray(X_host), backend.asarray(y_host)
    nn.seed(seed)
    model = nn.Sequential(
        nn.Dense(2, hidden_units, init=init), activation(),
        nn.Dense(hidden_units, 1, init=init), nn.Sigmoid(),
    )
    loss = nn.BinaryCrossEntropy()
    optimizer = nn.SGD(lr=lr)
    parameters = model.parameters()
    for _ in range(iterations):
        outputs = model.forward(X, training=True)
        loss.forward(outputs, y)
        model.backward(loss.backward(), need_input_grad=False)
        optimizer.step(parameters)
    outputs = model.forward(X)
    final_loss = float(loss.forward(outputs, y))
    values = [float(value) for value in nn.to_numpy(outputs).ravel()]
    targets = [float(value) for value in y_host.ravel()]
    correct = sum((value >= 0.5) == (target == 1.0) for value, target in zip(values, targets))
    return {"outputs": values, "accuracy": correct / len(targets), "loss": final_loss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=None,
                        help="numpy, torch, array_api_strict or cupy "
                             "(default: $NNSCRATCH_BACKEND, else numpy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--init", default="glorot_uniform",
                        help="weight initializer, e.g. normal for the notes' 0.01*randn")
    parser.add_argument("--min-accuracy", type=float, default=1.0,
                        help="exit with status 1 if a network ends below this accuracy")
    args = parser.parse_args(argv)
    if args.backend:
        nn.use_backend(args.backend)
    X, _ = make_xor()
    print(f"XOR on {nn.get_backend()}: seed {args.seed}, {args.iterations} iterations of "
          f"full-batch gradient descent, lr {args.lr}, init {args.init}")
    success = True
    for name, (hidden_units, activation) in NETWORKS.items():
        result = train_xor(hidden_units, activation, iterations=args.iterations, lr=args.lr,
                           seed=args.seed, init=args.init)
        print(f"\n{name}: loss {result['loss']:.5f}")
        for (a, b), output in zip(X.astype(int).tolist(), result["outputs"]):
            print(f"  {a} XOR {b} = {a ^ b}   output {output:.4f}")
        print(f"  accuracy {result['accuracy']:.0%}")
        success = success and result["accuracy"] >= args.min_accuracy
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())
