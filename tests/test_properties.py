"""Property tests: for random stacks of layers and random batch sizes, shapes flow through
forward and backward, and float32 stays float32 end to end (outputs, gradients, loss,
optimizer state, a fit step): no silent promotion to float64."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnscratch as nn

ACTIVATIONS = {
    "identity": nn.Identity, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1), "elu": lambda: nn.ELU(0.5),
    "softplus": nn.Softplus, "softmax": nn.Softmax,
}

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def stacks(draw):
    """A layer recipe: Dense layers of random widths, each maybe followed by an
    activation and a Dropout; plus a batch size and a dtype."""
    widths = draw(st.lists(st.integers(1, 6), min_size=2, max_size=4))
    recipe = []
    for index in range(len(widths) - 1):
        penalties = draw(st.sampled_from([{}, {"l1": 0.01}, {"l2": 0.02}]))
        recipe.append(("dense", (widths[index], widths[index + 1]), penalties))
        activation = draw(st.sampled_from([None, *ACTIVATIONS]))
        if activation:
            recipe.append((activation, (), {}))
        if draw(st.booleans()):
            recipe.append(("dropout", (draw(st.sampled_from([0.0, 0.3, 0.5])),), {}))
    return recipe, draw(st.integers(1, 7)), draw(st.sampled_from(["float32", "float64"]))


def build(recipe, dtype):
    layers = []
    for kind, args, kwargs in recipe:
        if kind == "dense":
            layers.append(nn.Dense(*args, dtype=dtype, **kwargs))
        elif kind == "dropout":
            layers.append(nn.Dropout(*args))
        else:
            layers.append(ACTIVATIONS[kind]())
    return nn.Sequential(*layers)


@SETTINGS
@given(stack=stacks(), seed=st.integers(0, 2**16))
def test_shapes_and_dtypes_flow_through_forward_and_backward(backend, stack, seed):
    recipe, batch, dtype = stack
    nn.seed(seed)
    model = build(recipe, dtype)
    rng = np.random.default_rng(seed)
    in_features, out_features = model.in_features, model.out_features
    expected_dtype = getattr(backend.xp, dtype)
    x = backend.asarray(rng.normal(size=(batch, in_features)), dtype=dtype)
    for training in (True, False):
        outputs = model.forward(x, training=training)
        assert tuple(outputs.shape) == (batch, out_features)
        assert outputs.dtype == expected_dtype
    outputs = model.forward(x, training=True)
    grad_output = backend.asarray(rng.normal(size=(batch, out_features)), dtype=dtype)
    grad_input = model.backward(grad_output)
    assert tuple(grad_input.shape) == (batch, in_features)
    assert grad_input.dtype == expected_dtype
    for param in model.parameters():
        assert param.grad is not None
        assert tuple(param.grad.shape) == param.shape
        assert param.grad.dtype == param.value.dtype == expected_dtype
    assert model.backward(grad_output, need_input_grad=False) is None
    penalty = model.regularization_loss()
    if not isinstance(penalty, float):
        assert penalty.dtype == expected_dtype


LOSSES = {
    "mse": (nn.MeanSquaredError, None),
    "bce": (nn.BinaryCrossEntropy, nn.Sigmoid),
    "bce logits": (lambda: nn.BinaryCrossEntropy(from_logits=True), None),
    "categorical": (nn.CategoricalCrossEntropy, nn.Softmax),
    "softmax cross-entropy": (nn.SoftmaxCrossEntropy, None),
}

OPTIMIZERS = {
    "sgd nesterov": lambda: nn.SGD(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "rmsprop": lambda: nn.RMSprop(lr=0.01, momentum=0.5, weight_decay=1e-3),
    "adam": lambda: nn.Adam(lr=0.01, weight_decay=1e-3),
    "adamw": lambda: nn.AdamW(lr=0.01),
}


@SETTINGS
@given(stack=stacks(), loss_name=st.sampled_from(list(LOSSES)),
       optimizer_name=st.sampled_from(list(OPTIMIZERS)), samples=st.integers(1, 9),
       seed=st.integers(0, 2**16))
def test_float32_stays_float32_through_a_fit_step(backend, stack, loss_name, optimizer_name,
                                                  samples, seed):
    recipe, batch, _ = stack
    make_loss, last_activation = LOSSES[loss_name]
    nn.seed(seed)
    model = build(recipe, "float32")
    if last_activation is not None:
        model.add(last_activation())
    loss = make_loss()
    rng = np.random.default_rng(seed)
    width = model.out_features
    X = rng.normal(size=(samples, model.in_features))  # float64 on the host, on purpose
    if loss.task == "multiclass":
        y = rng.integers(0, width, size=samples)
    elif loss.task == "binary":
        y = rng.integers(0, 2, size=(samples, width)).astype(np.float64)
    else:
        y = rng.normal(size=(samples, width))
    float32 = backend.xp.float32

    # one step by hand: the loss value and its gradient
    outputs = model.forward(backend.asarray(X, dtype="float32"), training=True)
    y_device = backend.asarray(y) if loss.task == "multiclass" else backend.asarray(
        y, dtype="float32")
    value = loss.forward(outputs, y_device)
    assert value.dtype == float32 and value.ndim == 0
    assert loss.backward().dtype == float32

    optimizer = OPTIMIZERS[optimizer_name]()
    history = model.fit(X, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=batch)
    assert np.isfinite(history["loss"][0])
    assert optimizer.t == -(-samples // min(batch, samples))
    for param in model.parameters():
        assert param.value.dtype == float32
        assert param.grad.dtype == float32
        state = optimizer.state.get(param, {})
        assert state, "every parameter has optimizer state after a step"
        for array in state.values():
            assert array.dtype == float32
            assert tuple(array.shape) == param.shape
    prediction = model.predict(X)
    assert prediction.dtype == float32
    assert tuple(prediction.shape) == (samples, width)
