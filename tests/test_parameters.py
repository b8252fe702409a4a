"""θ as one vector (nnscratch.parameters): a model's parameters are windows of one flat
θ and one flat ∇θ, optimizers update θ as one array, and nothing a user sees changes:
``layer.weight.value``, ``.grad``, ``model.parameters()``, ``optimizer.state``,
checkpoints (older files too), and the weights the same seed trains to."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nnscratch as nn
import nnscratch.io as nio
import nnscratch.parameters as parameters_module
from nnscratch.errors import DataError, NNScratchError, ShapeError
from nnscratch.parameters import ParameterVector

DATA = Path(__file__).parent / "data"


def model(dtype="float32") -> nn.Sequential:
    nn.seed(0)
    return nn.Sequential(nn.Dense(5, 7, dtype=dtype), nn.ReLU(), nn.Dense(7, 3, dtype=dtype))


def needs_theta(backend) -> None:
    """θ with windows needs arrays that change in place; JAX's are immutable values."""
    if not nn.backend.mutable(backend.xp.zeros(1)):
        pytest.skip("JAX arrays are immutable: each parameter is an array of its own there, "
                    "not a window of one θ (see nnscratch/parameters.py)")


def host(array) -> np.ndarray:
    return np.array(nn.to_numpy(array), copy=True)


def test_parameters_are_windows_of_one_theta(backend):
    needs_theta(backend)
    net = model()
    params = net.parameters()
    vector = params.vector
    assert isinstance(vector, ParameterVector) and len(vector) == 4
    assert vector.value.shape == (5 * 7 + 7 + 7 * 3 + 3,)
    # the windows, in layer order, end to end
    flat = host(vector.value)
    pieces = np.concatenate([host(p.value).reshape(-1) for p in params])
    np.testing.assert_array_equal(flat, pieces)
    # a write through θ is seen by the layer, and a write through the layer by θ
    vector.value[...] = 2.0
    assert float(nn.get_backend().xp.sum(net.layers[0].weight.value)) == 2.0 * 35
    net.layers[2].bias.value = backend.asarray(np.array([1.0, 2.0, 3.0], np.float32))
    np.testing.assert_array_equal(host(vector.value)[-3:], [1.0, 2.0, 3.0])
    assert params[0] is net.layers[0].weight and params[3] is net.layers[2].bias


def test_gradients_land_in_grad_theta(backend):
    needs_theta(backend)
    net = model()
    X = backend.asarray(np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32))
    loss = nn.SoftmaxCrossEntropy()
    loss.forward(net.forward(X, training=True), backend.asarray(np.arange(6) % 3))
    net.backward(loss.backward())
    params = net.parameters()
    grads = np.concatenate([host(p.grad).reshape(-1) for p in params])
    np.testing.assert_array_equal(host(params.vector.grad), grads)
    assert np.abs(grads).max() > 0
    # and they are the same as those of a layer on its own (no θ): x @ W + b apart
    alone = nn.Dense(7, 3)
    alone.weight.value, alone.bias.value = net.layers[2].weight.value, net.layers[2].bias.value
    hidden = net.layers[1].forward(net.layers[0].forward(X))
    loss.forward(alone.forward(hidden, training=True), backend.asarray(np.arange(6) % 3))
    alone.backward(loss.backward())
    np.testing.assert_allclose(host(alone.weight.grad), host(net.layers[2].weight.grad),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(host(alone.bias.grad), host(net.layers[2].bias.grad),
                               rtol=1e-5, atol=1e-7)


def test_assigning_a_value_of_another_shape_is_refused(backend):
    net = model()
    with pytest.raises(ShapeError, match=r"shape \(3,\)"):
        net.layers[0].bias.value = backend.asarray(np.zeros(3, np.float32))


def test_assigning_a_value_of_another_dtype_is_refused_not_rounded(backend):
    """A float64 array written into a float32 model's θ was cast silently (nine digits
    lost); now it is refused with both dtypes named and the way to a float64 model."""
    net = model()
    before = host(net.layers[0].bias.value)
    precise = backend.asarray(np.full(7, 1.0 + 1e-12), dtype="float64")
    with pytest.raises(DataError) as caught:
        net.layers[0].bias.value = precise
    message = str(caught.value)
    assert "float64" in message and "float32" in message
    assert 'dtype="float64"' in message and "'bias'" in message
    np.testing.assert_array_equal(host(net.layers[0].bias.value), before)  # nothing written
    with pytest.raises(DataError, match="float64.*float32"):
        net.layers[0].bias.grad = precise
    # the same dtype and shape is still copied into θ; a float64 model takes float64 values
    wide = model("float64")
    wide.layers[0].bias.value = precise
    assert host(wide.layers[0].bias.value).tolist() == [1.0 + 1e-12] * 7
    if wide.parameters().vector is not None:  # JAX's immutable arrays have no θ
        assert host(wide.parameters().vector.value)[35:42].tolist() == [1.0 + 1e-12] * 7
    with pytest.raises(NNScratchError, match="float32"):
        wide.layers[2].bias.value = backend.asarray(np.zeros(3, np.float32))


def train(net, optimizer, epochs=3):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    net.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=epochs,
            batch_size=16, seed=2)
    return [host(p.value) for p in net.parameters()]


OPTIMIZERS = {
    "sgd": lambda: nn.SGD(lr=0.1),
    "momentum": lambda: nn.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "rmsprop": lambda: nn.RMSprop(lr=0.01, momentum=0.5),
    "adam": lambda: nn.Adam(lr=0.01, weight_decay=1e-3),
    "adamw": lambda: nn.AdamW(lr=0.01),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_theta_as_one_array_trains_as_parameter_by_parameter(backend, monkeypatch, name):
    """The flat step and the step parameter by parameter (the path a backend without
    views takes) give the same weights."""
    flat = train(model(), OPTIMIZERS[name]())
    monkeypatch.setattr(parameters_module, "views_alias", lambda *args: False)
    net = model()
    assert net.parameters().vector is None  # laid out separately, as before
    separate = train(net, OPTIMIZERS[name]())
    for a, b in zip(flat, separate):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(flat, [host(p.value) for p in
                                                             model().parameters()]))


def test_a_namespace_without_views_is_detected(backend):
    needs_theta(backend)
    xp = backend.xp
    assert parameters_module.views_alias(xp, xp.float32, backend.device)  # all four alias

    class Copying:  # slices are copies: a write through θ would not reach the layer
        def __init__(self, namespace):
            self.namespace = namespace

        def __getattr__(self, name):
            return getattr(self.namespace, name)

        def reshape(self, array, shape):
            return self.namespace.reshape(self.namespace.asarray(array, copy=True), shape)

    parameters_module._ALIASING.clear()
    try:
        assert not parameters_module.views_alias(Copying(xp), xp.float32, backend.device)
    finally:
        parameters_module._ALIASING.clear()


def test_optimizer_state_per_parameter_is_a_window_of_the_flat_state(backend):
    needs_theta(backend)
    net, adam = model(), nn.Adam()
    train(net, adam, epochs=1)
    params = net.parameters()
    flat = adam.state[params.vector]
    for index, param in enumerate(params):
        for slot in ("m_scaled", "v_scaled"):
            np.testing.assert_array_equal(host(adam.state[param][slot]),
                                          host(params.vector.window(flat[slot], index)))
    assert float(backend.xp.max(flat["v_scaled"])) > 0


def test_a_step_without_all_gradients_updates_only_those_with_one(backend):
    net, sgd = model(), nn.SGD(lr=1.0)
    params = net.parameters()
    before = [host(p.value) for p in params]
    params[1].grad = backend.asarray(np.ones(7, np.float32))
    sgd.step(params)  # the others have no gradient yet: they stay
    after = [host(p.value) for p in params]
    np.testing.assert_array_equal(after[1], before[1] - 1.0)
    for index in (0, 2, 3):
        np.testing.assert_array_equal(after[index], before[index])


def test_a_shared_layer_moves_to_the_newest_model_and_back(backend):
    needs_theta(backend)
    shared = nn.Dense(4, 2)
    first = nn.Sequential(shared)
    second = nn.Sequential(nn.Dense(3, 4), shared)
    assert shared.weight.vector is second.parameters().vector
    first_params = first.parameters()  # laid out again: the layer is first's once more
    assert shared.weight.vector is first_params.vector
    shared.bias.value = backend.asarray(np.array([5.0, 6.0], np.float32))
    np.testing.assert_array_equal(host(first_params.vector.value)[-2:], [5.0, 6.0])


def test_adding_a_layer_lays_theta_out_again_and_keeps_the_state(backend):
    needs_theta(backend)
    net, adam = model(), nn.Adam()
    train(net, adam, epochs=1)
    moments = {id(p): host(adam.state[p]["m_scaled"]) for p in net.parameters()}
    gradients = {id(p): host(p.grad) for p in net.parameters()}
    net.add(nn.ReLU())
    net.add(nn.Dense(3, 2))
    params = net.parameters()
    assert len(params) == 6 and params.vector.value.shape[0] == 42 + 24 + 8
    adam.step(params)  # the new layer has no gradient yet: the others step one by one
    for param in params[:4]:  # their moments carried over: m̃ ← β₁ m̃ + g
        expected = 0.9 * moments[id(param)] + gradients[id(param)]
        np.testing.assert_allclose(host(adam.state[param]["m_scaled"]), expected, rtol=1e-6)
    assert params[4] not in adam.state


def test_early_stopping_restores_the_best_weights_into_theta(backend):
    needs_theta(backend)
    net = model()
    stop = nn.EarlyStopping(patience=0, monitor="loss")
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(32, 5)).astype(np.float32), rng.integers(0, 3, 32)
    net.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.SGD(lr=50.0), epochs=6,
            batch_size=32, callbacks=[stop])
    params = net.parameters()
    flat = np.concatenate([host(p.value).reshape(-1) for p in params])
    np.testing.assert_array_equal(host(params.vector.value), flat)


def test_a_checkpoint_written_before_theta_loads_and_trains_on(backend, tmp_path):
    """A file written by nnscratch at ebc6e9b (parameters as separate arrays) loads, its
    Adam state restores, and two more epochs reach the weights that version reached."""
    path = DATA / "checkpoint-before-flat-theta.safetensors"
    expected = json.loads((DATA / "weights-before-flat-theta.json").read_text())
    net = nn.load(path)
    adam = nio.read_optimizer(path, net)
    assert adam.t == 12 and nio.read_metadata(path)["written_by"].startswith("nnscratch ebc6e9b")
    X = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    net.fit(X, np.arange(32) % 3, loss=nn.SoftmaxCrossEntropy(), optimizer=adam, epochs=2,
            batch_size=8, seed=1)
    for index, param in enumerate(net.parameters()):
        want = expected[f"resumed_{index}"]
        np.testing.assert_allclose(host(param.value).reshape(-1), want["values"],
                                   rtol=1e-5, atol=1e-6)
    # and it saves again, and loads, in the same format
    nn.save(net, tmp_path / "again.safetensors", optimizer=adam)
    again = nn.load(tmp_path / "again.safetensors")
    for a, b in zip(again.parameters(), net.parameters()):
        np.testing.assert_array_equal(host(a.value), host(b.value))


@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop"])
def test_the_same_seed_trains_to_the_weights_it_did_before_theta(backend, name):
    """Weights trained by nnscratch at ebc6e9b (before θ, the bias as a row of W̃, the
    leaner loss and ReLU) from the same seed: equal to float32 rounding."""
    expected = json.loads((DATA / "weights-before-flat-theta.json").read_text())
    make = {"adam": lambda: nn.Adam(lr=0.003),
            "sgd": lambda: nn.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
            "rmsprop": lambda: nn.RMSprop(lr=0.003, momentum=0.5)}[name]
    nn.seed(0)
    net = nn.Sequential(nn.Dense(20, 32, init="he_normal"), nn.ReLU(), nn.Dropout(0.2),
                        nn.Dense(32, 16), nn.Tanh(), nn.Dense(16, 5))
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(200, 20)).astype(np.float32), rng.integers(0, 5, 200)
    net.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=make(), epochs=4, batch_size=32,
            seed=2)
    for index, param in enumerate(net.parameters()):
        want = expected[f"{name}_{index}"]
        np.testing.assert_allclose(host(param.value).reshape(-1), want["values"],
                                   rtol=1e-4, atol=2e-5)
