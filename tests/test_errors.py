"""Errors are part of the API (issue "reliability"): every bad input to fit, evaluate
and predict, and every bad constructor argument, raises the specific nnscratch error
(also the matching built-in), with a message that names the problem and the fix."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED_BACKENDS

import nnscratch as nn
from nnscratch import errors

FEATURES, CLASSES, SAMPLES = 4, 3, 12
METHODS = ("fit", "evaluate", "predict")
WITH_TARGETS = ("fit", "evaluate")


def make_model() -> nn.Sequential:
    return nn.Sequential(nn.Dense(FEATURES, 8), nn.ReLU(), nn.Dense(8, CLASSES))


def make_data(samples: int = SAMPLES, features: int = FEATURES) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(0).normal(size=(samples, features))
    return X, np.arange(samples) % CLASSES


def call(method: str, X, y=None, model: nn.Sequential | None = None, **options):
    model = model or make_model()
    if method == "fit":
        options = {"epochs": 1, "batch_size": 4, "seed": 0} | options
        return model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.SGD(lr=0.1),
                         **options)
    if method == "evaluate":
        return model.evaluate(X, y, loss=nn.SoftmaxCrossEntropy(), **options)
    return model.predict(X, **options)


# -- the hierarchy -------------------------------------------------------------------------


@pytest.mark.parametrize("error, builtin", [
    (errors.ShapeError, ValueError),
    (errors.DataError, ValueError),
    (errors.ConfigError, ValueError),
    (errors.CheckpointError, ValueError),
    (errors.BackendError, RuntimeError),
    (errors.DivergenceError, RuntimeError),
    (errors.NotDifferentiableError, RuntimeError),
    (errors.StateError, RuntimeError),
])
def test_each_error_is_also_the_matching_builtin(error, builtin):
    assert issubclass(error, errors.NNScratchError)
    assert issubclass(error, builtin)
    with pytest.raises(builtin, match="the message"):
        raise error("the message")
    assert getattr(nn, error.__name__) is error


# -- bad data for fit, evaluate and predict ------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_feature_width_that_disagrees_with_the_first_layer(method):
    X, y = make_data(features=FEATURES + 1)
    with pytest.raises(nn.ShapeError) as caught:
        call(method, X, y)
    message = str(caught.value)
    assert f"has {FEATURES + 1} values per sample" in message
    assert f"first layer expects {FEATURES}" in message
    assert f"Dense({FEATURES + 1}, ...)" in message  # the fix


@pytest.mark.parametrize("method", WITH_TARGETS)
def test_features_and_targets_of_different_lengths(method):
    X, y = make_data()
    with pytest.raises(nn.ShapeError) as caught:
        call(method, X, y[:-1])
    message = str(caught.value)
    assert f"X has {SAMPLES} samples" in message
    assert f"shape ({SAMPLES - 1},)" in message
    assert "same length" in message


def test_validation_data_of_different_lengths_is_named():
    X, y = make_data()
    with pytest.raises(nn.ShapeError, match=r"validation y has shape \(3,\)"):
        call("fit", X, y, validation_data=(X[:4], y[:3]))


@pytest.mark.parametrize("method", METHODS)
def test_empty_dataset(method):
    X, y = make_data(samples=0)
    with pytest.raises(nn.DataError) as caught:
        call(method, X, y)
    assert f"X is empty: shape (0, {FEATURES})" in str(caught.value)
    assert "nothing to learn from" in str(caught.value)


@pytest.mark.parametrize("method", WITH_TARGETS)
@pytest.mark.parametrize("bad_label", [CLASSES, -1, 255])
def test_labels_out_of_range_name_the_range(method, bad_label):
    X, y = make_data()
    y[5] = bad_label
    with pytest.raises(nn.DataError) as caught:
        call(method, X, y)
    message = str(caught.value)
    low, high = min(0, bad_label), max(CLASSES - 1, bad_label)
    assert f"range from {low} to {high}" in message
    assert f"{CLASSES} outputs" in message
    assert f"labels must be in 0..{CLASSES - 1}" in message


@pytest.mark.parametrize("method", WITH_TARGETS)
@pytest.mark.parametrize("labels", [
    pytest.param(np.array([0.0, 1.5, 2.0] * 4), id="fractional"),
    pytest.param(np.array([0.0, np.inf, 1.0] * 4), id="infinite"),
    pytest.param(np.array([0.0, np.nan, 1.0] * 4), id="nan"),
    pytest.param(np.array([True, False, True] * 4), id="bool"),
])
def test_non_integer_class_labels(method, labels):
    X, _ = make_data()
    with pytest.raises(nn.DataError) as caught:
        call(method, X, labels)
    message = str(caught.value)
    assert f"must be integers 0..{CLASSES - 1}" in message
    assert "astype(int)" in message


def test_whole_number_float_labels_are_accepted():
    X, y = make_data()
    history = call("fit", X, y.astype(np.float64))
    assert np.isfinite(history["loss"][0])


@pytest.mark.parametrize("method", WITH_TARGETS)
def test_one_hot_targets_of_the_wrong_width(method):
    X, y = make_data()
    one_hot = np.eye(CLASSES + 1)[y]
    with pytest.raises(nn.ShapeError) as caught:
        call(method, X, one_hot)
    message = str(caught.value)
    assert f"shape ({SAMPLES}, {CLASSES + 1})" in message
    assert f"({SAMPLES}, {CLASSES})" in message


def test_binary_targets_outside_zero_one():
    X, _ = make_data()
    model = nn.Sequential(nn.Dense(FEATURES, 1), nn.Sigmoid())
    with pytest.raises(nn.DataError) as caught:
        model.fit(X, np.arange(SAMPLES) % 3, loss=nn.BinaryCrossEntropy(),
                  optimizer=nn.SGD(lr=0.1), batch_size=4)
    assert "must be in [0, 1]" in str(caught.value)
    assert "range from 0 to 2" in str(caught.value)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_features(method, bad_value):
    X, y = make_data()
    X[2, 1] = bad_value
    X[7, 3] = bad_value
    with pytest.raises(nn.DataError) as caught:
        call(method, X, y)
    message = str(caught.value)
    assert "X contains 2 NaN or infinite value(s)" in message
    assert "impute" in message


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_opposite_infinities_are_both_counted():
    """+inf and -inf sum to NaN: the one-pass check must still see them, and count both."""
    X, y = make_data()
    X[1, 0], X[5, 2] = np.inf, -np.inf
    with pytest.raises(nn.DataError, match="X contains 2 NaN or infinite value"):
        nn.Sequential(nn.Dense(FEATURES, 3)).predict(X)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_huge_finite_features_are_not_called_infinite():
    """Finite float32 values whose sum overflows to inf pass the check (it must not
    mistake the overflow of its own sum for an infinite value)."""
    from nnscratch.data import prepare_features

    X = np.full((SAMPLES, FEATURES), 3e38, dtype=np.float32)
    X[::2] *= -1.0
    X[0, :] = 3e38  # the sum of the first rows overflows float32 whatever the order
    checked = prepare_features(X, FEATURES, "float32")
    assert checked.shape == X.shape


def test_nan_regression_targets():
    X, _ = make_data()
    y = np.ones((SAMPLES, 1))
    y[4, 0] = np.nan
    model = nn.Sequential(nn.Dense(FEATURES, 1))
    with pytest.raises(nn.DataError, match="y contains NaN or infinite values"):
        model.fit(X, y, loss=nn.MeanSquaredError(), optimizer=nn.SGD(lr=0.1), batch_size=4)


@pytest.mark.parametrize("method", METHODS)
def test_one_dimensional_features_get_a_hint(method):
    X, y = make_data()
    with pytest.raises(nn.ShapeError) as caught:
        call(method, X[0], y)
    message = str(caught.value)
    assert f"got shape ({FEATURES},)" in message
    assert "X.reshape(1, -1)" in message


@pytest.mark.parametrize("method", METHODS)
def test_images_that_are_not_flattened_get_a_hint(method):
    X, y = make_data()
    with pytest.raises(nn.ShapeError, match=r"flatten them to \(n, height\*width\)"):
        call(method, X.reshape(SAMPLES, 2, 2), y)


@pytest.mark.parametrize("method", METHODS)
def test_ragged_rows(method):
    X, y = make_data()
    ragged = [list(row) for row in X]
    ragged[3] = ragged[3][:-1]
    with pytest.raises(nn.ShapeError, match="rows have different lengths"):
        call(method, ragged, y)


@pytest.mark.parametrize("method", METHODS)
def test_non_numeric_features(method):
    X, y = make_data()
    with pytest.raises(nn.DataError, match="must hold numbers, got dtype <U"):
        call(method, X.astype(str), y)


def _bar_images(samples: int) -> tuple[np.ndarray, np.ndarray]:
    """4x4 uint8 images with a bright bar: horizontal (class 0) or vertical (class 1)."""
    rng = np.random.default_rng(3)
    labels = np.arange(samples) % 2
    images = rng.integers(0, 40, size=(samples, 4, 4)).astype(np.uint8)
    for image, label, where in zip(images, labels, rng.integers(0, 4, size=samples)):
        if label == 0:
            image[where, :] = 255
        else:
            image[:, where] = 255
    return images.reshape(samples, 16), labels


def test_uint8_pixels_are_converted_and_training_works(backend):
    X, y = _bar_images(32)
    model = nn.Sequential(nn.Dense(16, 8), nn.ReLU(), nn.Dense(8, 2))
    history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.01),
                        epochs=15, batch_size=8, seed=0)
    losses = history["loss"]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
    assert history["accuracy"][-1] == 1.0
    outputs = model.predict(X)
    assert outputs.dtype == backend.xp.float32
    same_as_floats = model.predict(X.astype(np.float32))
    np.testing.assert_array_equal(backend.to_numpy(outputs), backend.to_numpy(same_as_floats))
    assert (backend.to_numpy(outputs).argmax(axis=1) == y).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("library", [name for name in INSTALLED_BACKENDS if name != "numpy"]
                         or [None])
def test_arrays_of_another_backend(backend, method, library):
    if library is None:
        pytest.skip("only numpy is installed: there is no other backend's array to pass")
    if library == backend.name:
        pytest.skip(f"{library} is this session's backend, so its arrays are not foreign")
    X, y = make_data()
    with nn.use_backend(library) as other:
        foreign_X, foreign_y = other.asarray(X), other.asarray(y)
    attempts = [(foreign_X, y, "X")]
    if method != "predict":
        attempts.append((X, foreign_y, "y"))
    for features, targets, what in attempts:
        with pytest.raises(nn.BackendError) as caught:
            call(method, features, targets)
        message = str(caught.value)
        assert f"{what} is a {library} array" in message
        assert f"the active backend is {backend.name}" in message


# -- bad configuration ---------------------------------------------------------------------


@pytest.mark.parametrize("in_features, out_features, bad", [
    (0, 3, "in_features"), (-2, 3, "in_features"), (2.5, 3, "in_features"),
    (3, 0, "out_features"), (3, -1, "out_features"), (True, 3, "in_features"),
])
def test_dense_with_a_non_positive_size(in_features, out_features, bad):
    with pytest.raises(nn.ConfigError) as caught:
        nn.Dense(in_features, out_features)
    value = in_features if bad == "in_features" else out_features
    assert f"{bad} must be a positive integer, got {value!r}" in str(caught.value)


@pytest.mark.parametrize("optimizer", [nn.SGD, nn.RMSprop, nn.Adam, nn.AdamW])
@pytest.mark.parametrize("lr", [
    0, 0.0, -0.1, -1, float("nan"), "0.01", None, float("inf"),
])
def test_non_positive_learning_rate(optimizer, lr):
    with pytest.raises(nn.ConfigError) as caught:
        optimizer(lr=lr)
    message = str(caught.value)
    assert "learning rate must be a positive" in message
    assert f"got {lr!r}" in message


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch_size", [0, -4, 2.5, "32", True, 4.0])
def test_non_positive_or_non_integer_batch_size(method, batch_size):
    X, y = make_data()
    with pytest.raises(nn.ConfigError) as caught:
        call(method, X, y, batch_size=batch_size)
    assert f"batch_size must be a positive integer (or None for the whole dataset), " \
           f"got {batch_size!r}" in str(caught.value)


def test_numpy_integer_batch_size_is_accepted():
    X, y = make_data()
    history = call("fit", X, y, batch_size=np.int64(4), epochs=1)
    assert len(history.epochs) == 1


@pytest.mark.parametrize("epochs", [0, -1, 1.5, "3", True])
def test_epochs_must_be_positive(epochs):
    X, y = make_data()
    with pytest.raises(nn.ConfigError) as caught:
        call("fit", X, y, epochs=epochs)
    assert f"epochs must be a positive integer, got {epochs!r}" in str(caught.value)


def test_unknown_activation_lists_the_known_ones():
    with pytest.raises(nn.ConfigError) as caught:
        nn.get_activation("relux")
    message = str(caught.value)
    assert "unknown activation 'relux'" in message
    for name in ("relu", "sigmoid", "tanh", "leaky_relu", "softmax"):
        assert name in message
    assert isinstance(nn.get_activation("ReLU"), nn.ReLU)


def test_unknown_initializer_lists_the_known_ones():
    with pytest.raises(nn.ConfigError) as caught:
        nn.Dense(2, 3, init="nope")
    message = str(caught.value)
    assert "unknown initializer 'nope'" in message
    for name in ("glorot_uniform", "he_normal", "zeros"):
        assert name in message
    assert "f(fan_in, fan_out)" in message


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, -1])
def test_dropout_rate_outside_zero_one(rate):
    with pytest.raises(nn.ConfigError) as caught:
        nn.Dropout(rate)
    assert f"dropout rate must be in [0, 1), got {rate!r}" in str(caught.value)
    assert nn.Dropout(0.0).rate == 0.0


def test_step_is_not_differentiable(backend):
    step = nn.Step()
    x = backend.asarray(np.array([[-1.0, 2.0]]), dtype="float32")
    np.testing.assert_array_equal(backend.to_numpy(step.forward(x)), [[0.0, 1.0]])
    with pytest.raises(nn.NotDifferentiableError) as caught:
        step.backward(x)
    assert "use Sigmoid" in str(caught.value)
    model = nn.Sequential(nn.Dense(FEATURES, 1), nn.Step())
    X, _ = make_data()
    with pytest.raises(nn.NotDifferentiableError):
        model.fit(X, np.ones(SAMPLES), loss=nn.MeanSquaredError(), optimizer=nn.SGD(),
                  batch_size=4)
