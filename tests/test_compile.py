"""fit(compile=...): the training step traced once and compiled by the backend's compiler
(jax.jit), against the same step run eagerly: the same losses, accuracies and weights to
float rounding, with dropout masks, schedules, callbacks, penalties and resumed runs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import compile as compile_module
from nnscratch.errors import ConfigError

pytest.importorskip("safetensors", reason="the resume test writes a checkpoint")


@pytest.fixture
def jax_backend(backend):
    if backend.name != "jax":
        pytest.skip("the compiled step needs a backend with a compiler: this session's is "
                    f"{backend.name} (the jax session runs these)")
    return backend


def data(samples=100, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(samples, features)).astype(np.float32)
    return X, rng.integers(0, classes, samples)


def network(dropout=0.0, l2=0.0):
    nn.seed(3)
    layers = [nn.Dense(6, 16, l2=l2), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Dense(16, 3))


def train(compile, *, dropout=0.0, l2=0.0, optimizer=None, epochs=3, batch_size=32,
          schedule=None, callbacks=()):
    X, y = data()
    model = network(dropout, l2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # compile=False on jax says it is slow
        history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(),
                            optimizer=optimizer or nn.Adam(lr=0.01), epochs=epochs,
                            batch_size=batch_size, seed=1, schedule=schedule,
                            callbacks=list(callbacks), compile=compile)
    return history.history, [np.array(nn.to_numpy(p.value)) for p in model.parameters()], \
        model


def assert_same_run(eager, compiled, rtol=2e-5):
    (eager_logs, eager_weights, _), (compiled_logs, compiled_weights, _) = eager, compiled
    assert eager_logs.keys() == compiled_logs.keys()
    for key in eager_logs:
        np.testing.assert_allclose(compiled_logs[key], eager_logs[key], rtol=rtol, atol=1e-6)
    for a, b in zip(eager_weights, compiled_weights):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=2e-6)


OPTIMIZERS = {
    "adam": lambda: nn.Adam(lr=0.01),
    "adamw": lambda: nn.AdamW(lr=0.01, weight_decay=0.1),
    "sgd nesterov": lambda: nn.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "rmsprop": lambda: nn.RMSprop(lr=0.01, momentum=0.5),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_compiled_steps_train_as_eager_ones(jax_backend, name):
    """Mini-batches (the last one short: 100 = 3·32 + 4), every optimizer."""
    eager = train(False, optimizer=OPTIMIZERS[name]())
    compiled = train(True, optimizer=OPTIMIZERS[name]())
    assert_same_run(eager, compiled)
    assert compiled[0]["loss"][-1] < compiled[0]["loss"][0]  # it learned


def test_dropout_masks_schedule_and_penalty_are_those_of_the_eager_run(jax_backend):
    """Masks drawn on the host before each compiled call (the same stream, the same
    order), the learning rate an argument (not a constant of the trace), L2 in the loss."""
    settings = dict(dropout=0.5, l2=1e-3, schedule=nn.StepDecay(1, 0.5))
    eager, compiled = train(False, **settings), train(True, **settings)
    assert_same_run(eager, compiled)
    without_masks = train(True, l2=1e-3, schedule=nn.StepDecay(1, 0.5))
    assert abs(without_masks[0]["loss"][-1] - compiled[0]["loss"][-1]) > 1e-3


def test_full_batch_epochs_run_as_one_compiled_loop(jax_backend, monkeypatch):
    """XOR, batch_size=None: every epoch in one lax.scan, the history filled after it,
    the learning rate of each epoch from the schedule."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([[0], [1], [1], [0]], np.float32)

    def run(compile):
        nn.seed(0)
        model = nn.Sequential(nn.Dense(2, 4), nn.Sigmoid(), nn.Dense(4, 1), nn.Sigmoid())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            history = model.fit(X, y, loss=nn.BinaryCrossEntropy(), optimizer=nn.SGD(lr=0.5),
                                epochs=400, batch_size=None, compile=compile,
                                schedule=nn.StepDecay(100, 0.9))
        return history.history, [np.array(nn.to_numpy(p.value)) for p in model.parameters()]

    calls = []
    original = compile_module.JaxStep.full_batch_epochs
    monkeypatch.setattr(compile_module.JaxStep, "full_batch_epochs",
                        lambda self, *args: calls.append(len(args[2])) or original(self, *args))
    compiled = run(True)
    assert calls == [400]  # one loop for all the epochs
    eager = run(False)
    assert len(compiled[0]["loss"]) == 400
    assert_same_run((eager[0], eager[1], None), (compiled[0], compiled[1], None), rtol=1e-4)


def test_callbacks_stop_a_compiled_run_and_restore_the_best_weights(jax_backend):
    stop = nn.EarlyStopping(patience=0, monitor="loss")
    logs, weights, model = train(True, optimizer=nn.SGD(lr=20.0), epochs=8, callbacks=[stop])
    assert len(logs["loss"]) < 8  # stopped early
    best = int(np.argmin(logs["loss"]))
    assert stop.best_epoch == best
    # the model keeps working eagerly afterwards: no tracer left in a layer
    out = model.forward(nn.get_backend().asarray(data()[0][:5]), training=True)
    model.backward(out * 0.0 + 1.0)
    assert out.shape == (5, 3)


def test_a_compiled_run_resumed_from_its_checkpoint_ends_where_one_run_ends(jax_backend,
                                                                              tmp_path):
    X, y = data()
    path = tmp_path / "run.safetensors"

    def fit(model, optimizer, epochs, initial_epoch=0, callbacks=()):
        model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=epochs,
                  batch_size=32, seed=1, initial_epoch=initial_epoch,
                  callbacks=list(callbacks), compile=True)

    whole = network(dropout=0.3)
    fit(whole, nn.Adam(lr=0.01), 4)
    first = network(dropout=0.3)
    fit(first, nn.Adam(lr=0.01), 2, callbacks=[nn.Checkpoint(path)])
    nn.seed(99)  # the checkpoint puts the random streams back
    run = nn.resume(path)
    fit(run.model, run.optimizer, 4, initial_epoch=run.epoch)
    for a, b in zip(whole.parameters(), run.model.parameters()):
        np.testing.assert_allclose(nn.to_numpy(b.value), nn.to_numpy(a.value), rtol=1e-5,
                                   atol=1e-6)


def test_regression_compiled(jax_backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    y = (X @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)
    results = []
    for compile in (False, True):
        nn.seed(0)
        model = nn.Sequential(nn.Dense(3, 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            history = model.fit(X, y, loss=nn.MeanSquaredError(), optimizer=nn.SGD(lr=0.05),
                                epochs=5, batch_size=16, seed=0, compile=compile)
        results.append(history.history["loss"])
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5)
    assert results[1][-1] < 0.5 * results[1][0]


def test_the_step_s_host_scalars_are_arguments_not_constants(jax_backend):
    """Adam's α_t changes every step: one trace serves every step of a batch shape."""
    X, y = data(samples=96)
    model = network()
    traces = []
    original = compile_module.JaxStep._pure

    def counting(self, *args):
        traces.append(1)
        return original(self, *args)

    compile_module.JaxStep._pure = counting
    try:
        model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(), epochs=3,
                  batch_size=32, compile=True)
    finally:
        compile_module.JaxStep._pure = original
    assert len(traces) == 1  # 9 steps of one shape, one trace


def record_compiles(monkeypatch):
    """The XLA options of every compile, and XLA's operation counts read for them."""
    options, counts = [], []
    compile_ = compile_module.JaxStep._compile
    flops = compile_module._flops

    def recording(self, lowered, steps, data):
        executable = compile_(self, lowered, steps, data)
        options.append(self.options)
        return executable

    monkeypatch.setattr(compile_module.JaxStep, "_compile", recording)
    monkeypatch.setattr(compile_module, "_flops",
                        lambda lowered: counts.append(flops(lowered)) or counts[-1])
    return options, counts


def expected_quick(backend):
    """The quick options on a CPU, XLA's defaults elsewhere (they are CPU options)."""
    platform = compile_module._platform(backend.xp.zeros(1))
    return compile_module.QUICK_COMPILE if platform == "cpu" else None


@pytest.mark.parametrize("quick", [True, False], ids=["quick compile", "full compile"])
def test_both_compiles_train_as_the_eager_steps(jax_backend, monkeypatch, quick):
    """XLA's quick options (a short run) and its full optimization (a long one) compile
    the same step: either run matches the eager one, dropout masks and all."""
    monkeypatch.setattr(compile_module, "QUICK_WORK", float("inf") if quick else 0.0)
    options, _ = record_compiles(monkeypatch)
    compiled = train(True, dropout=0.5)
    assert options == [expected_quick(jax_backend) if quick else None] * 2  # 32 and 4 rows
    assert_same_run(train(False, dropout=0.5), compiled)


def xor_fit(epochs):
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([[0], [1], [1], [0]], np.float32)
    nn.seed(0)
    model = nn.Sequential(nn.Dense(2, 4), nn.Sigmoid(), nn.Dense(4, 1), nn.Sigmoid())
    return model.fit(X, y, loss=nn.BinaryCrossEntropy(), optimizer=nn.SGD(lr=0.5),
                     epochs=epochs, batch_size=None, compile=True)


def test_the_quick_compile_is_for_runs_with_less_arithmetic_than_quick_work(jax_backend,
                                                                            monkeypatch):
    """XLA's count of one XOR step (2-4-1 on four samples: a few hundred operations)
    times the 50 epochs of the loop, against QUICK_WORK, at the bound exactly."""
    options, counts = record_compiles(monkeypatch)
    xor_fit(50)
    if expected_quick(jax_backend) is None:
        assert options == [None] and counts == []  # not a CPU: not even counted
        return
    assert options == [compile_module.QUICK_COMPILE]
    (flops,) = counts
    assert 100 < flops < 5_000  # the loop's body once (4x2 @ 2x4, 4x4 @ 4x1, the grads…)
    monkeypatch.setattr(compile_module, "QUICK_WORK", flops * 50)  # not below: full
    xor_fit(50)
    monkeypatch.setattr(compile_module, "QUICK_WORK", flops * 50 + 1)
    xor_fit(50)
    assert options[1:] == [None, compile_module.QUICK_COMPILE]


def test_an_xla_without_the_quick_options_compiles_with_its_defaults(jax_backend,
                                                                    monkeypatch):
    """Older XLAs lack some options ("No such compile option"): the run goes on."""
    options, _ = record_compiles(monkeypatch)
    expected = xor_fit(50).history["loss"]
    monkeypatch.setattr(compile_module, "QUICK_COMPILE", {"xla_cpu_no_such_option": True})
    history = xor_fit(50)
    assert options[1] is None
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-5)


def test_a_long_run_and_a_gpu_get_xla_s_full_optimization(jax_backend, monkeypatch):
    """A step of 64-256-10 on 128 rows is ~2·10⁷ operations: over a planned 10⁴ steps,
    far above QUICK_WORK. And the quick options are CPU options: on another platform
    they are never asked for."""
    options, counts = record_compiles(monkeypatch)
    X, y = data(samples=128, features=64, classes=10)
    xp = jax_backend.xp

    def one_step(steps):
        nn.seed(0)
        model = nn.Sequential(nn.Dense(64, 256), nn.ReLU(), nn.Dense(256, 10))
        loss, optimizer = nn.SoftmaxCrossEntropy(), nn.Adam()
        model.loss = loss
        step = compile_module.JaxStep(model, loss, optimizer, model.parameters(),
                                      penalized=False, steps={128: steps})
        value, _ = step(xp.asarray(X), xp.asarray(y), 0, 128)
        return float(value)

    first = one_step(10_000)
    assert options == [None]
    if counts:  # a CPU: counted, and found long
        assert counts[0] * 10_000 > compile_module.QUICK_WORK
    assert one_step(1) == pytest.approx(first, rel=1e-6)  # one step: quick on a CPU
    assert options[1] == expected_quick(jax_backend)
    monkeypatch.setattr(compile_module, "_platform", lambda array: "gpu")
    one_step(1)
    assert options[2] is None


def test_the_tracer_device_is_given_back(jax_backend):
    import jax

    train(True, epochs=1)
    with pytest.raises(AttributeError):
        jax.jit(lambda x: x.device)(jax.numpy.ones(2))


def test_compile_true_without_a_compiler_says_which_backend_has_one(backend):
    if backend.name in compile_module.COMPILERS:
        pytest.skip(f"{backend.name} has a compiler")
    with pytest.raises(ConfigError, match=r"compile=True needs a backend with a compiler.*jax"):
        train(True, epochs=1)


def test_auto_runs_eagerly_without_a_compiler_and_a_bad_value_is_refused(backend,
                                                                         monkeypatch):
    if backend.name not in compile_module.COMPILERS:
        monkeypatch.setattr(compile_module, "JaxStep", None)  # never built: eager
        logs, _, _ = train("auto", epochs=1)
        assert len(logs["loss"]) == 1
    with pytest.raises(ConfigError, match="compile must be 'auto', True or False"):
        train("yes", epochs=1)
    with pytest.raises(ConfigError, match="compile must be"):
        train(1, epochs=1)


class RunningMean(nn.Layer):
    """The identity, keeping a running mean of its inputs per feature: state a step
    changes besides the parameters (as a BatchNorm's statistics)."""

    keeps_size = True
    state_attributes = ("running_mean",)

    def __init__(self, width: int) -> None:
        backend = nn.get_backend()
        self.running_mean = backend.xp.zeros((width,), dtype=backend.xp.float32,
                                             device=backend.device)

    def forward(self, x, training=False):
        if training:
            self.running_mean *= 0.9  # rebinds on immutable arrays, stored on the layer
            self.running_mean += 0.1 * nn.get_backend().xp.mean(x, axis=0)
        return x

    def backward(self, grad_output, need_input_grad=True):
        return grad_output


def test_layer_state_is_threaded_through_the_compiled_step(jax_backend):
    X, y = data()
    results = []
    for compile in (False, True):
        nn.seed(3)
        model = nn.Sequential(nn.Dense(6, 16), RunningMean(16), nn.ReLU(), nn.Dense(16, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.01),
                      epochs=2, batch_size=32, seed=1, compile=compile)
        results.append(np.array(nn.to_numpy(model.layers[1].running_mean)))
    assert np.abs(results[0]).max() > 0.01
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-6)


class Watching(nn.Layer):
    """The identity, writing down each batch's sum on the host (``float``): untraceable."""

    keeps_size = True

    def __init__(self) -> None:
        self.sums: list[float] = []

    def forward(self, x, training=False):
        self.sums.append(float(nn.get_backend().xp.sum(x)))
        return x

    def backward(self, grad_output, need_input_grad=True):
        return grad_output


def test_a_layer_reading_the_host_runs_eagerly_under_auto_and_is_refused_by_true(jax_backend):
    X, y = data()

    def fit(compile):
        nn.seed(3)
        model = nn.Sequential(nn.Dense(6, 4), Watching(), nn.Dense(4, 3))
        history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.01),
                            epochs=2, batch_size=50, seed=1, compile=compile)
        return history.history["loss"], model.layers[1].sums

    with pytest.raises(ConfigError, match="cannot be traced.*compile=False"):
        fit(True)
    with pytest.warns(UserWarning, match="running the steps eagerly"):
        auto_losses, auto_sums = fit("auto")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager_losses, eager_sums = fit(False)
    assert len(auto_sums) == len(eager_sums) == 4  # every step ran, none twice
    np.testing.assert_allclose(auto_losses, eager_losses, rtol=1e-6)


# -- evaluate, compiled ----------------------------------------------------------------

EVALUATED = {
    "multiclass": (lambda: nn.Sequential(nn.Dense(6, 16), nn.BatchNorm(16), nn.ReLU(),
                                         nn.Dropout(0.5), nn.Dense(16, 3)),
                   nn.SoftmaxCrossEntropy),
    "binary": (lambda: nn.Sequential(nn.Dense(6, 8), nn.Tanh(), nn.Dense(8, 2), nn.Sigmoid()),
               nn.BinaryCrossEntropy),
    "regression": (lambda: nn.Sequential(nn.Dense(6, 8), nn.ReLU(), nn.Dense(8, 1)),
                   nn.MeanSquaredError),
}


def evaluated_data(task):
    X, labels = data(samples=100)
    rng = np.random.default_rng(4)
    if task == "binary":
        return X, (rng.random((100, 2)) < 0.5).astype(np.float32)
    if task == "regression":
        return X, rng.normal(size=(100, 1)).astype(np.float32)
    return X, labels


@pytest.mark.parametrize("task", sorted(EVALUATED))
def test_a_compiled_evaluation_scores_as_the_eager_one(jax_backend, task):
    """Inference mode (dropout off, BatchNorm's running statistics), batches of 32 and the
    last of 4, the loss weighted by rows: the same scores either way."""
    build, make_loss = EVALUATED[task]
    X, y = evaluated_data(task)
    nn.seed(5)
    model, loss = build(), make_loss()
    model.fit(X, y, loss=loss, optimizer=nn.Adam(lr=0.01), epochs=2, batch_size=16, seed=0)
    eager = model.evaluate(X, y, batch_size=32, compile=False)
    compiled = model.evaluate(X, y, batch_size=32, compile=True)
    assert compiled.keys() == eager.keys() == ({"loss"} if task == "regression"
                                               else {"loss", "accuracy"})
    for key in eager:
        assert compiled[key] == pytest.approx(eager[key], rel=1e-5)
    assert isinstance(model.__dict__.get("_evaluation"), tuple)  # kept for the next one


def test_the_kept_evaluation_sees_new_weights_and_is_traced_again_for_new_settings(
        jax_backend, monkeypatch):
    traces = []
    original = compile_module.JaxEvaluation._pure
    monkeypatch.setattr(compile_module.JaxEvaluation, "_pure",
                        lambda self, *args: traces.append(args[-1]) or original(self, *args))
    build, make_loss = EVALUATED["binary"]
    X, y = evaluated_data("binary")
    nn.seed(5)
    model, loss = build(), make_loss()
    model.fit(X, y, loss=loss, optimizer=nn.Adam(lr=0.01), epochs=1, batch_size=16, seed=0)
    first = model.evaluate(X, y, batch_size=32)
    assert sorted(traces) == [4, 32]  # one trace per batch shape
    model.fit(X, y, loss=loss, optimizer=nn.Adam(lr=0.05), epochs=3, batch_size=16, seed=0)
    second = model.evaluate(X, y, batch_size=32)
    assert len(traces) == 2  # the same executables, with the new weights as arguments
    assert second["loss"] != pytest.approx(first["loss"], rel=1e-3)
    assert second == pytest.approx(model.evaluate(X, y, batch_size=32, compile=False),
                                   rel=1e-5)
    loss.threshold = 0.9  # a setting the trace baked in: traced again
    third = model.evaluate(X, y, batch_size=32)
    assert len(traces) == 4
    assert third == pytest.approx(model.evaluate(X, y, batch_size=32, compile=False),
                                  rel=1e-5)
    assert third["accuracy"] != second["accuracy"]


def test_a_model_keeping_an_evaluation_pickles_and_copies_without_it(jax_backend):
    import copy
    import pickle

    build, make_loss = EVALUATED["multiclass"]
    X, y = evaluated_data("multiclass")
    nn.seed(5)
    model = build()
    model.fit(X, y, loss=make_loss(), optimizer=nn.Adam(lr=0.01), epochs=1, batch_size=16)
    scores = model.evaluate(X, y)
    for other in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert "_evaluation" not in other.__dict__
        assert other.evaluate(X, y) == pytest.approx(scores, rel=1e-6)


def test_fit_s_validation_is_compiled_with_its_steps_and_scores_as_eagerly(jax_backend,
                                                                           monkeypatch):
    X, y = data(samples=100)
    runs = {}
    for compile in (False, True):
        model = network(dropout=0.3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs[compile] = model.fit(
                X[:80], y[:80], loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=0.01),
                epochs=3, batch_size=16, seed=1, validation_data=(X[80:], y[80:]),
                compile=compile).history
        assert ("_evaluation" in model.__dict__) == compile
    for key in ("val_loss", "val_accuracy"):
        np.testing.assert_allclose(runs[True][key], runs[False][key], rtol=2e-5)


class HostReading(nn.Layer):
    """A layer that reads a value back to the host in its forward pass."""

    def forward(self, x, training=False):
        self.largest = float(nn.get_backend().xp.max(x))
        return x

    def backward(self, grad_output, need_input_grad=True):
        return grad_output


def test_an_untraceable_inference_pass_is_evaluated_eagerly_with_a_warning(jax_backend):
    X, y = data(samples=40)
    nn.seed(5)
    model = nn.Sequential(nn.Dense(6, 3), HostReading())
    model.loss = nn.SoftmaxCrossEntropy()
    with pytest.warns(UserWarning, match="evaluate runs eagerly: a layer or the loss reads"):
        scores = model.evaluate(X, y, batch_size=16)
    assert scores == pytest.approx(model.evaluate(X, y, batch_size=16, compile=False),
                                   rel=1e-6)
