"""nnscratch.sklearn.MLPClassifier beside scikit-learn's own, on the same call:

    cross_val_score(make_pipeline(StandardScaler(), MLPClassifier()),
                    *load_digits(return_X_y=True), cv=5)

with the defaults of each, and nnscratch's regularized setting (``REGULARIZED``: wider,
inputs dropped at rate 0.2 in training, more patience for the noisier loss). Rounds are
interleaved (nnscratch, sklearn, regularized, nnscratch, ...)
so that a busy patch of a shared machine slows both alike; the time ratio is taken per
round. Prints each round and the medians.

    OMP_NUM_THREADS=1 python bench/sklearn_cv.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.neural_network import MLPClassifier as SklearnMLP  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from nnscratch.sklearn import MLPClassifier  # noqa: E402

REGULARIZED = {"hidden_layer_sizes": (512,), "input_dropout": 0.2, "n_iter_no_change": 20}


def run(estimator: object, X: object, y: object) -> tuple[float, float, list[float]]:
    """Seconds, mean accuracy and the folds' accuracies of the benchmark's call."""
    start = time.perf_counter()
    scores = cross_val_score(make_pipeline(StandardScaler(), estimator), X, y, cv=5)
    return time.perf_counter() - start, float(scores.mean()), [float(s) for s in scores]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    X, y = load_digits(return_X_y=True)
    print(f"digits {X.shape}, cv=5, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    makers = {"nnscratch": MLPClassifier, "sklearn": SklearnMLP,
              "nnscratch-regularized": lambda: MLPClassifier(**REGULARIZED)}
    results: dict[str, list[tuple[float, float, list[float]]]] = {name: [] for name in makers}
    for number in range(1, args.rounds + 1):
        for name, make in makers.items():
            seconds, mean, folds = result = run(make(), X, y)
            results[name].append(result)
            print(f"round {number}  {name:<21}  {seconds:6.1f} s  accuracy {mean:.4f}  "
                  f"folds {' '.join(f'{s:.3f}' for s in folds)}", flush=True)
    for name, runs in results.items():
        seconds = [run[0] for run in runs]
        accuracies = [run[1] for run in runs]
        print(f"{name:<21}  median {statistics.median(seconds):6.1f} s "
              f"({min(seconds):.1f}-{max(seconds):.1f})  accuracy mean "
              f"{statistics.fmean(accuracies):.4f} ({min(accuracies):.4f}-"
              f"{max(accuracies):.4f})")
        if name != "sklearn":
            ratios = [ours[0] / theirs[0] for ours, theirs in zip(runs, results["sklearn"])]
            print(f"{'':<21}  time ratio to sklearn, per round: median "
                  f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
