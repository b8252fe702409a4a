"""BatchNorm against PyTorch (torch.nn.functional.batch_norm) in float64 on the session's
backend: training and inference, every gradient, the running statistics; gradcheck;
its state through save/load, a checkpoint and --resume; the MPI start from rank 0."""

from __future__ import annotations

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import distributed


def f64(backend, array):
    return backend.asarray(np.asarray(array, dtype=np.float64), dtype="float64")


def host(backend, array):
    return np.asarray(backend.to_numpy(array))


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 2)], ids=["dense", "conv"])
def test_batchnorm_training_and_inference_equal_pytorch(backend, torch, shape):
    rng = np.random.default_rng(0)
    features = shape[1]
    layer = nn.BatchNorm(features, momentum=0.3, eps=1e-3, dtype="float64")
    gamma, beta = rng.standard_normal(features), rng.standard_normal(features)
    layer.weight.value = f64(backend, gamma)
    layer.bias.value = f64(backend, beta)
    running_mean, running_var = torch.zeros(features, dtype=torch.float64), \
        torch.ones(features, dtype=torch.float64)
    for step in range(3):  # three training batches: the running statistics follow torch's
        x = rng.standard_normal(shape) * 2.0 + step
        g = rng.standard_normal(shape)
        y = layer.forward(f64(backend, x), training=True)
        grad_x = layer.backward(f64(backend, g))
        tx = torch.tensor(x, requires_grad=True)
        tg, tb = (torch.tensor(a, requires_grad=True) for a in (gamma, beta))
        ty = torch.nn.functional.batch_norm(tx, running_mean, running_var, tg, tb,
                                            training=True, momentum=0.3, eps=1e-3)
        ty.backward(torch.tensor(g))
        for ours, theirs in [(y, ty), (grad_x, tx.grad), (layer.weight.grad, tg.grad),
                             (layer.bias.grad, tb.grad), (layer.running_mean, running_mean),
                             (layer.running_var, running_var)]:
            np.testing.assert_allclose(host(backend, ours), theirs.detach().numpy(),
                                       rtol=1e-10, atol=1e-12)
    # inference: the running statistics, constants of the gradient
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    y = layer.forward(f64(backend, x), training=False)
    grad_x = layer.backward(f64(backend, g))
    tx = torch.tensor(x, requires_grad=True)
    tg, tb = (torch.tensor(a, requires_grad=True) for a in (gamma, beta))
    ty = torch.nn.functional.batch_norm(tx, running_mean, running_var, tg, tb,
                                        training=False, eps=1e-3)
    ty.backward(torch.tensor(g))
    for ours, theirs in [(y, ty), (grad_x, tx.grad), (layer.weight.grad, tg.grad),
                         (layer.bias.grad, tb.grad)]:
        np.testing.assert_allclose(host(backend, ours), theirs.detach().numpy(),
                                   rtol=1e-10, atol=1e-12)
    assert not np.allclose(host(backend, layer.running_var), 1.0)  # they did move


@pytest.mark.parametrize("training", [True, False])
def test_a_cnn_with_batchnorm_passes_gradcheck(backend, training):
    rng = np.random.default_rng(1)
    model = nn.Sequential(
        nn.Conv2D(1, 3, 3, padding=1, dtype="float64"), nn.BatchNorm(3, dtype="float64"),
        nn.Tanh(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(12, 4, dtype="float64"),
        nn.BatchNorm(4, dtype="float64"), nn.Tanh(), nn.Dense(4, 3, dtype="float64"))
    X = f64(backend, rng.standard_normal((5, 1, 4, 4)))
    y = backend.asarray(np.array([0, 2, 1, 2, 0]))
    if not training:  # running statistics away from their start
        model.forward(X, training=True)
    result = nn.gradcheck(model, X, y, nn.SoftmaxCrossEntropy(), check_input=True,
                          training=training)
    # in training a bias just before a BatchNorm has no effect (the mean removes it):
    # its gradient is 0 both ways, and a relative error of two zeros means nothing
    before_batchnorm = {"0.bias", "5.bias"} if training else set()
    assert all(error < 1e-6 for name, error in result.errors.items()
               if name not in before_batchnorm), result.errors
    assert result.max_abs_error < 1e-8
    assert {"1.weight", "1.bias", "6.weight", "input"} <= set(result.errors)


def bn_cnn():
    return nn.Sequential(nn.Conv2D(1, 4, 3, padding=1), nn.BatchNorm(4), nn.ReLU(),
                         nn.MaxPool2D(2), nn.Flatten(), nn.Dense(64, 8), nn.BatchNorm(8),
                         nn.ReLU(), nn.Dropout(0.2), nn.Dense(8, 4))


def images(samples=48, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((samples, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, samples)
    X[np.arange(samples), 0, 2 * y, 2 * y] += 2.0
    return X, y


def states(backend, model):
    return [host(backend, array) for layer in model.layers for array in layer.state().values()]


def test_running_statistics_survive_save_and_load(backend, tmp_path):
    X, y = images()
    model = bn_cnn()
    model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.01), epochs=2,
              batch_size=16, seed=0)
    nn.save(model, tmp_path / "bn.safetensors")
    loaded = nn.load(tmp_path / "bn.safetensors")
    for saved, restored in zip(states(backend, model), states(backend, loaded)):
        np.testing.assert_array_equal(saved, restored)
    assert len(states(backend, loaded)) == 4
    assert not np.allclose(states(backend, loaded)[0], 0.0)  # trained, not fresh
    np.testing.assert_array_equal(host(backend, loaded.predict(X)),
                                  host(backend, model.predict(X)))
    assert "BatchNorm(num_features=4" in model.summary()


def test_a_file_with_a_wrong_state_is_refused(backend, tmp_path):
    from safetensors.numpy import load_file, save_file

    model = bn_cnn()
    nn.save(model, tmp_path / "bn.safetensors")
    tensors = load_file(tmp_path / "bn.safetensors")
    from nnscratch.io import _read

    metadata = _read(tmp_path / "bn.safetensors", with_tensors=False).metadata
    tensors["state.1.running_var"] = np.ones(5, dtype=np.float32)
    save_file(tensors, tmp_path / "edited.safetensors", metadata=metadata)
    with pytest.raises(nn.CheckpointError, match=r"state.1.running_var.*shape \(5,\)"):
        nn.load(tmp_path / "edited.safetensors")
    del tensors["state.1.running_var"]
    save_file(tensors, tmp_path / "edited.safetensors", metadata=metadata)
    with pytest.raises(nn.CheckpointError, match="lacks the tensor"):
        nn.load(tmp_path / "edited.safetensors")


def test_resume_with_batchnorm_ends_bit_for_bit_as_one_run(backend, tmp_path):
    X, y = images(64)
    settings = dict(loss=nn.SoftmaxCrossEntropy(), batch_size=16, seed=0)
    nn.seed(0)
    whole = bn_cnn()
    whole.fit(X, y, optimizer=nn.Adam(lr=0.01), epochs=3, **settings)

    nn.seed(0)
    first = bn_cnn()
    checkpoint = nn.Checkpoint(tmp_path / "run.safetensors")
    first.fit(X, y, optimizer=nn.Adam(lr=0.01), epochs=3, callbacks=[checkpoint,
              _StopAfter(1)], **settings)
    run = nn.resume(tmp_path / "run.safetensors")
    assert run.epoch == 1
    run.model.fit(X, y, optimizer=run.optimizer, epochs=3, initial_epoch=run.epoch,
                  callbacks=[checkpoint.resumed_from(run)], **settings)
    for ours, theirs in zip(run.model.parameters(), whole.parameters()):
        np.testing.assert_array_equal(host(backend, ours.value), host(backend, theirs.value))
    for ours, theirs in zip(states(backend, run.model), states(backend, whole)):
        np.testing.assert_array_equal(ours, theirs)


class _StopAfter(nn.Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_train_begin(self, model, info):
        self.model = model

    def on_epoch_end(self, epoch, logs):
        if epoch + 1 == self.epochs:
            self.model.stop_training = True


class _FromRankZero(distributed.Communicator):
    """A stand-in for rank 1 of 2: its broadcast hands it rank 0's arrays."""

    def __init__(self, rank_zero):
        self.rank_zero = iter(rank_zero)

    def broadcast_(self, array, root=0):
        array[...] = next(self.rank_zero)
        return array


def test_a_data_parallel_fit_starts_from_rank_zeros_running_statistics(backend):
    if backend.name == "jax":
        pytest.skip("the stand-in communicator writes in place; JAX arrays are immutable")
    model, reference = bn_cnn(), bn_cnn()
    reference.fit(*images(), loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(), epochs=1,
                  batch_size=16, seed=0)
    rank_zero = [layer_state for layer in reference.layers
                 for layer_state in layer.state().values()]
    distributed.broadcast_states(_FromRankZero(rank_zero), model.layers)
    for ours, theirs in zip(states(backend, model), states(backend, reference)):
        np.testing.assert_array_equal(ours, theirs)


def test_batchnorm_says_what_is_wrong(backend):
    layer = nn.BatchNorm(3)
    with pytest.raises(nn.ShapeError, match=r"expects \(N, 3\) or \(N, 3, H, W\)"):
        layer.forward(backend.asarray(np.zeros((2, 4)), dtype="float32"), training=True)
    with pytest.raises(nn.ShapeError, match="more than one value per feature"):
        layer.forward(backend.asarray(np.zeros((1, 3)), dtype="float32"), training=True)
    with pytest.raises(nn.ConfigError, match="momentum must be in"):
        nn.BatchNorm(3, momentum=1.5)
    with pytest.raises(nn.StateError, match="BatchNorm.backward was called before"):
        layer.backward(backend.asarray(np.zeros((2, 3)), dtype="float32"))
    with pytest.raises(nn.ShapeError, match="state 'running_mean' has shape"):
        layer.load_state({"running_mean": backend.asarray(np.zeros(4)),
                          "running_var": backend.asarray(np.zeros(3))})


def test_under_mpi_every_rank_starts_from_rank_zeros_statistics(tmp_path):
    """Two real MPI ranks: rank 1's spoilt running statistics are replaced by rank 0's
    as fit starts; θ ends the same on both, the statistics each rank's own."""
    import test_distributed as mpi

    if mpi._mpi_missing():
        pytest.skip(mpi._mpi_missing())
    result = mpi.launch(2, tmp_path, program=mpi.ROOT / "tests" / "mpi_programs" /
                        "batchnorm.py")
    assert result.returncode == 0, result.stdout + result.stderr
    ranks = [np.load(tmp_path / f"rank{rank}.npz") for rank in (0, 1)]
    np.testing.assert_array_equal(ranks[0]["start_mean"], [0.25, 0.25])
    np.testing.assert_array_equal(ranks[1]["start_mean"], ranks[0]["start_mean"])
    np.testing.assert_array_equal(ranks[1]["start_var"], [1.0, 1.0])
    np.testing.assert_allclose(ranks[1]["theta"], ranks[0]["theta"], rtol=1e-12)
    assert not np.allclose(ranks[1]["end_mean"], ranks[0]["end_mean"])  # per-rank batches
