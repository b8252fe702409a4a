"""scikit-learn estimators on nnscratch: ``MLPClassifier`` and ``MLPRegressor``.

Named and shaped like scikit-learn's own multilayer perceptrons (``hidden_layer_sizes``,
``activation``, ``alpha``, ``batch_size``, ``learning_rate_init``, ``max_iter``,
``early_stopping``, ...), so they drop into ``Pipeline``, ``cross_val_score`` and
``GridSearchCV``, and pass scikit-learn's ``check_estimator``. nnscratch adds:

* ``backend`` / ``device``: where the network computes. ``None`` (the default) follows
  the input: NumPy data trains on the numpy backend; with scikit-learn's array API
  dispatch on (``sklearn.config_context(array_api_dispatch=True)``, which needs
  ``SCIPY_ARRAY_API=1``), PyTorch tensors train with torch on their device,
  array-api-strict arrays on theirs, CuPy arrays on their GPU, and the outputs come
  back in the namespace and on the device of the input. A name (``"torch"``,
  ``"cupy"``, ...) computes there whatever the input, and returns the input's kind.
* ``dropout``: the rate of a ``Dropout`` after every hidden layer; ``input_dropout``:
  the rate at which input features are dropped in training (a ``Dropout`` first).

The training is sklearn's: mini-batches of ``min(200, n)`` by default, the L2 penalty
``(α / 2) Σ‖W‖² / batch`` (``Dense(l2=α / (2·batch))``), Adam or SGD with Nesterov
momentum, and its stopping rule: stop when the training loss (or, with
``early_stopping``, the score on a held-out ``validation_fraction``) has not improved by
``tol`` for ``n_iter_no_change`` epochs, else after ``max_iter`` epochs with a
``ConvergenceWarning``. With ``early_stopping`` the weights of the best validation epoch
are kept.

Not (yet) sklearn's: ``solver="lbfgs"``, ``learning_rate`` schedules, ``warm_start``,
``partial_fit``, ``sample_weight``. A fit sets nnscratch's active backend and random
streams for its duration (and restores them): run parallel fits in processes
(``n_jobs`` with joblib's default loky backend), not threads.

This module imports scikit-learn (``pip install 'nnscratch[sklearn]'``); ``import
nnscratch`` does not.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Iterator
from typing import Any

from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import random
from .activations import get_activation
from .backend import (
    describe_placement,
    library_of,
    namespace,
    placement,
    to_host,
    to_placement,
    use_backend,
)
from .callbacks import Callback
from .layers import Dense, Dropout, Layer
from .losses import MeanSquaredError, SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD, Adam

__all__ = ["MLPClassifier", "MLPRegressor"]

# sklearn's activation names -> nnscratch's
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
SOLVERS = ("adam", "sgd")
ARRAY_LIBRARIES = ("torch", "cupy", "array_api_strict")  # followed where the input is one


def _dispatching() -> bool:
    from sklearn import get_config

    return bool(get_config().get("array_api_dispatch", False))


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """nnscratch's random streams seeded with ``seed`` for a block, and given back as
    they were afterwards (an estimator's ``random_state`` must not move the user's)."""
    saved = random.get_state()
    random.seed(seed)
    try:
        yield
    finally:
        random.set_state(saved)


class _Convergence(Callback):
    """sklearn's stopping rule, epoch by epoch (see the module's notes). ``score`` (with
    early stopping) scores the model on the held-out rows."""

    def __init__(self, tol: float, patience: int, score: Any = None) -> None:
        self.tol, self.patience, self.score = tol, patience, score
        self.loss_curve: list[float] = []
        self.validation_scores: list[float] = []
        self.best_loss, self.best_score = math.inf, -math.inf
        self.stale, self.converged, self.best_values = 0, False, None

    def on_train_begin(self, model: Any, info: dict[str, Any]) -> None:
        self.model = model

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        loss = logs["loss"]
        self.loss_curve.append(loss)
        if self.score is not None:
            score = self.score()
            self.validation_scores.append(score)
            self.stale = self.stale + 1 if score < self.best_score + self.tol else 0
            if score > self.best_score:
                self.best_score = score
                self.best_values = [namespace(param.value).asarray(param.value, copy=True)
                                    for param in self.model.parameters()]
        else:
            self.stale = self.stale + 1 if loss > self.best_loss - self.tol else 0
            self.best_loss = min(self.best_loss, loss)
        if self.stale > self.patience:
            self.converged = True
            self.model.stop_training = True

    def on_train_end(self) -> None:
        if self.best_values is not None:  # early stopping keeps the best epoch's weights
            for param, value in zip(self.model.parameters(), self.best_values):
                param.value = value


class _MLP(BaseEstimator):
    """What the classifier and the regressor share: the parameters, the network, the
    training loop and the placement of the arrays."""

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 1e-4,
        batch_size: int | str = "auto",
        learning_rate_init: float = 1e-3,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        backend: str | None = None,
        device: str | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.input_dropout = input_dropout
        self.backend = backend
        self.device = device

    # -- what the subclasses say ---------------------------------------------------------

    _is_classifier = False

    def _encode_targets(self, y: Any) -> tuple[Any, int]:
        raise NotImplementedError

    def _score_rows(self, model: Sequential, X: Any, y: Any) -> float:
        raise NotImplementedError

    # -- parameters ----------------------------------------------------------------------

    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else list(sizes)
        if any(isinstance(size, bool) or not isinstance(size, numbers.Integral) or size <= 0
               for size in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got "
                             f"{self.hidden_layer_sizes!r}, e.g. (100,) or (64, 32)")
        return [int(size) for size in sizes]

    def _check_parameters(self) -> None:
        def number(name: str, low: float, high: float = math.inf, *, low_open: bool = False,
                   high_open: bool = True) -> None:
            value = getattr(self, name)
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and (
                (low < value if low_open else low <= value)
                and (value < high if high_open else value <= high))
            if not ok:
                bounds = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
                raise ValueError(f"{name} must be a number in {bounds}, got {value!r}")

        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got "
                             f"{self.activation!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)} (nnscratch has no "
                             f"lbfgs), got {self.solver!r}")
        for name in ("max_iter", "n_iter_no_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        batch = self.batch_size
        if batch != "auto" and (isinstance(batch, bool) or not isinstance(
                batch, numbers.Integral) or batch < 1):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {batch!r}")
        number("alpha", 0.0)
        number("learning_rate_init", 0.0, low_open=True)
        number("tol", 0.0)
        number("momentum", 0.0, 1.0)
        number("validation_fraction", 0.0, 1.0, low_open=True)
        number("beta_1", 0.0, 1.0)
        number("beta_2", 0.0, 1.0)
        number("epsilon", 0.0, low_open=True)
        number("dropout", 0.0, 1.0)
        number("input_dropout", 0.0, 1.0)
        if self.backend is not None and not isinstance(self.backend, str):
            raise ValueError(f"backend must be None (follow the input) or a backend name "
                             f"such as 'torch', got {self.backend!r}")

    # -- where the arrays live -----------------------------------------------------------

    @staticmethod
    def _placement_of(X: Any) -> tuple[str, str]:
        """The library and device of the (validated) input: an array API array with
        dispatch on, else NumPy on the CPU."""
        if library_of(X) in ARRAY_LIBRARIES:
            return placement(X)
        return ("numpy", "cpu")

    def _compute_placement(self, where: tuple[str, str]) -> tuple[str, str | None]:
        if self.backend is None:
            return where
        return self.backend, self.device

    def _check_same_placement(self, where: tuple[str, str], method: str) -> None:
        """With array API dispatch on, a fitted estimator takes arrays of the namespace
        and device it was fitted on (sklearn's ``check_same_namespace`` rule)."""
        if _dispatching() and where != self._fit_placement:
            raise ValueError(
                f"Inputs passed to {type(self).__name__}.{method}() must use the same "
                f"namespace and the same device as those passed to fit(): fitted on "
                f"{describe_placement(self._fit_placement)}, given "
                f"{describe_placement(where)}")

    # -- training ------------------------------------------------------------------------

    def _network(self, n_features: int, n_outputs: int, dtype: str, batch: int) -> Sequential:
        sizes = [n_features, *self._hidden_sizes(), n_outputs]
        l2 = self.alpha / (2.0 * batch)  # sklearn's (α/2)‖W‖² / batch
        layers: list[Layer] = [Dropout(float(self.input_dropout))] if self.input_dropout else []
        for index, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
            layers.append(Dense(fan_in, fan_out, init="glorot_uniform", dtype=dtype, l2=l2))
            if index < len(sizes) - 2:
                layers.append(get_activation(ACTIVATIONS[self.activation]))
                if self.dropout:
                    layers.append(Dropout(float(self.dropout)))
        return Sequential(*layers)

    def _optimizer(self) -> Any:
        if self.solver == "sgd":
            momentum = min(float(self.momentum), 1.0 - 1e-12)  # nnscratch wants μ < 1
            return SGD(lr=self.learning_rate_init, momentum=momentum,
                       nesterov=bool(self.nesterovs_momentum) and momentum > 0)
        return Adam(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2),
                    eps=self.epsilon)

    def fit(self, X: Any, y: Any) -> _MLP:
        """Train a fresh network on (X, y); returns ``self``."""
        X, y = validate_data(self, X, y, dtype="numeric", multi_output=not self._is_classifier,
                             y_numeric=not self._is_classifier)
        self._check_parameters()
        self._fit_placement = self._placement_of(X)
        self._compute = self._compute_placement(self._fit_placement)
        targets, n_outputs = self._encode_targets(y)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        samples = X.shape[0]
        batch = min(200, samples) if self.batch_size == "auto" else int(self.batch_size)
        if batch > samples:
            warnings.warn(f"batch_size {batch} is larger than the {samples} samples: it is "
                          "clipped to the sample count", UserWarning, stacklevel=2)
            batch = samples
        with use_backend(*self._compute) as backend, _seeded(seed):
            xp = backend.xp
            X = to_placement(X, self._compute)
            dtype = "float32" if X.dtype == xp.float32 else "float64"
            targets = to_placement(targets, self._compute)
            score = None
            if self.early_stopping:
                train_rows, held_rows = train_test_split(
                    list(range(samples)), test_size=self.validation_fraction,
                    random_state=seed, stratify=to_host(targets) if self._is_classifier
                    else None)
                held = xp.asarray(held_rows, device=backend.device)
                rows = xp.asarray(train_rows, device=backend.device)
                X_held, y_held = xp.take(X, held, axis=0), xp.take(targets, held, axis=0)
                X, targets = xp.take(X, rows, axis=0), xp.take(targets, rows, axis=0)
                batch = min(batch, len(train_rows))

                def score() -> float:
                    return self._score_rows(model, X_held, y_held)

            model = self._network(X.shape[1], n_outputs, dtype, batch)
            optimizer = self._optimizer()
            convergence = _Convergence(float(self.tol), int(self.n_iter_no_change), score)
            loss = SoftmaxCrossEntropy() if self._is_classifier else MeanSquaredError()
            model.fit(X, targets, loss=loss, optimizer=optimizer, epochs=int(self.max_iter),
                      batch_size=batch, shuffle=bool(self.shuffle), seed=seed,
                      callbacks=[convergence], verbose=1 if self.verbose else 0)
        self.model_ = model
        self.loss_curve_ = convergence.loss_curve
        self.loss_ = convergence.loss_curve[-1]
        self.n_iter_ = len(convergence.loss_curve)
        self.t_ = optimizer.t * batch
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(self._hidden_sizes()) + 2
        if self.early_stopping:
            self.validation_scores_ = convergence.validation_scores
            self.best_validation_score_ = convergence.best_score
            self.best_loss_ = None
        else:
            self.validation_scores_ = self.best_validation_score_ = None
            self.best_loss_ = convergence.best_loss
        if not convergence.converged:
            warnings.warn(f"{type(self).__name__}: max_iter={self.max_iter} epochs reached "
                          "and the optimization has not converged yet", ConvergenceWarning,
                          stacklevel=2)
        return self

    def _outputs(self, X: Any, method: str) -> tuple[Any, tuple[str, str]]:
        """The network's outputs for X, on the compute device, and the placement the
        results go back to."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype="numeric", reset=False)
        where = self._placement_of(X)
        self._check_same_placement(where, method)
        with use_backend(*self._compute):
            return self.model_.predict(to_placement(X, self._compute)), where

    def _weights(self, name: str) -> list[Any]:
        check_is_fitted(self)
        return [to_placement(getattr(layer, name).value, self._fit_placement)
                for layer in self.model_.layers if isinstance(layer, Dense)]

    @property
    def coefs_(self) -> list[Any]:
        """The weight matrices, ``coefs_[i]`` of shape (fan_in, fan_out), as sklearn's."""
        return self._weights("weight")

    @property
    def intercepts_(self) -> list[Any]:
        """The bias vectors, ``intercepts_[i]`` of shape (fan_out,), as sklearn's."""
        return self._weights("bias")

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        return tags


class MLPClassifier(ClassifierMixin, _MLP):
    """A multilayer perceptron classifier trained by nnscratch (see the module's notes):
    softmax cross-entropy on the logits; ``predict_proba`` the softmax

        p_k = exp(z_k − m) / Σ_j exp(z_j − m),   m = max_j z_j

    and ``predict`` the class of the largest logit. ``classes_`` holds the labels (any
    labels sklearn accepts), ``loss_curve_`` the loss of every epoch, ``n_iter_`` the
    epochs trained."""

    _is_classifier = True

    def _encode_targets(self, y: Any) -> tuple[Any, int]:
        labels = to_host(y)
        check_classification_targets(labels)
        encoder = LabelEncoder().fit(labels)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least two classes "
                             f"to train; y holds one class only ({self.classes_[0]!r})")
        return encoder.transform(labels), len(self.classes_)

    def _score_rows(self, model: Sequential, X: Any, y: Any) -> float:
        xp = namespace(X)
        predicted = xp.argmax(model.predict(X), axis=1)
        return float(xp.mean(xp.astype(predicted == xp.astype(y, predicted.dtype), X.dtype)))

    def predict_log_proba(self, X: Any) -> Any:
        """log p_k = z_k − m − log Σ_j exp(z_j − m), rows of X; (n, classes)."""
        logits, where = self._outputs(X, "predict_log_proba")
        return to_placement(_log_softmax(logits), where)

    def predict_proba(self, X: Any) -> Any:
        """The probability of each class (columns in the order of ``classes_``)."""
        logits, where = self._outputs(X, "predict_proba")
        return to_placement(namespace(logits).exp(_log_softmax(logits)), where)

    def predict(self, X: Any) -> Any:
        """The label of the most probable class, per row of X."""
        logits, where = self._outputs(X, "predict")
        best = namespace(logits).argmax(logits, axis=1)
        if self.classes_.dtype.kind not in "biuf":  # strings and objects: on the host
            return self.classes_[to_host(best)]
        classes = to_placement(self.classes_, where)
        return namespace(classes).take(classes, to_placement(best, where), axis=0)


class MLPRegressor(RegressorMixin, _MLP):
    """A multilayer perceptron regressor trained by nnscratch (see the module's notes):
    identity outputs, mean squared error; one output per column of y (a 1-D y gives
    1-D predictions)."""

    def _encode_targets(self, y: Any) -> tuple[Any, int]:
        self._one_dimensional = y.ndim == 1
        return y, 1 if y.ndim == 1 else int(y.shape[1])

    def _score_rows(self, model: Sequential, X: Any, y: Any) -> float:
        """R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)², per output, averaged over the outputs."""
        xp = namespace(X)
        predicted = model.predict(X)
        y = xp.reshape(xp.astype(y, predicted.dtype), predicted.shape)
        residual = xp.sum((y - predicted) ** 2, axis=0)
        total = xp.sum((y - xp.mean(y, axis=0)) ** 2, axis=0)
        safe = xp.where(total > 0, total, xp.ones_like(total))
        return float(xp.mean(xp.where(total > 0, 1.0 - residual / safe,
                                      xp.zeros_like(total))))

    def predict(self, X: Any) -> Any:
        """The network's outputs, (n,) for a 1-D y at fit, else (n, outputs)."""
        outputs, where = self._outputs(X, "predict")
        if self._one_dimensional:
            outputs = namespace(outputs).reshape(outputs, (-1,))
        return to_placement(outputs, where)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _log_softmax(logits: Any) -> Any:
    xp = namespace(logits)
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
