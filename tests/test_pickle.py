"""Models and optimizers pickle and deep-copy on every backend: the copy predicts as the
original, its parameters are again windows of one θ (where the backend has one:
not jax, whose arrays are immutable), the optimizer state follows the
copied parameters, and training one leaves the other untouched."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnscratch as nn
from nnscratch.backend import mutable, placement
from nnscratch.parameters import ParameterVector

ROOT = Path(__file__).resolve().parents[1]

COPIES = {
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
    "deepcopy": copy.deepcopy,
}


def _data(samples: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(samples, 5)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.5)
    return X, y


def _trained(optimizer: nn.Optimizer | None = None) -> tuple[nn.Sequential, nn.Optimizer]:
    nn.seed(3)
    model = nn.Sequential(nn.Dense(5, 8), nn.ReLU(), nn.Dropout(0.2), nn.Dense(8, 3))
    optimizer = optimizer or nn.Adam(lr=0.01)
    X, y = _data()
    model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=2,
              batch_size=16, seed=0)
    return model, optimizer


def _theta(model: nn.Sequential) -> np.ndarray:
    """All the model's parameter values as one host vector: θ itself where the backend
    lays the parameters out in one (jax, immutable arrays, has none: each parameter
    holds its own array)."""
    vector = model.parameters().vector
    if vector is not None:
        return nn.to_numpy(vector.value).copy()
    return np.concatenate([nn.to_numpy(param.value).ravel() for param in model.parameters()])


def _has_theta(model: nn.Sequential) -> bool:
    """Whether the model's parameters are windows of one θ: on every backend whose arrays
    are mutable, and checked so (a lost θ there fails instead of skipping)."""
    has = model.parameters().vector is not None
    assert has == mutable(_first_value(model)), "θ expected exactly where arrays are mutable"
    return has


def _first_value(model: nn.Sequential) -> Any:
    return next(iter(model.parameters())).value


def _fit_more(model: nn.Sequential, optimizer: nn.Optimizer) -> None:
    X, y = _data()
    model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=2,
              batch_size=16, seed=1)


@pytest.mark.parametrize("how", sorted(COPIES))
def test_a_copied_model_predicts_as_the_original_from_windows_of_one_theta(how, xp):
    model, _ = _trained()
    X, _ = _data()
    clone = COPIES[how](model)
    np.testing.assert_array_equal(nn.to_numpy(clone.predict(X)), nn.to_numpy(model.predict(X)))
    for param, original in zip(clone.parameters(), model.parameters()):
        assert param is not original
        assert placement(param.value) == placement(original.value)
    if not _has_theta(model):
        pytest.skip("no θ on this backend (immutable arrays: each parameter holds its own "
                    "array), so no windows of one θ to check; the predictions matched")
    vector = clone.parameters().vector
    assert vector is not None and vector is not model.parameters().vector
    assert vector.holds_all() and placement(vector.value) == placement(
        model.parameters().vector.value)
    # the parameters are windows of the copy's θ: a write into θ shows in each of them
    # (and the gradients, windows of ∇θ, came along)
    for param, original in zip(clone.parameters(), model.parameters()):
        np.testing.assert_array_equal(nn.to_numpy(param.grad), nn.to_numpy(original.grad))
    vector.value[...] = 0.0
    vector.grad[...] = 1.0
    for param in clone.parameters():
        assert float(xp.sum(xp.abs(param.value))) == 0.0
        assert float(xp.sum(param.grad)) == np.prod(param.shape)
    assert float(xp.sum(xp.abs(model.parameters().vector.value))) > 0.0  # not shared


@pytest.mark.parametrize("how", sorted(COPIES))
def test_a_copy_is_independent_of_its_original(how):
    model, optimizer = _trained()
    clone, clone_optimizer = COPIES[how]((model, optimizer))
    before = _theta(model)
    _fit_more(clone, clone_optimizer)
    np.testing.assert_array_equal(_theta(model), before)  # training the copy: original same
    assert not np.array_equal(_theta(clone), before)
    trained_clone = _theta(clone)
    _fit_more(model, optimizer)
    np.testing.assert_array_equal(_theta(clone), trained_clone)  # and the other way round


@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("make", [lambda: nn.Adam(lr=0.01),
                                  lambda: nn.SGD(lr=0.05, momentum=0.9),
                                  lambda: nn.RMSprop(lr=0.01, momentum=0.5)],
                         ids=["adam", "sgd-momentum", "rmsprop"])
def test_model_and_optimizer_copied_together_continue_the_same_run(how, make):
    model, optimizer = _trained(make())
    clone, clone_optimizer = COPIES[how]((model, optimizer))
    assert clone_optimizer.t == optimizer.t > 0
    if _has_theta(model):
        # the copied state is keyed by the copied parameters, and a parameter's state is a
        # window of θ's state, as in the original
        vector = clone.parameters().vector
        assert set(map(id, clone_optimizer.state)) == {id(vector),
                                                       *map(id, clone.parameters())}
        slot = next(iter(clone_optimizer.state[vector]))
        clone_optimizer.state[vector][slot][...] = 7.0
        for param in clone.parameters():
            assert np.all(nn.to_numpy(clone_optimizer.state[param][slot]) == 7.0)
    else:  # no θ (jax): the copied state is keyed by the copied parameters alone
        assert set(map(id, clone_optimizer.state)) == set(map(id, clone.parameters()))
    clone, clone_optimizer = COPIES[how]((model, optimizer))
    # the same further training, from the same θ and state: the same weights, to the bit
    nn.seed(5)
    _fit_more(model, optimizer)
    nn.seed(5)
    _fit_more(clone, clone_optimizer)
    np.testing.assert_array_equal(_theta(clone), _theta(model))
    # which a fresh optimizer (no moments) would not give: the state mattered
    fresh_model, _ = _trained(make())
    fresh = COPIES[how](fresh_model)
    nn.seed(5)
    _fit_more(fresh, make())
    assert not np.allclose(_theta(fresh), _theta(model))


def test_pickled_apart_the_optimizer_keeps_its_own_parameters():
    """Pickled separately, the optimizer's state cannot point at the other pickle's
    parameters: it holds its own copies (documented on ``Optimizer.__getstate__``), and
    given the loaded model's parameters it begins fresh state for them."""
    model, optimizer = _trained()
    clone = pickle.loads(pickle.dumps(model))
    clone_optimizer = pickle.loads(pickle.dumps(optimizer))
    assert clone_optimizer.t == optimizer.t and len(clone_optimizer.state) == len(optimizer.state)
    own = {id(param) for param in clone.parameters()} | {id(clone.parameters().vector)}
    assert not own & set(map(id, clone_optimizer.state))
    if _has_theta(model):
        vector = next(key for key in clone_optimizer.state
                      if isinstance(key, ParameterVector))
        np.testing.assert_array_equal(nn.to_numpy(vector.value), _theta(model))
    else:  # no θ (jax): the state's own parameters hold the model's values
        held = np.concatenate([nn.to_numpy(param.value).ravel()
                               for param in clone_optimizer.state])
        np.testing.assert_array_equal(held, _theta(model))


def test_a_layer_and_a_parameter_on_their_own_pickle():
    layer = nn.Dense(3, 2)
    X = np.ones((4, 3), dtype=np.float32)
    clone = pickle.loads(pickle.dumps(layer))
    assert clone.weight.vector is None
    np.testing.assert_array_equal(nn.to_numpy(clone(nn.get_backend().asarray(X))),
                                  nn.to_numpy(layer(nn.get_backend().asarray(X))))
    dropout = copy.deepcopy(nn.Dropout(0.5))
    with pytest.raises(nn.StateError, match="before Dropout.forward"):
        dropout.backward(nn.get_backend().asarray(X))


def test_a_pickled_model_predicts_the_same_in_a_fresh_process(tmp_path):
    model, _ = _trained()
    X, _ = _data()
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    np.save(tmp_path / "X.npy", X)
    program = (
        "import pickle, sys, numpy as np, nnscratch as nn\n"
        "folder = sys.argv[1]\n"
        "model = pickle.load(open(folder + '/model.pkl', 'rb'))\n"
        "np.save(folder + '/out.npy', nn.to_numpy(model.predict(np.load(folder + '/X.npy'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    backend = nn.get_backend()
    env["NNSCRATCH_BACKEND"] = backend.name
    env["NNSCRATCH_DEVICE"] = placement(_first_value(model))[1]
    subprocess.run([sys.executable, "-c", program, str(tmp_path)], check=True, env=env,
                   cwd=tmp_path, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), nn.to_numpy(model.predict(X)))
