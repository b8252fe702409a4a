"""nnscratch.sklearn: MLPClassifier and MLPRegressor pass scikit-learn's own estimator
checks (each check its own test), work in Pipeline, cross_val_score and
GridSearchCV(n_jobs=2), and take array API inputs (torch, array-api-strict) when
scikit-learn's array API dispatch is on (SCIPY_ARRAY_API=1, set by the nox sessions).

The estimators compute on this session's backend (``backend=`` the session's name and
device; on numpy the default, which follows the input)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import nnscratch as nn
from nnscratch.backend import active_placement, placement

pytest.importorskip("sklearn", reason="scikit-learn is not installed (the 'sklearn' extra)")

from sklearn import config_context  # noqa: E402
from sklearn.datasets import load_iris, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils import check_random_state  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from nnscratch.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_NAME, _DEVICE = active_placement()
# On numpy, the defaults (which follow the input); elsewhere the session's backend.
SESSION = {} if _NAME == "numpy" else {"backend": _NAME, "device": _DEVICE}
ARRAY_API = os.environ.get("SCIPY_ARRAY_API") == "1"
# short trainings stop at max_iter on purpose; the warning is tested once, below
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@parametrize_with_checks([MLPClassifier(**SESSION), MLPRegressor(**SESSION)])
def test_sklearn_check(estimator, check):
    """scikit-learn's check_estimator, one check per test; its array API checks skip
    (sklearn's own SkipTest) without SCIPY_ARRAY_API=1 or the namespace's device."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.skipif(ARRAY_API, reason="SCIPY_ARRAY_API=1 here: the array API checks ran "
                                      "above, in this process")
def test_the_array_api_checks_pass_with_scipy_array_api_set():
    """Run by hand without SCIPY_ARRAY_API=1, the checks above skip sklearn's array API
    checks; this runs them in a child process with the variable set."""
    env = {**os.environ, "SCIPY_ARRAY_API": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "array_api",
         str(ROOT / "tests" / "test_sklearn.py")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def _iris() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_iris(return_X_y=True)
    return X, y


def test_in_a_pipeline_with_cross_val_score_and_grid_search_on_two_processes():
    X, y = _iris()
    pipeline = make_pipeline(StandardScaler(), MLPClassifier(learning_rate_init=0.01,
                                                             max_iter=60, random_state=0,
                                                             **SESSION))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipeline, X, y, cv=3)
        assert scores.shape == (3,) and scores.mean() >= 0.85  # chance: 1/3
        search = GridSearchCV(pipeline, {"mlpclassifier__hidden_layer_sizes": [(4,), (16,)]},
                              cv=3, n_jobs=2).fit(X, y)
    assert search.best_score_ >= 0.85
    assert len(search.cv_results_["mean_test_score"]) == 2
    best = search.best_estimator_[-1]
    assert all(placement(param.value) == active_placement()
               for param in best.model_.parameters())
    first_dense = next(layer for layer in best.model_.layers if isinstance(layer, nn.Dense))
    assert first_dense.out_features == search.best_params_[
        "mlpclassifier__hidden_layer_sizes"][0]


def test_random_state_fixes_the_run_and_leaves_the_users_streams_alone():
    X, y = _iris()
    nn.seed(11)
    before = nn.random.get_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = MLPClassifier(max_iter=5, random_state=1, **SESSION).fit(X, y)
        again = MLPClassifier(max_iter=5, random_state=1, **SESSION).fit(X, y)
        other = MLPClassifier(max_iter=5, random_state=2, **SESSION).fit(X, y)
    assert nn.random.get_state() == before
    np.testing.assert_array_equal(first.predict_proba(X), again.predict_proba(X))
    assert not np.allclose(first.predict_proba(X), other.predict_proba(X))
    assert first.n_iter_ == 5 and len(first.loss_curve_) == 5
    assert first.loss_curve_[-1] < first.loss_curve_[0]


def test_the_classifier_speaks_sklearn_labels_and_probabilities():
    X, y = _iris()
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    model = MLPClassifier(hidden_layer_sizes=16, learning_rate_init=0.01, random_state=0,
                          **SESSION).fit(StandardScaler().fit_transform(X), labels)
    X = StandardScaler().fit_transform(X)
    assert list(model.classes_) == ["setosa", "versicolor", "virginica"]
    probabilities = model.predict_proba(X)
    assert isinstance(probabilities, np.ndarray) and probabilities.shape == (150, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.exp(model.predict_log_proba(X)), probabilities, rtol=1e-6)
    assert (model.predict(X) == labels).mean() >= 0.95
    assert [w.shape for w in model.coefs_] == [(4, 16), (16, 3)]
    assert [b.shape for b in model.intercepts_] == [(16,), (3,)]


def test_the_regressor_fits_several_outputs_and_early_stopping_keeps_the_best_epoch():
    X, y = make_regression(n_samples=300, n_features=6, n_targets=2, noise=1.0,
                           random_state=0)
    y = y / y.std(axis=0)
    model = MLPRegressor(hidden_layer_sizes=(32,), learning_rate_init=0.01, max_iter=300,
                         early_stopping=True, n_iter_no_change=5, random_state=0,
                         **SESSION).fit(X, y)
    assert model.predict(X).shape == (300, 2) and model.score(X, y) >= 0.95
    assert len(model.validation_scores_) == model.n_iter_ < 300
    assert model.best_validation_score_ == max(model.validation_scores_) >= 0.9
    assert model.best_loss_ is None
    # the weights kept are the best epoch's: its score on the held-out rows (the split
    # fit made from random_state) is the best one, though later epochs were trained
    assert np.argmax(model.validation_scores_) < model.n_iter_ - 1
    seed = check_random_state(0).randint(2**31 - 1)
    _, held = train_test_split(list(range(300)), test_size=0.1, random_state=seed)
    assert r2_score(y[held], model.predict(X[held])) == pytest.approx(
        model.best_validation_score_, rel=1e-5)
    one = MLPRegressor(max_iter=3, **SESSION)
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        one.fit(X, y[:, 0])
    assert one.predict(X).shape == (300,)


def test_bad_parameters_are_refused_at_fit_naming_the_fix():
    X, y = _iris()
    with pytest.raises(ValueError, match="nnscratch has no lbfgs"):
        MLPClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes must be positive integers"):
        MLPClassifier(hidden_layer_sizes=(0,)).fit(X, y)
    with pytest.raises(ValueError, match="dropout must be a number in"):
        MLPClassifier(dropout=1.5).fit(X, y)


@pytest.mark.skipif(not ARRAY_API, reason="array API dispatch needs SCIPY_ARRAY_API=1 "
                                          "(the nox sessions set it)")
@pytest.mark.parametrize("library", ["torch", "array_api_strict"])
def test_array_api_inputs_train_and_answer_in_their_own_namespace(library):
    xp = pytest.importorskip(library)
    X, y = _iris()
    device = xp.Device("device1") if library == "array_api_strict" else "cpu"
    X_xp = xp.asarray(X.astype(np.float32), device=device)
    y_xp = xp.asarray(y, device=device)
    with config_context(array_api_dispatch=True):
        model = MLPClassifier(hidden_layer_sizes=16, max_iter=100, random_state=0).fit(
            X_xp, y_xp)
        assert placement(model.model_.parameters().vector.value) == placement(X_xp)
        probabilities = model.predict_proba(X_xp)
        predicted = model.predict(X_xp)
        assert placement(probabilities) == placement(predicted) == placement(X_xp)
        assert probabilities.dtype == xp.float32
        with pytest.raises(ValueError, match="must use the same namespace"):
            model.predict(X)
    reference = MLPClassifier(hidden_layer_sizes=16, max_iter=100, random_state=0).fit(
        X.astype(np.float32), y)  # the same run on NumPy: the same network
    np.testing.assert_allclose(nn.backend.to_host(probabilities),
                               reference.predict_proba(X.astype(np.float32)), atol=1e-4)


def test_importing_nnscratch_does_not_import_scikit_learn():
    program = "import sys, nnscratch; print('sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                            timeout=120, check=True)
    assert result.stdout.strip() == "False"


def test_dropout_and_input_dropout_sit_where_their_parameters_say():
    X, y = _iris()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(8, 4), activation="tanh", dropout=0.5,
                              input_dropout=0.2, max_iter=3, **SESSION).fit(X, y)
    layers = model.model_.layers
    assert [type(layer).__name__ for layer in layers] == [
        "Dropout", "Dense", "Tanh", "Dropout", "Dense", "Tanh", "Dropout", "Dense"]
    assert [layer.rate for layer in layers if isinstance(layer, nn.Dropout)] == [0.2, 0.5, 0.5]
    np.testing.assert_array_equal(model.predict_proba(X), model.predict_proba(X))  # no masks
