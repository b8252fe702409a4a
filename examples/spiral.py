"""Three interleaved spiral arms, classified by a small ReLU network.

    python examples/spiral.py                              # numpy, seed 0, 300 epochs
    python examples/spiral.py --backend torch --seed 1 --epochs 500

The spiral (CS231n's toy problem) is not linearly separable: a softmax classifier on the
raw coordinates gets about half of it right. Two hidden ReLU layers of 32 units, trained
with Adam on the fused softmax cross-entropy, fit it almost perfectly.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import nnscratch as nn
from nnscratch.datasets.synthetic import make_spiral


def train_spiral(*, epochs: int = 300, seed: int = 0, hidden_units: int = 32,
                 lr: float = 0.02, points_per_class: int = 100,
                 classes: int = 3) -> dict[str, Any]:
    """Train on the spiral with full-batch Adam; returns the ``history`` and the final
    training ``accuracy`` and ``loss`` (from ``evaluate``)."""
    X, y = make_spiral(points_per_class=points_per_class, classes=classes, seed=seed)
    nn.seed(seed)
    model = nn.Sequential(
        nn.Dense(2, hidden_units, init="he_uniform"), nn.ReLU(),
        nn.Dense(hidden_units, hidden_units, init="he_uniform"), nn.ReLU(),
        nn.Dense(hidden_units, classes),
    )
    history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=lr),
                        epochs=epochs, batch_size=None, seed=seed)
    scores = model.evaluate(X, y)
    return {"history": history, "accuracy": scores["accuracy"], "loss": scores["loss"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=None,
                        help="numpy, torch, array_api_strict or cupy "
                             "(default: $NNSCRATCH_BACKEND, else numpy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--min-accuracy", type=float, default=0.95,
                        help="exit with status 1 if the training accuracy ends below this")
    args = parser.parse_args(argv)
    if args.backend:
        nn.use_backend(args.backend)
    print(f"spiral, 3 classes x 100 points, on {nn.get_backend()}: seed {args.seed}, "
          f"{args.epochs} epochs of full-batch Adam")
    result = train_spiral(epochs=args.epochs, seed=args.seed)
    losses = result["history"]["loss"]
    print(f"loss {losses[0]:.4f} at the first epoch, {result['loss']:.4f} at the end")
    print(f"training accuracy {result['accuracy']:.1%}")
    return 0 if result["accuracy"] >= args.min_accuracy else 1


if __name__ == "__main__":
    sys.exit(main())
