"""Training end to end: XOR and the spiral are learned, the default initializer beats the
notes' 0.01·randn on XOR, one seed gives one run on every backend, and the parts of
``fit`` (batch sizes, validation, early stopping, schedules), the scalers, ``evaluate``
and ``predict`` do what they promise, checked against host computations. Which rows
``fit`` trains on, and in which order, is read off a first layer that records row ids."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import INSTALLED_BACKENDS

import nnscratch as nn
from nnscratch.backend import namespace
from nnscratch.datasets.synthetic import make_spiral, make_xor


def f64(backend, array):
    return backend.asarray(np.asarray(array, dtype=np.float64), dtype="float64")


def make_blobs(n=50, seed=0, classes=2):
    """Gaussian blobs around well separated centres, ``classes`` labels, float32 X."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    centres = np.array([[-1.5, -1.0], [1.5, 1.0], [-1.0, 2.0]])[:classes]
    X = centres[y] + rng.normal(scale=0.6, size=(n, 2))
    return X.astype(np.float32), y.astype(np.int64)


def small_classifier(classes=2, dtype="float32", **dense):
    return nn.Sequential(nn.Dense(2, 8, dtype=dtype, **dense), nn.Tanh(),
                         nn.Dense(8, classes, dtype=dtype))


class Recorder(nn.Callback):
    """Records what fit shows its callbacks: the info, each step's loss, the learning
    rate at the start of every epoch, and the weights at the end of every epoch."""

    def __init__(self, optimizer=None):
        self.optimizer, self.step_losses, self.lrs, self.weights = optimizer, [], [], []

    def on_train_begin(self, model, info):
        self.model, self.info = model, info

    def on_epoch_begin(self, epoch):
        if self.optimizer is not None:
            self.lrs.append(self.optimizer.lr)

    def on_batch_end(self, step, loss):
        self.step_losses.append(float(loss))

    def on_epoch_end(self, epoch, logs):
        self.weights.append([nn.to_numpy(p.value).copy() for p in self.model.parameters()])


class RowRecorder(nn.Layer):
    """A first layer that notes which rows the network sees. Column 0 of X holds each
    row's id: the layer records the ids of every forward pass, training passes per
    epoch (``NewEpoch`` opens each epoch's list) and evaluation passes apart, and hands
    the other columns on to the next layer."""

    def __init__(self, in_features):
        self.in_features = in_features  # the width of X, id column included
        self.epochs = []  # per epoch: the ids of forward(training=True), in order
        self.evaluated = []  # the ids of forward(training=False), in order

    def forward(self, x, training=False):
        ids = np.rint(nn.to_numpy(x[:, 0])).astype(np.int64).tolist()
        (self.epochs[-1] if training else self.evaluated).extend(ids)
        return x[:, 1:]

    def backward(self, grad_output, need_input_grad=True):
        if not need_input_grad:  # fit's case: the first layer's input is data
            return None
        xp = namespace(grad_output)
        id_column = xp.zeros((grad_output.shape[0], 1), dtype=grad_output.dtype,
                             device=grad_output.device)
        return xp.concat([id_column, grad_output], axis=1)


class NewEpoch(nn.Callback):
    def __init__(self, recorder):
        self.recorder = recorder

    def on_epoch_begin(self, epoch):
        self.recorder.epochs.append([])


def with_row_ids(n, seed):
    """Blobs (two features, two classes) behind a column of row ids 1000, 1001, ...:
    (X with the ids in column 0, y, the ids as a list)."""
    X, y = make_blobs(n=n, seed=seed)
    ids = 1000 + np.arange(n)
    return np.concatenate([ids[:, None].astype(np.float32), X], axis=1), y, ids.tolist()


def recording_model(recorder):
    return nn.Sequential(recorder, nn.Dense(2, 8), nn.Tanh(), nn.Dense(8, 2))


# -- XOR: the default initializer against the notes' 0.01·randn -------------------------

def xor_budget(backend):
    """Iterations of full-batch gradient descent (lr 0.3) each XOR run may take. Measured
    on numpy: the default init solves every one of 20 seeds by iteration 1500. A step
    costs ~0.1 ms on numpy but ~2 ms on array_api_strict (its checks on every call), so
    the other backends get 2000 iterations and fewer seeds."""
    return 5000 if backend.name == "numpy" else 2000


def train_xor(backend, seed, init, stop_when_solved=True):
    """The 2-4-1 sigmoid network by the notes' loop; returns (iterations, host outputs),
    iterations None if it never classified all four inputs right within the budget."""
    X_host, y_host = make_xor()
    X, y = backend.asarray(X_host), backend.asarray(y_host)
    nn.seed(seed)
    model = nn.Sequential(nn.Dense(2, 4, init=init), nn.Sigmoid(),
                          nn.Dense(4, 1, init=init), nn.Sigmoid())
    loss, optimizer, parameters = nn.BinaryCrossEntropy(), nn.SGD(lr=0.3), model.parameters()
    targets = y_host.ravel() == 1.0
    solved = None
    for iteration in range(xor_budget(backend)):
        outputs = model.forward(X, training=True)
        checked = stop_when_solved and iteration % 100 == 0  # a host sync: not every step
        if checked and np.array_equal(nn.to_numpy(outputs).ravel() >= 0.5, targets):
            solved = iteration
            break
        loss.forward(outputs, y)
        model.backward(loss.backward(), need_input_grad=False)
        optimizer.step(parameters)
    return solved, nn.to_numpy(model.forward(X)).ravel()


def test_default_init_learns_xor_from_most_seeds(backend):
    # The default is glorot_uniform. Ten seeds on numpy, three elsewhere (see xor_budget).
    seeds = range(10) if backend.name == "numpy" else range(3)
    solved = [train_xor(backend, seed, "glorot_uniform")[0] for seed in seeds]
    assert sum(s is not None for s in solved) >= len(seeds) - 1, solved


def test_the_notes_small_normal_init_stalls_on_xor(backend):
    # With 0.01·randn every hidden unit starts at σ(≈0) = 0.5: a saddle, where the
    # gradient is ~0 by symmetry. Measured: after 5000 (and still after 20,000) iterations
    # every output is within 4e-5 of 0.5 for seeds 0..9, the loss ln 2 to 7 digits. The
    # default init solves XOR well within the same budget (the test above).
    seeds = range(2) if backend.name == "numpy" else range(1)
    for seed in seeds:
        _, outputs = train_xor(backend, seed, "normal", stop_when_solved=False)
        assert np.abs(outputs - 0.5).max() < 1e-3, outputs


def test_xor_tanh_network_reaches_full_accuracy_with_fit(backend):
    X, y = make_xor()
    nn.seed(0)
    model = nn.Sequential(nn.Dense(2, 5), nn.Tanh(), nn.Dense(5, 1), nn.Sigmoid())
    history = model.fit(X, y, loss=nn.BinaryCrossEntropy(), optimizer=nn.SGD(lr=0.3),
                        epochs=500, batch_size=None)
    assert history["accuracy"][-1] == 1.0
    assert history["loss"][-1] < 0.05 < history["loss"][0]
    scores = model.evaluate(X, y)
    assert scores["accuracy"] == 1.0
    outputs = nn.to_numpy(model.predict(X)).ravel()
    np.testing.assert_array_equal(outputs >= 0.5, [False, True, True, False])


def test_spiral_reaches_95_percent(backend):
    X, y = make_spiral(seed=0)
    assert X.shape == (300, 2) and X.dtype == np.float32 and y.dtype == np.int64
    nn.seed(0)
    model = nn.Sequential(nn.Dense(2, 32, init="he_uniform"), nn.ReLU(),
                          nn.Dense(32, 32, init="he_uniform"), nn.ReLU(), nn.Dense(32, 3))
    history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.02),
                        epochs=150, batch_size=None, seed=0)  # 99.3% from epoch 100 on
    assert history["accuracy"][0] < 0.7  # not solved from the start
    assert model.evaluate(X, y)["accuracy"] >= 0.95


def test_xor_dataset():
    X, y = make_xor()
    assert X.shape == (4, 2) and y.shape == (4, 1)
    assert X.dtype == y.dtype == np.float32
    np.testing.assert_array_equal(y.ravel(), np.logical_xor(X[:, 0], X[:, 1]))


def test_spiral_dataset_shape_and_determinism():
    X, y = make_spiral(points_per_class=50, classes=4, seed=3)
    assert X.shape == (200, 2) and y.shape == (200,)
    np.testing.assert_array_equal(np.bincount(y), [50] * 4)
    again, _ = make_spiral(points_per_class=50, classes=4, seed=3)
    np.testing.assert_array_equal(X, again)
    assert not np.array_equal(X, make_spiral(points_per_class=50, classes=4, seed=4)[0])
    radius = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(radius[:50], np.linspace(0, 1, 50), atol=1e-6)
    clean, _ = make_spiral(points_per_class=5, classes=1, noise=0.0)
    angle = np.linspace(0, 4, 5)
    expected = np.stack([np.linspace(0, 1, 5) * np.sin(angle),
                         np.linspace(0, 1, 5) * np.cos(angle)], axis=1)
    np.testing.assert_allclose(clean, expected, atol=1e-7)
    with pytest.raises(nn.ConfigError):
        make_spiral(points_per_class=0)


# -- one seed, one run, on every backend ------------------------------------------------


def _train_on(name, device=None):
    with nn.use_backend(name, device=device):
        X, y = make_blobs(n=50, seed=4, classes=3)
        nn.seed(21)
        model = nn.Sequential(
            nn.Dense(2, 16, dtype="float64"), nn.ReLU(), nn.Dropout(0.3),
            nn.Dense(16, 8, dtype="float64"), nn.Tanh(), nn.Dense(8, 3, dtype="float64"),
        )
        start = [nn.to_numpy(p.value).copy() for p in model.parameters()]
        optimizer = nn.Adam(lr=0.01)
        history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer,
                            epochs=4, batch_size=10)  # 5 shuffled steps per epoch
        assert optimizer.t == 20
        return start, [nn.to_numpy(p.value) for p in model.parameters()], history["loss"]


def test_same_seed_trains_to_the_same_weights_on_every_backend():
    runs = [(name, None) for name in INSTALLED_BACKENDS]
    if "array_api_strict" in INSTALLED_BACKENDS:
        runs.append(("array_api_strict", "device1"))
    reference_start, reference, reference_losses = _train_on("numpy")
    for name, device in runs:
        start, weights, losses = _train_on(name, device)
        for initial, expected in zip(start, reference_start):
            np.testing.assert_array_equal(initial, expected)
        for got, expected, initial in zip(weights, reference, reference_start):
            assert not np.allclose(expected, initial)
            error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
            assert error < 1e-10, (name, device, error)
        np.testing.assert_allclose(losses, reference_losses, rtol=1e-10)


def test_dropout_and_shuffles_change_the_run(backend):
    """The cross-backend check above is only meaningful if the random streams matter."""
    _, with_seed_21, _ = _train_on(backend.name)
    nn.seed(0)
    X, y = make_blobs(n=50, seed=4, classes=3)
    nn.seed(21)
    model = nn.Sequential(
        nn.Dense(2, 16, dtype="float64"), nn.ReLU(), nn.Dropout(0.3),
        nn.Dense(16, 8, dtype="float64"), nn.Tanh(), nn.Dense(8, 3, dtype="float64"),
    )
    model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.01), epochs=4,
              batch_size=10, seed=99)  # same init, other shuffles and masks
    other = [nn.to_numpy(p.value) for p in model.parameters()]
    assert not np.allclose(other[0], with_seed_21[0])


# -- fit --------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size,steps_per_epoch", [(None, 1), (16, 4), (1, 50)])
def test_fit_variants_reduce_the_loss(backend, batch_size, steps_per_epoch):
    X, y = make_blobs(n=50, seed=1)
    nn.seed(2)
    model = small_classifier()
    initial = model.evaluate(X, y, loss=nn.SoftmaxCrossEntropy())["loss"]
    optimizer = nn.SGD(lr=0.1)
    recorder = Recorder()
    history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=5,
                        batch_size=batch_size, seed=3, callbacks=[recorder])
    assert optimizer.t == 5 * steps_per_epoch
    assert len(history["loss"]) == len(history.epochs) == 5
    assert history["loss"][-1] < history["loss"][0]
    assert model.evaluate(X, y)["loss"] < 0.8 * initial
    # the epoch's loss is the sample-weighted mean of its steps' losses (last batch short)
    sizes = [min(batch_size or 50, 50 - start) for start in range(0, 50, batch_size or 50)]
    first_epoch = recorder.step_losses[:steps_per_epoch]
    assert history["loss"][0] == pytest.approx(np.dot(first_epoch, sizes) / 50, rel=1e-6)
    if batch_size is None:  # one step: its loss is the loss of the starting weights
        assert history["loss"][0] == pytest.approx(initial, rel=1e-6)


@pytest.mark.parametrize("ending", ["sigmoid, bce", "softmax, cce"])
def test_fit_skips_the_jacobian_of_the_final_activation(backend, monkeypatch, ending):
    """fit hands (p − y)/N straight to the layer below a final Sigmoid (BCE) or Softmax
    (CCE): their backward is never called, where the notes' chain calls it."""
    sigmoid = ending == "sigmoid, bce"
    final = nn.Sigmoid if sigmoid else nn.Softmax

    def refuse(self, grad_output, need_input_grad=True):
        raise AssertionError(f"{final.__name__}.backward was called")

    monkeypatch.setattr(final, "backward", refuse)
    X, y = make_blobs(n=40, classes=2 if sigmoid else 3)
    model = nn.Sequential(nn.Dense(2, 5), nn.Tanh(), nn.Dense(5, 1 if sigmoid else 3),
                          final())
    loss = nn.BinaryCrossEntropy() if sigmoid else nn.CategoricalCrossEntropy()
    history = model.fit(X, y.astype(np.float32) if sigmoid else y, loss=loss,
                        optimizer=nn.Adam(lr=0.05), epochs=20, batch_size=8, seed=0)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["accuracy"][-1] > 0.9
    # a forward first: a compiled fit (jax) leaves no forward caches in the layers
    loss.forward(model.forward(X, training=True),
                 nn.get_backend().asarray(y.astype(np.float32)[:, None] if sigmoid else y))
    with pytest.raises(AssertionError, match="backward was called"):
        model.backward(loss.backward())


def test_validation_split_holds_out_data_and_reports_val_metrics(backend):
    X, y = make_blobs(n=50, seed=5)
    nn.seed(6)
    model = small_classifier()
    recorder = Recorder()
    history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.05),
                        epochs=3, batch_size=8, seed=7, validation_split=0.2,
                        callbacks=[recorder])
    assert recorder.info["samples"] == 40 and recorder.info["validation"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history[key]) == 3
    # the held-out part is the one train_validation_split draws from the same seed
    _, _, X_val, y_val = nn.train_validation_split(backend.asarray(X), backend.asarray(y),
                                                   0.2, seed=7)
    assert X_val.shape[0] == 10
    scores = model.evaluate(X_val, y_val)
    assert history["val_loss"][-1] == pytest.approx(scores["loss"], rel=1e-6)
    assert history["val_accuracy"][-1] == scores["accuracy"]


@pytest.mark.parametrize("fraction,seed", [(0.2, 0), (0.5, 3), (0.9, None)])
def test_train_validation_split_is_a_partition_of_the_rows(backend, fraction, seed):
    X, _, ids = with_row_ids(n=37, seed=24)
    y = np.array(ids, dtype=np.int64)  # each row's target is its id: pairs stay pairs
    parts = [nn.to_numpy(part) for part in nn.train_validation_split(
        backend.asarray(X), backend.asarray(y), fraction, seed=seed)]
    X_train, y_train, X_val, y_val = parts
    train_ids, val_ids = X_train[:, 0].astype(np.int64), X_val[:, 0].astype(np.int64)
    assert len(val_ids) == round(37 * fraction) and len(train_ids) == 37 - len(val_ids)
    assert not set(train_ids) & set(val_ids)  # no row on both sides
    assert sorted([*train_ids, *val_ids]) == ids  # and together: each row exactly once
    np.testing.assert_array_equal(y_train, train_ids)
    np.testing.assert_array_equal(y_val, val_ids)
    np.testing.assert_array_equal(X_train, X[train_ids - 1000])  # whole rows, unchanged
    np.testing.assert_array_equal(X_val, X[val_ids - 1000])
    # drawn at random, not the first or last rows
    assert sorted(val_ids) not in (ids[:len(val_ids)], ids[-len(val_ids):])


def test_fit_trains_only_on_the_training_rows_of_its_validation_split(backend):
    X, y, ids = with_row_ids(n=50, seed=5)
    recorder = RowRecorder(3)
    nn.seed(6)
    model = recording_model(recorder)
    history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.05),
                        epochs=3, batch_size=8, seed=7, validation_split=0.2,
                        callbacks=[NewEpoch(recorder)])
    validation = recorder.evaluated[:10]
    assert len(set(validation)) == 10
    assert recorder.evaluated == validation * 3  # the same held-out rows every epoch
    training = sorted(set(ids) - set(validation))
    assert len(recorder.epochs) == 3
    for seen in recorder.epochs:  # every training row once an epoch, no validation row
        assert sorted(seen) == training
    # the validation scores are those of the held-out rows, with their own targets
    rows = np.array(validation) - 1000
    scores = model.evaluate(X[rows], y[rows])
    assert history["val_loss"][-1] == pytest.approx(scores["loss"], rel=1e-6)
    assert history["val_accuracy"][-1] == scores["accuracy"]


def epoch_orders(X, y, seed, shuffle=True, epochs=4):
    """The order in which fit showed the rows to the network, epoch by epoch."""
    recorder = RowRecorder(X.shape[1])
    recording_model(recorder).fit(X, y, loss=nn.SoftmaxCrossEntropy(),
                                  optimizer=nn.SGD(lr=0.1), epochs=epochs, batch_size=5,
                                  seed=seed, shuffle=shuffle, callbacks=[NewEpoch(recorder)])
    return recorder.epochs


def test_fit_shuffles_every_epoch_anew_and_reproducibly(backend):
    X, y, ids = with_row_ids(n=23, seed=22)  # 5 steps an epoch, the last one short
    orders = epoch_orders(X, y, seed=3)
    assert len(orders) == 4
    for order in orders:
        assert sorted(order) == ids  # a permutation of the rows
    assert orders[0] != ids  # shuffled from the first epoch on
    assert len({tuple(order) for order in orders}) == 4  # a new permutation every epoch
    assert epoch_orders(X, y, seed=3) == orders  # the same seed, the same orders
    assert epoch_orders(X, y, seed=4) != orders
    # without fit(seed=...), the shuffle stream of nn.seed decides
    nn.seed(5)
    from_nn_seed = epoch_orders(X, y, seed=None)
    assert len({tuple(order) for order in from_nn_seed}) == 4
    nn.seed(5)
    assert epoch_orders(X, y, seed=None) == from_nn_seed


def test_fit_without_shuffle_keeps_the_input_order(backend):
    X, y, ids = with_row_ids(n=23, seed=22)
    assert epoch_orders(X, y, seed=3, shuffle=False) == [ids] * 4


def test_validation_data_is_evaluated_every_epoch(backend):
    X, y = make_blobs(n=40, seed=8)
    X_val, y_val = make_blobs(n=20, seed=9)
    nn.seed(10)
    model = small_classifier()
    recorder = Recorder()
    history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.05),
                        epochs=3, batch_size=16, validation_data=(X_val, y_val),
                        callbacks=[recorder])
    assert recorder.info["samples"] == 40
    assert len(history["val_loss"]) == len(history["val_accuracy"]) == 3
    scores = model.evaluate(X_val, y_val)
    assert history["val_loss"][-1] == pytest.approx(scores["loss"], rel=1e-6)
    assert history["val_accuracy"][-1] == scores["accuracy"]
    assert history["val_loss"][-1] < history["val_loss"][0]
    with pytest.raises(nn.ConfigError):
        model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.SGD(), epochs=1,
                  validation_data=(X_val, y_val), validation_split=0.2)


@pytest.mark.parametrize("restore_best", [True, False])
def test_early_stopping_stops_and_restores_the_best_weights(backend, restore_best):
    # Validation labels are the training labels flipped: the better the model fits the
    # training data, the worse its validation loss, so the best epoch comes early.
    X, y = make_blobs(n=40, seed=11)
    nn.seed(12)
    model = small_classifier()
    recorder = Recorder()
    stopper = nn.EarlyStopping(patience=2, restore_best=restore_best)
    history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.05),
                        epochs=30, batch_size=None, validation_data=(X, 1 - y),
                        callbacks=[recorder, stopper])
    val_losses = history["val_loss"]
    best = int(np.argmin(val_losses))
    assert stopper.monitor == "val_loss"
    assert stopper.best_epoch == best and stopper.best == val_losses[best]
    assert stopper.stopped_epoch == best + 2 + 1  # patience epochs without improvement
    assert len(history.epochs) == stopper.stopped_epoch + 1 < 30
    final = [nn.to_numpy(p.value) for p in model.parameters()]
    kept = recorder.weights[best] if restore_best else recorder.weights[-1]
    for got, expected, last in zip(final, kept, recorder.weights[-1]):
        np.testing.assert_array_equal(got, expected)
        if restore_best:
            assert not np.array_equal(got, last)
    if restore_best:
        assert model.evaluate(X, 1 - y)["loss"] == pytest.approx(val_losses[best], rel=1e-6)


@pytest.mark.parametrize("schedule,expected", [
    (nn.StepDecay(step_size=2, gamma=0.5), [0.1, 0.1, 0.05, 0.05, 0.025]),
    (nn.ExponentialDecay(0.5), [0.1, 0.05, 0.025, 0.0125, 0.00625]),
    (nn.CosineDecay(total_epochs=4), [0.1, 0.1 * (1 + math.cos(math.pi / 4)) / 2, 0.05,
                                      0.1 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.0]),
])
def test_schedules_set_the_learning_rate_of_every_epoch(backend, schedule, expected):
    X, y = make_blobs(n=20, seed=13)
    optimizer = nn.SGD(lr=0.1)
    recorder = Recorder(optimizer)
    small_classifier().fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=5,
                           batch_size=None, schedule=schedule, callbacks=[recorder])
    assert recorder.lrs == pytest.approx(expected, rel=1e-14, abs=1e-15)


def test_a_scheduled_learning_rate_is_the_one_used(backend):
    """SGD on a linear model: a zero learning rate in epoch 2 leaves the weights alone."""
    X, y = make_blobs(n=20, seed=14)
    model = small_classifier()
    recorder = Recorder()

    class ZeroAfterFirst(nn.Schedule):
        def __call__(self, base_lr, epoch):
            return base_lr if epoch == 0 else 0.0

    model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.SGD(lr=0.5), epochs=2,
              batch_size=None, schedule=ZeroAfterFirst(), callbacks=[recorder])
    for first, second in zip(*recorder.weights):
        np.testing.assert_array_equal(first, second)


# -- scalers ----------------------------------------------------------------------------


@pytest.fixture
def train_and_test():
    rng = np.random.default_rng(15)
    X_train = rng.normal(loc=[5.0, -2.0, 0.0], scale=[2.0, 0.5, 10.0], size=(40, 3))
    X_test = rng.normal(loc=[8.0, 0.0, 3.0], scale=[1.0, 3.0, 1.0], size=(15, 3))
    return X_train, X_test


@pytest.mark.parametrize("scaler,center,scale", [
    (nn.MinMaxScaler, lambda X: X.min(0), lambda X: X.max(0) - X.min(0)),
    (nn.StandardScaler, lambda X: X.mean(0), lambda X: X.std(0)),
    (nn.MeanNormalizer, lambda X: X.mean(0), lambda X: X.max(0) - X.min(0)),
])
def test_scalers_use_training_statistics_only(backend, train_and_test, scaler, center, scale):
    X_train, X_test = train_and_test
    fitted = scaler().fit(f64(backend, X_train))
    test_scaled = nn.to_numpy(fitted.transform(f64(backend, X_test)))
    expected = (X_test - center(X_train)) / scale(X_train)
    np.testing.assert_allclose(test_scaled, expected, rtol=1e-12)
    # refitting on the test set would give something else
    refit = nn.to_numpy(scaler().fit_transform(f64(backend, X_test)))
    assert not np.allclose(refit, test_scaled)
    np.testing.assert_allclose(nn.to_numpy(fitted.inverse_transform(f64(backend, test_scaled))),
                               X_test, rtol=1e-12)


def test_scaled_training_data_properties(backend, train_and_test):
    X_train, _ = train_and_test
    minmax = nn.to_numpy(nn.MinMaxScaler().fit_transform(f64(backend, X_train)))
    np.testing.assert_allclose(minmax.min(0), 0.0, atol=1e-15)
    np.testing.assert_allclose(minmax.max(0), 1.0, rtol=1e-15)
    standard = nn.to_numpy(nn.StandardScaler().fit_transform(f64(backend, X_train)))
    np.testing.assert_allclose(standard.mean(0), 0.0, atol=1e-14)
    np.testing.assert_allclose(standard.std(0), 1.0, rtol=1e-13)
    normalized = nn.to_numpy(nn.MeanNormalizer().fit_transform(f64(backend, X_train)))
    np.testing.assert_allclose(normalized.mean(0), 0.0, atol=1e-14)
    np.testing.assert_allclose(normalized.max(0) - normalized.min(0), 1.0, rtol=1e-14)


def test_scalers_leave_constant_features_finite(backend):
    X = f64(backend, [[1.0, 7.0], [2.0, 7.0], [3.0, 7.0]])
    for scaler in (nn.MinMaxScaler(), nn.StandardScaler(), nn.MeanNormalizer()):
        scaled = nn.to_numpy(scaler.fit_transform(X))
        assert np.all(np.isfinite(scaled))
        np.testing.assert_array_equal(scaled[:, 1], 0.0)
    with pytest.raises(nn.ConfigError, match="fit"):
        nn.StandardScaler().transform(X)


# -- evaluate and predict ---------------------------------------------------------------


def test_evaluate_multiclass_equals_a_host_computation(backend):
    X, y = make_blobs(n=23, seed=16, classes=3)
    nn.seed(17)
    model = small_classifier(classes=3, dtype="float64", l2=0.01)
    logits = nn.to_numpy(model.predict(X))
    shifted = logits - logits.max(1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    weight = nn.to_numpy(model.layers[0].weight.value)
    expected_loss = -log_probabilities[np.arange(23), y].mean() + 0.01 * (weight**2).sum()
    expected_accuracy = (logits.argmax(1) == y).mean()
    assert 0.0 < expected_accuracy < 1.0  # an untrained model: some right, some wrong
    for batch_size in (None, 5):  # 5 does not divide 23: batches must be weighted
        scores = model.evaluate(X, y, loss=nn.SoftmaxCrossEntropy(), batch_size=batch_size)
        assert scores["loss"] == pytest.approx(expected_loss, rel=1e-12)
        assert scores["accuracy"] == expected_accuracy


def test_evaluate_binary_equals_a_host_computation(backend):
    X, labels = make_blobs(n=21, seed=18)
    y = labels.astype(np.float32)[:, None]
    nn.seed(19)
    model = nn.Sequential(nn.Dense(2, 4, dtype="float64"), nn.Tanh(),
                          nn.Dense(4, 1, dtype="float64"), nn.Sigmoid())
    p = nn.to_numpy(model.predict(X)).ravel()
    expected_loss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    expected_accuracy = ((p >= 0.5) == (labels == 1)).mean()
    for batch_size in (None, 4):
        scores = model.evaluate(X, y, loss=nn.BinaryCrossEntropy(), batch_size=batch_size)
        assert scores["loss"] == pytest.approx(expected_loss, rel=1e-12)
        assert scores["accuracy"] == pytest.approx(expected_accuracy, rel=1e-15)


class Frozen(nn.Schedule):
    """Learning rate 0: the weights never move."""

    def __call__(self, base_lr, epoch):
        return 0.0


@pytest.mark.parametrize("batch_size", [None, 4])
@pytest.mark.parametrize("from_logits", [False, True])
def test_binary_accuracy_counts_the_threshold_as_class_1_and_every_output(
        backend, from_logits, batch_size):
    """Zero weights output exactly the threshold for every sample (σ(0) = 0.5, or the
    logit 0): every prediction is class 1, right where the target is 1. Two outputs per
    sample: accuracy is over the 12 predictions, not the 6 samples."""
    X, _ = make_blobs(n=6, seed=23)
    y = np.array([[1, 1], [1, 0], [0, 1], [1, 1], [0, 0], [1, 1]], dtype=np.float32)
    layers = [nn.Dense(2, 2, init="zeros")] + ([] if from_logits else [nn.Sigmoid()])
    model = nn.Sequential(*layers)
    loss = nn.BinaryCrossEntropy(from_logits=from_logits)
    assert model.evaluate(X, y, loss=loss, batch_size=batch_size)["accuracy"] == 8 / 12
    history = model.fit(X, y, loss=loss, optimizer=nn.SGD(lr=0.1), epochs=2,
                        batch_size=batch_size, schedule=Frozen())
    assert history["accuracy"] == [8 / 12] * 2


def test_predict_is_forward_in_evaluation_mode(backend):
    X, _ = make_blobs(n=30, seed=20)
    nn.seed(21)
    model = nn.Sequential(nn.Dense(2, 16), nn.ReLU(), nn.Dropout(0.5), nn.Dense(16, 3))
    X_device = backend.asarray(X)
    expected = nn.to_numpy(model.forward(X_device, training=False))
    np.testing.assert_array_equal(nn.to_numpy(model.predict(X)), expected)
    np.testing.assert_allclose(nn.to_numpy(model.predict(X, batch_size=7)), expected,
                               rtol=1e-6, atol=1e-7)
    assert model.predict(X).dtype == backend.xp.float32
    dropped = nn.to_numpy(model.forward(X_device, training=True))
    assert not np.allclose(dropped, expected)  # dropout is active only when training


def test_fit_closes_its_progress_display_when_training_fails(monkeypatch):
    """verbose=2 shows a display within the epoch; a diverging run must not leave it."""
    opened, closed = [], []

    class Display:  # stands in for nnscratch.progress.Progress, recording its life
        def __init__(self, *args, **kwargs):
            opened.append(self)

        def update(self, count=1):
            pass

        def set_postfix_str(self, text):
            pass

        def close(self):
            closed.append(self)

    monkeypatch.setattr("nnscratch.callbacks.Progress", Display)
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(40, 2)).astype(np.float32), rng.normal(size=40).astype(np.float32)
    nn.seed(0)
    model = nn.Sequential(nn.Dense(2, 1))
    with pytest.raises(nn.DivergenceError), np.errstate(over="ignore", invalid="ignore"):
        model.fit(X, y, loss=nn.MeanSquaredError(), optimizer=nn.SGD(lr=1e3), epochs=19,
                  batch_size=8, verbose=2)  # a rate this large overflows within epochs
    assert opened and set(map(id, opened)) == set(map(id, closed))
