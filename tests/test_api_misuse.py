"""The library API in careless hands (issue 15, "The library API"): a model used after a
backend switch, layers of two backends, torch inputs that carry autograd, backward before
forward, hyper-parameters of the wrong type, an empty model, and class targets that are
not probability rows. Each raises the specific nnscratch error whose message says what to
do, or (host data, requires_grad inputs) is handled as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import INSTALLED_BACKENDS

import nnscratch as nn
from nnscratch import errors
from nnscratch import model as model_module
from nnscratch.data import train_validation_split

FEATURES, CLASSES, SAMPLES = 4, 3, 12
METHODS = ("fit", "evaluate", "predict")
LIBRARIES = [name for name in INSTALLED_BACKENDS if name != "cupy"]  # CPU-only machines


def make_model() -> nn.Sequential:
    return nn.Sequential(nn.Dense(FEATURES, 8), nn.ReLU(), nn.Dense(8, CLASSES))


def make_data(samples: int = SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(0).normal(size=(samples, FEATURES)).astype(np.float32)
    return X, np.arange(samples) % CLASSES


def call(method: str, model: nn.Sequential, X, y, loss: nn.Loss | None = None, **options):
    loss = loss or nn.SoftmaxCrossEntropy()
    if method == "fit":
        options = {"epochs": 1, "batch_size": 4, "seed": 0} | options
        return model.fit(X, y, loss=loss, optimizer=nn.SGD(lr=0.1), **options)
    if method == "evaluate":
        return model.evaluate(X, y, loss=loss, **options)
    return model.predict(X, **options)


def weights_on_host(model: nn.Sequential) -> list[np.ndarray]:
    """Copies of every parameter, read with the library that made it."""
    return [_host(param.value).copy() for param in model.parameters()]


def _host(array) -> np.ndarray:
    if type(array).__module__.startswith("torch"):
        return array.detach().cpu().numpy()
    if type(array).__module__.startswith("array_api_strict"):
        import array_api_strict

        return np.from_dlpack(array.to_device(array_api_strict.Device("CPU_DEVICE")))
    return np.asarray(array)


def another_library(session: str, library: str) -> str:
    """``library`` if it is not the session's own; otherwise the test is skipped, saying why."""
    if len(LIBRARIES) < 2:
        pytest.skip("only one array library is installed: there is no other backend")
    if library == session:
        pytest.skip(f"{library} is this session's backend: switching to it changes nothing")
    return library


# -- a model on one backend, used on another -------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("library", LIBRARIES)
def test_a_model_used_after_switching_backend(backend, method, library):
    """Built on the session's backend, then nn.use_backend(another): fit, evaluate and
    predict refuse, naming both backends and the ways out, and touch nothing."""
    other = another_library(backend.name, library)
    model = make_model()
    before = weights_on_host(model)
    X, y = make_data()
    with nn.use_backend(other), pytest.raises(nn.BackendError) as caught:
        call(method, model, X, y)
    message = str(caught.value)
    assert f"{backend.name} arrays" in message  # the model's backend
    assert f"active backend is {other}" in message  # and the active one
    assert f"nn.use_backend({backend.name!r}" in message  # switch back
    assert "nn.save(model, path)" in message and "nn.load(path)" in message  # or move it
    for was, now in zip(before, weights_on_host(model)):
        np.testing.assert_array_equal(was, now)
    assert call(method, model, X, y) is not None  # back on its own backend, it works


@pytest.mark.skipif("array_api_strict" not in LIBRARIES,
                    reason="array-api-strict (the library with two devices on a CPU) is "
                           "not installed")
@pytest.mark.parametrize("method", METHODS)
def test_a_model_used_on_another_device_of_the_same_library(method):
    X, y = make_data()
    with nn.use_backend("array_api_strict", device="CPU_DEVICE"):
        model = make_model()
    with nn.use_backend("array_api_strict", device="device1"), \
            pytest.raises(nn.BackendError) as caught:
        call(method, model, X, y)
    message = str(caught.value)
    assert "array_api_strict arrays on CPU_DEVICE" in message
    assert "active backend is array_api_strict on device1" in message
    assert "nn.use_backend('array_api_strict', device='CPU_DEVICE')" in message


@pytest.mark.parametrize("library", LIBRARIES)
def test_layers_of_two_backends(backend, library):
    other = another_library(backend.name, library)
    first = nn.Dense(FEATURES, 8)
    with nn.use_backend(other):
        second = nn.Dense(8, CLASSES)
    with pytest.raises(nn.BackendError) as caught:
        nn.Sequential(first, nn.ReLU(), second)
    message = str(caught.value)
    assert f"layer 0 (Dense(in_features=4, out_features=8, init='glorot_uniform', " \
           f"dtype='float32')) holds {backend.name} arrays" in message
    assert f"layer 2 (Dense(in_features=8, out_features=3, init='glorot_uniform', " \
           f"dtype='float32')) holds {other} arrays" in message
    assert "build every layer with one backend active" in message

    model = nn.Sequential(first, nn.ReLU())  # mixed later, by add: caught before the math
    model.add(second)
    X, y = make_data()
    for method in METHODS:
        with pytest.raises(nn.BackendError, match=f"layer 2 .* {other} arrays"):
            call(method, model, X, y)


@pytest.mark.parametrize("library", [name for name in LIBRARIES if name != "numpy"])
def test_forward_with_an_array_of_another_library(backend, library):
    """(NumPy arrays are host data, moved over: see the next test.)"""
    other = another_library(backend.name, library)
    model = make_model()
    X, _ = make_data()
    with nn.use_backend(other) as foreign:
        x = foreign.asarray(X)
    with pytest.raises(nn.BackendError) as caught:
        model.forward(x)
    message = str(caught.value)
    assert f"x is a {other} array" in message
    assert f"model's parameters are {backend.name} arrays" in message
    assert "predict" in message  # the way to pass host data


def test_forward_takes_host_data_as_predict_does(backend):
    """A nested list (and a NumPy array, on any backend) is host data: forward checks it
    and moves it to the device, as predict does, and gives the same outputs. (Arrays of
    the model's own library, NumPy's on the numpy backend, are used as they are.)"""
    model = make_model()
    X, _ = make_data()
    expected = nn.to_numpy(model.predict(X))
    for host in (X.tolist(), X):
        outputs = model.forward(host)
        assert backend.is_native(outputs)
        assert outputs.dtype == backend.xp.float32
        np.testing.assert_allclose(nn.to_numpy(outputs), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(nn.ShapeError, match="rows have different lengths"):
        model.forward([[1.0, 2.0, 3.0, 4.0], [1.0]])
    with pytest.raises(nn.ShapeError, match="first layer expects 4"):
        model.forward([[1.0, 2.0]])


def test_forward_checks_the_input_with_one_type_comparison(backend, monkeypatch):
    """On the training path (x of θ's own type) forward calls nothing else: the slow
    check is not reached."""
    model = make_model()
    x = backend.asarray(make_data()[0])

    def slow_check(*args):
        raise AssertionError("forward_input ran for an array of the model's own type")

    monkeypatch.setattr(model_module, "forward_input", slow_check)
    assert model.forward(x).shape == (SAMPLES, CLASSES)
    with pytest.raises(AssertionError, match="forward_input ran"):
        model.forward(make_data()[0].tolist())


def test_the_backend_is_checked_once_per_call_not_per_step(backend, monkeypatch):
    checks = []
    original = model_module.check_model

    def counting(model, action):
        checks.append(action)
        return original(model, action)

    monkeypatch.setattr(model_module, "check_model", counting)
    X, y = make_data()
    make_model().fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.SGD(lr=0.1),
                     epochs=3, batch_size=2, seed=0)
    assert checks == ["fit"]  # 3 epochs of 6 steps: one check


@pytest.mark.parametrize("method", METHODS)
def test_an_empty_model_is_refused(method):
    X, y = make_data()
    with pytest.raises(nn.ConfigError) as caught:
        call(method, nn.Sequential(), X, y)
    message = str(caught.value)
    assert f"cannot {method} an empty Sequential" in message
    assert "add layers first" in message


# -- torch inputs that require grad ----------------------------------------------------------


def _fit_on(torch, make_inputs) -> tuple[nn.Sequential, nn.History, np.ndarray]:
    X, y = make_data()
    X_t, y_t = torch.tensor(X), torch.tensor(np.eye(CLASSES, dtype=np.float32)[y])
    X_fit, y_fit, X_val = make_inputs(X_t, y_t)
    nn.seed(0)
    model = make_model()
    history = model.fit(X_fit, y_fit, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.01),
                        epochs=3, batch_size=4, seed=0, validation_data=(X_val, y_t))
    return model, history, model.predict(X_val)


@pytest.mark.parametrize("which", ["X", "y", "validation X"])
def test_inputs_that_require_grad_train_as_detached_ones(torch, which):
    """PyTorch tensors with requires_grad=True are detached at the boundary: no parameter
    becomes autograd-tracked, and training gives exactly what detached inputs give."""

    def tracked(X_t, y_t):
        X_fit, y_fit, X_val = X_t, y_t, X_t
        if which == "X":
            X_fit = X_t.clone().requires_grad_(True) * 1.0  # not even a leaf
        elif which == "y":
            y_fit = y_t.clone().requires_grad_(True)
        else:
            X_val = X_t.clone().requires_grad_(True)
        return X_fit, y_fit, X_val

    with nn.use_backend("torch"):
        model, history, outputs = _fit_on(torch, tracked)
        reference, reference_history, reference_outputs = _fit_on(
            torch, lambda X_t, y_t: (X_t, y_t, X_t))
    theta = model.parameters().vector
    assert not theta.value.requires_grad and not theta.grad.requires_grad
    for param in model.parameters():
        assert not param.value.requires_grad and not param.grad.requires_grad
    assert not outputs.requires_grad
    for param, expected in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(param.value, expected.value, rtol=0, atol=0)
    assert history.history == reference_history.history
    torch.testing.assert_close(outputs, reference_outputs, rtol=0, atol=0)


# -- backward before forward -----------------------------------------------------------------


LAYERS = {
    "Dense": lambda: nn.Dense(FEATURES, CLASSES),
    "Dropout": lambda: nn.Dropout(0.5),
    "Identity": nn.Identity, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh, "ReLU": nn.ReLU,
    "LeakyReLU": nn.LeakyReLU, "ELU": nn.ELU, "Softplus": nn.Softplus, "Softmax": nn.Softmax,
}


def assert_state_error(caught: pytest.ExceptionInfo, name: str, fix: str) -> None:
    error = caught.value
    assert isinstance(error, errors.StateError) and isinstance(error, errors.NNScratchError)
    message = str(error)
    assert f"{name}.backward" in message and "before" in message
    assert fix in message


@pytest.mark.parametrize("name", LAYERS)
def test_backward_before_forward_on_a_layer(backend, name):
    layer = LAYERS[name]()
    gradient = backend.asarray(np.ones((2, CLASSES if name == "Dense" else FEATURES)),
                               dtype="float32")
    with pytest.raises(RuntimeError) as caught:
        layer.backward(gradient)
    assert_state_error(caught, name, "call forward(x, training=True) first")


def test_backward_after_forward_still_works_for_dropout_at_evaluation(backend):
    """Dropout at evaluation is the identity, and so is its backward: only a backward with
    no forward at all is an error."""
    layer = nn.Dropout(0.5)
    x = backend.asarray(np.ones((2, 3)), dtype="float32")
    layer.forward(x, training=False)
    np.testing.assert_array_equal(nn.to_numpy(layer.backward(x * 2.0)), np.full((2, 3), 2.0))


def _fused_pair(name: str):
    return {"BinaryCrossEntropy": nn.Sigmoid(), "CategoricalCrossEntropy": nn.Softmax()}.get(name)


LOSSES = {
    "MeanSquaredError": nn.MeanSquaredError,
    "BinaryCrossEntropy": nn.BinaryCrossEntropy,
    "BinaryCrossEntropy(from_logits=True)": lambda: nn.BinaryCrossEntropy(from_logits=True),
    "CategoricalCrossEntropy": nn.CategoricalCrossEntropy,
    "SoftmaxCrossEntropy": nn.SoftmaxCrossEntropy,
}


@pytest.mark.parametrize("label", LOSSES)
def test_backward_before_forward_on_a_loss(label):
    loss = LOSSES[label]()
    name = type(loss).__name__
    fix = "call forward(outputs, targets) first"
    with pytest.raises(RuntimeError) as caught:
        loss.backward()
    assert_state_error(caught, name, fix)
    partner = _fused_pair(label)
    if partner is not None:  # the fused gradient through its activation, as fit takes it
        with pytest.raises(RuntimeError) as caught:
            loss.fused_backward(partner)
        assert_state_error(caught, name, fix)


@pytest.mark.parametrize("last", [None, nn.Sigmoid, nn.Softmax])
def test_backward_before_forward_on_a_model(backend, last):
    layers = [nn.Dense(FEATURES, CLASSES)] + ([last()] if last else [])
    model = nn.Sequential(*layers)
    gradient = backend.asarray(np.ones((2, CLASSES)), dtype="float32")
    with pytest.raises(RuntimeError) as caught:
        model.backward(gradient)
    assert_state_error(caught, type(model.layers[-1]).__name__,
                       "call forward(x, training=True) first")
    # the loss has seen outputs, the model has not: the layers say so
    loss = nn.CategoricalCrossEntropy() if last is nn.Softmax else nn.BinaryCrossEntropy()
    outputs = backend.asarray(np.full((2, CLASSES), 0.25), dtype="float32")
    targets = backend.asarray(np.eye(CLASSES)[[0, 1]], dtype="float32")
    loss.forward(outputs, targets)
    with pytest.raises(RuntimeError) as caught:
        model.backward_loss(loss)
    fused = last is not None  # the fused gradient skips the last activation
    assert_state_error(caught, "Dense" if fused else type(model.layers[-1]).__name__,
                       "call forward(x, training=True) first")
    with pytest.raises(RuntimeError) as caught:  # and a fresh loss says so first
        model.backward_loss(type(loss)())
    assert_state_error(caught, type(loss).__name__, "call forward(outputs, targets) first")


# -- hyper-parameters of the wrong type or value ---------------------------------------------


@pytest.mark.parametrize("make, expected", [
    (lambda: nn.Dense(4, 3, l1=float("nan")), "l1 must be a finite number >= 0, got nan"),
    (lambda: nn.Dense(4, 3, l1=math.inf), "l1 must be a finite number >= 0, got inf"),
    (lambda: nn.Dense(2, 3, l2="a"), "l2 must be a finite number >= 0, got 'a'"),
    (lambda: nn.Dense(2, 3, l2=None), "l2 must be a finite number >= 0, got None"),
    (lambda: nn.Dense(2, 3, l1=True), "l1 must be a finite number >= 0, got True"),
    (lambda: nn.Dropout("0.5"), "dropout rate must be in [0, 1), got '0.5'"),
    (lambda: nn.Dropout(None), "dropout rate must be in [0, 1), got None"),
    (lambda: nn.Dropout([0.5]), "dropout rate must be in [0, 1), got [0.5]"),
    (lambda: nn.LeakyReLU("x"), "LeakyReLU alpha must be a finite number >= 0, got 'x'"),
    (lambda: nn.LeakyReLU(float("nan")), "LeakyReLU alpha must be a finite number >= 0"),
    (lambda: nn.LeakyReLU(math.inf), "LeakyReLU alpha must be a finite number >= 0, got inf"),
    (lambda: nn.ELU(float("nan")), "ELU alpha must be a finite number > 0, got nan"),
    (lambda: nn.ELU("1"), "ELU alpha must be a finite number > 0, got '1'"),
    (lambda: nn.ELU(math.inf), "ELU alpha must be a finite number > 0, got inf"),
    (lambda: nn.Dense(2, 3, init=["he_normal"]), "init must be an initializer name"),
    (lambda: nn.Dense(2, 3, init=None), "init must be an initializer name"),
    (lambda: nn.Dense(2, 3, init=lambda fan_in, fan_out: None),
     "initializer '<lambda>' returned None, not an array"),
    (lambda: nn.Dense(2, 3, init=lambda fan_in, fan_out: [[0.0] * 3] * 2),
     "initializer '<lambda>' returned list, not an array"),
    (lambda: nn.Dense(2, 3, dtype=np.dtype("float32")), "dtype must be one of the names"),
    (lambda: nn.Dense(2, 3, dtype=np.float64), "dtype must be one of the names"),
])
def test_bad_hyper_parameters_say_what_is_expected(make, expected):
    with pytest.raises(nn.ConfigError) as caught:
        make()
    assert expected in str(caught.value)


def test_good_hyper_parameters_of_numpy_types_are_accepted():
    layer = nn.Dense(2, 3, l1=np.float32(0.5), l2=np.int64(1))
    assert (layer.l1, layer.l2) == (0.5, 1.0) and type(layer.l1) is float
    assert nn.Dropout(np.float64(0.25)).rate == 0.25
    assert nn.ELU(np.float32(2.0)).alpha == 2.0 and nn.LeakyReLU(0).alpha == 0.0


# -- class targets that are not probability rows ---------------------------------------------


@pytest.mark.parametrize("method", ["fit", "evaluate"])
@pytest.mark.parametrize("loss, last", [
    (nn.SoftmaxCrossEntropy, None), (nn.CategoricalCrossEntropy, nn.Softmax),
])
def test_negative_class_target_rows_are_refused(method, loss, last):
    X, y = make_data()
    model = nn.Sequential(*[nn.Dense(FEATURES, CLASSES)] + ([last()] if last else []))
    with pytest.raises(nn.DataError) as caught:
        call(method, model, X, -np.eye(CLASSES)[y], loss=loss())
    message = str(caught.value)
    assert "must be >= 0" in message and "-1" in message
    assert "zero row" in message  # what rows are allowed


def test_target_rows_may_weigh_and_mask_samples(backend):
    """Rows that do not sum to 1 stay allowed (documented): weights, and zero rows that
    leave a sample out. Half-weighted rows give half the loss of one-hot rows."""
    X, y = make_data()
    model = make_model()
    loss = nn.SoftmaxCrossEntropy()
    one_hot = np.eye(CLASSES)[y]
    full = model.evaluate(X, one_hot, loss=loss)["loss"]
    assert model.evaluate(X, 0.5 * one_hot, loss=loss)["loss"] == pytest.approx(full / 2)
    masked = one_hot.copy()
    masked[: SAMPLES // 2] = 0.0
    kept = model.evaluate(X[SAMPLES // 2:], one_hot[SAMPLES // 2:], loss=loss)["loss"]
    assert model.evaluate(X, masked, loss=loss)["loss"] == pytest.approx(kept / 2, rel=1e-5)


# -- the split indexes X with X's own library and device -------------------------------------


PLACEMENTS = [(name, None) for name in LIBRARIES] + (
    [("array_api_strict", "device1")] if "array_api_strict" in LIBRARIES else [])


@pytest.mark.parametrize("library, device", PLACEMENTS)
def test_train_validation_split_stays_in_the_arrays_library_and_device(backend, library,
                                                                       device):
    """X and y of any library or device, whatever the active backend: the split's index
    is made beside them, the parts are theirs, disjoint, and cover every row."""
    rows = np.arange(20, dtype=np.float32)
    with nn.use_backend(library, device=device) as home:
        X = home.asarray(np.stack([rows, -rows], axis=1))
        y = home.asarray(rows * 10.0)
    parts = train_validation_split(X, y, 0.25, seed=0)  # under the session's backend
    X_train, y_train, X_val, y_val = (_host(part) for part in parts)
    for part in parts:
        assert type(part) is type(X) and str(part.device) == str(X.device)
    train, validation = X_train[:, 0], X_val[:, 0]
    assert len(validation) == 5 and not set(train) & set(validation)
    assert sorted([*train, *validation]) == list(rows)
    np.testing.assert_array_equal(y_train, train * 10.0)
    np.testing.assert_array_equal(y_val, validation * 10.0)
    np.testing.assert_array_equal(X_train[:, 1], -train)
