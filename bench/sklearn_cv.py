"""nnscratch.sklearn.MLPClassifier beside scikit-learn's own, on the same call:

    cross_val_score(make_pipeline(StandardScaler(), MLPClassifier()),
                    *load_digits(return_X_y=True), cv=5)

with the defaults of each. Rounds are interleaved (nnscratch, sklearn, nnscratch, ...)
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
    ratios, results = [], {"nnscratch": [], "sklearn": []}
    for number in range(1, args.rounds + 1):
        ours = run(MLPClassifier(), X, y)
        theirs = run(SklearnMLP(), X, y)
        results["nnscratch"].append(ours)
        results["sklearn"].append(theirs)
        ratios.append(ours[0] / theirs[0])
        for name, (seconds, mean, folds) in (("nnscratch", ours), ("sklearn", theirs)):
            print(f"round {number}  {name:<9}  {seconds:6.1f} s  accuracy {mean:.4f}  "
                  f"folds {' '.join(f'{s:.3f}' for s in folds)}", flush=True)
    for name, runs in results.items():
        seconds = [run[0] for run in runs]
        print(f"{name:<9}  median {statistics.median(seconds):6.1f} s "
              f"({min(seconds):.1f}-{max(seconds):.1f})  accuracy "
              f"{statistics.fmean(run[1] for run in runs):.4f}")
    print(f"time ratio nnscratch / sklearn: median {statistics.median(ratios):.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
