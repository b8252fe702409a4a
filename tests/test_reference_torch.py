"""nnscratch against PyTorch, the trusted reference: the same network with the same
weights gives the same loss and every gradient as torch autograd, and every optimizer
(and schedule) gives the same weights as torch.optim. float64 throughout; arrays cross
between the libraries through NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import nnscratch as nn


def f64(backend, array):
    return backend.asarray(np.asarray(array, dtype=np.float64), dtype="float64")


def torch_forward(torch, layers, params, x):
    """The nnscratch layer stack, rebuilt from torch operations."""
    functional = torch.nn.functional
    tensors = iter(params)
    for layer in layers:
        if isinstance(layer, nn.Dense):
            x = x @ next(tensors) + next(tensors)
        elif isinstance(layer, nn.Tanh):
            x = torch.tanh(x)
        elif isinstance(layer, nn.ReLU):
            x = torch.relu(x)
        elif isinstance(layer, nn.Sigmoid):
            x = torch.sigmoid(x)
        elif isinstance(layer, nn.LeakyReLU):
            x = functional.leaky_relu(x, layer.alpha)
        elif isinstance(layer, nn.ELU):
            x = functional.elu(x, layer.alpha)
        elif isinstance(layer, nn.Softplus):
            x = functional.softplus(x)
        elif isinstance(layer, nn.Softmax):
            x = torch.softmax(x, dim=-1)
        elif not isinstance(layer, nn.Identity):
            raise AssertionError(layer)
    return x


def torch_loss(torch, loss, outputs, targets):
    functional = torch.nn.functional
    if isinstance(loss, nn.MeanSquaredError):
        return functional.mse_loss(outputs, targets)
    if isinstance(loss, nn.BinaryCrossEntropy):
        if loss.from_logits:
            return functional.binary_cross_entropy_with_logits(outputs, targets)
        return functional.binary_cross_entropy(outputs, targets)
    if isinstance(loss, nn.CategoricalCrossEntropy):
        if targets.is_floating_point():  # target rows
            return -(targets * torch.log(outputs)).sum(dim=1).mean()
        return functional.nll_loss(torch.log(outputs), targets)
    if isinstance(loss, nn.SoftmaxCrossEntropy):
        return functional.cross_entropy(outputs, targets)  # labels or probabilities
    raise AssertionError(loss)


def torch_penalty(torch, layers, params):
    total = torch.zeros((), dtype=torch.float64)
    tensors = iter(params)
    for layer in layers:
        if isinstance(layer, nn.Dense):
            weight, _ = next(tensors), next(tensors)
            total = total + layer.l1 * weight.abs().sum() + layer.l2 * (weight**2).sum()
    return total


NETWORKS = {
    "tanh-relu-sigmoid, bce": (
        lambda: [nn.Dense(4, 6, dtype="float64"), nn.Tanh(), nn.Dense(6, 5, dtype="float64"),
                 nn.ReLU(), nn.Dense(5, 2, dtype="float64"), nn.Sigmoid()],
        nn.BinaryCrossEntropy(), "binary"),
    "elu-softplus-leaky, mse": (
        lambda: [nn.Dense(4, 6, dtype="float64"), nn.ELU(0.5), nn.Dense(6, 5, dtype="float64"),
                 nn.Softplus(), nn.Dense(5, 3, dtype="float64"), nn.LeakyReLU(0.05)],
        nn.MeanSquaredError(), "real"),
    "sigmoid, softmax cross-entropy": (
        lambda: [nn.Dense(4, 8, dtype="float64"), nn.Sigmoid(), nn.Dense(8, 3, dtype="float64")],
        nn.SoftmaxCrossEntropy(), "labels"),
    "tanh, softmax cross-entropy, soft targets": (
        lambda: [nn.Dense(4, 5, dtype="float64"), nn.Tanh(), nn.Dense(5, 3, dtype="float64")],
        nn.SoftmaxCrossEntropy(), "probabilities"),
    "tanh-softmax, categorical cross-entropy": (
        lambda: [nn.Dense(4, 5, dtype="float64"), nn.Tanh(), nn.Dense(5, 3, dtype="float64"),
                 nn.Softmax()],
        nn.CategoricalCrossEntropy(), "labels"),
    "tanh-softmax, categorical cross-entropy, rows not summing to 1": (
        lambda: [nn.Dense(4, 5, dtype="float64"), nn.Tanh(), nn.Dense(5, 3, dtype="float64"),
                 nn.Softmax()],
        nn.CategoricalCrossEntropy(), "weighted rows"),
    "relu, bce from logits, l1 and l2": (
        lambda: [nn.Dense(4, 5, dtype="float64", l1=0.01, l2=0.02), nn.ReLU(),
                 nn.Dense(5, 1, dtype="float64", l2=0.1)],
        nn.BinaryCrossEntropy(from_logits=True), "binary"),
}


def _data(rng, kind, n, width):
    if kind == "binary":
        return rng.integers(0, 2, size=(n, width)).astype(np.float64)
    if kind == "labels":
        return rng.integers(0, width, size=n)
    if kind == "probabilities":
        return rng.dirichlet(np.ones(width), size=n)
    if kind == "weighted rows":  # soft targets whose rows sum to 0.5 .. 1.5
        return rng.dirichlet(np.ones(width), size=n) * rng.uniform(0.5, 1.5, size=(n, 1))
    return rng.normal(size=(n, width))


def backpropagate(model, loss, path):
    """The notes' ``backward(loss.backward())``, or ``backward_loss`` as ``fit`` does
    (fused through a final Sigmoid or Softmax where the loss pairs with it)."""
    if path == "notes":
        return model.backward(loss.backward())
    return model.backward_loss(loss)


@pytest.mark.parametrize("path", ["notes", "fit"])
@pytest.mark.parametrize("case", list(NETWORKS))
def test_loss_and_every_gradient_match_torch_autograd(backend, torch, case, path):
    build, loss, kind = NETWORKS[case]
    nn.seed(11)
    model = nn.Sequential(*build())
    rng = np.random.default_rng(12)
    for layer in model.layers:
        if isinstance(layer, nn.Dense):
            layer.bias.value = f64(backend, rng.normal(scale=0.2, size=layer.out_features))
    n = 9
    X_host = rng.normal(size=(n, 4))
    y_host = _data(rng, kind, n, model.out_features)

    X = f64(backend, X_host)
    y = backend.asarray(y_host) if kind == "labels" else f64(backend, y_host)
    value = float(loss.forward(model.forward(X, training=True), y)
                  + model.regularization_loss())
    grad_input = nn.to_numpy(backpropagate(model, loss, path))

    params = [torch.tensor(nn.to_numpy(p.value), requires_grad=True)
              for p in model.parameters()]
    x_torch = torch.tensor(X_host, requires_grad=True)
    y_torch = torch.from_numpy(y_host)
    reference = (torch_loss(torch, loss, torch_forward(torch, model.layers, params, x_torch),
                            y_torch)
                 + torch_penalty(torch, model.layers, params))
    reference.backward()

    assert value == pytest.approx(reference.item(), rel=1e-12)
    for ours, theirs in zip(model.parameters(), params):
        expected = theirs.grad.numpy()
        assert np.abs(expected).max() > 0  # every gradient is alive in this network
        np.testing.assert_allclose(nn.to_numpy(ours.grad), expected, rtol=1e-9, atol=1e-14)
        error = (np.linalg.norm(nn.to_numpy(ours.grad) - expected)
                 / np.linalg.norm(expected))
        assert error < 1e-10
    np.testing.assert_allclose(grad_input, x_torch.grad.numpy(), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("ending", ["sigmoid, bce", "softmax, cce"])
def test_gradient_of_a_confidently_wrong_output_matches_torch(backend, torch, ending):
    """float32 outputs far below ε for the true class: autograd's gradient, (p − y)/N,
    both fused (``backward_loss``, as fit) and through the notes' chain (the gradient of
    the unclipped loss: a gradient of the clipped p would be ~1e-4 of it)."""
    sigmoid = ending == "sigmoid, bce"
    width = 1 if sigmoid else 3
    model = nn.Sequential(nn.Dense(2, width), nn.Sigmoid() if sigmoid else nn.Softmax())
    loss = nn.BinaryCrossEntropy() if sigmoid else nn.CategoricalCrossEntropy()
    weight = np.array([[-6.0, 0.0, 2.0], [-8.0, 1.0, 0.5]], dtype=np.float32)[:, :width]
    bias = np.zeros(width, dtype=np.float32)
    model.layers[0].weight.value = backend.asarray(weight, copy=True)
    model.layers[0].bias.value = backend.asarray(bias, copy=True)
    X_host = np.array([[2.0, 1.5], [1.0, 2.5]], dtype=np.float32)  # z = -24 and -26 for class 0
    y_host = np.array([[1.0], [1.0]], dtype=np.float32) if sigmoid else np.array([0, 0])
    X, y = backend.asarray(X_host), backend.asarray(y_host)

    loss.forward(model.forward(X, training=True), y)
    model.backward_loss(loss, need_input_grad=False)
    fused = nn.to_numpy(model.layers[0].weight.grad)
    model.backward(loss.backward(), need_input_grad=False)
    chained = nn.to_numpy(model.layers[0].weight.grad)

    w = torch.tensor(weight, requires_grad=True)
    z = torch.from_numpy(X_host) @ w + torch.from_numpy(bias)
    if sigmoid:
        value = torch.nn.functional.binary_cross_entropy(torch.sigmoid(z), torch.from_numpy(y_host))
    else:
        value = torch.nn.functional.nll_loss(torch.log_softmax(z, dim=1), torch.from_numpy(y_host))
    value.backward()
    expected = w.grad.numpy()
    assert np.abs(expected).max() > 1.0  # the wrong output pulls hard
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chained, expected, rtol=1e-5, atol=1e-6)


def test_fit_steps_like_torch_on_a_saturated_sigmoid(backend, torch):
    """One full-batch SGD step of ``fit`` on a saturated Sigmoid + BCE network equals
    torch's step (a gradient through the clipped p would barely move the weights)."""
    model = nn.Sequential(nn.Dense(2, 1), nn.Sigmoid())
    weight = np.array([[-6.0], [-8.0]], dtype=np.float32)
    model.layers[0].weight.value = backend.asarray(weight, copy=True)
    X_host = np.array([[2.0, 1.5], [1.0, 2.5], [0.0, 0.0]], dtype=np.float32)
    y_host = np.array([1.0, 1.0, 0.0], dtype=np.float32)
    model.fit(X_host, y_host, loss=nn.BinaryCrossEntropy(), optimizer=nn.SGD(lr=0.1),
              epochs=1, batch_size=None)

    w = torch.tensor(weight, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    probabilities = torch.sigmoid(torch.from_numpy(X_host) @ w + b)[:, 0]
    torch.nn.functional.binary_cross_entropy(probabilities, torch.from_numpy(y_host)).backward()
    with torch.no_grad():
        w -= 0.1 * w.grad
        b -= 0.1 * b.grad
    assert np.abs(w.detach().numpy() - weight).min() > 0.05
    np.testing.assert_allclose(nn.to_numpy(model.layers[0].weight.value), w.detach().numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(nn.to_numpy(model.layers[0].bias.value), b.detach().numpy(),
                               rtol=1e-5, atol=1e-7)


# -- optimizers -------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": (lambda: nn.SGD(lr=0.1), lambda torch, p: torch.optim.SGD(p, lr=0.1)),
    "sgd momentum": (lambda: nn.SGD(lr=0.05, momentum=0.9),
                     lambda torch, p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "sgd nesterov": (lambda: nn.SGD(lr=0.05, momentum=0.9, nesterov=True),
                     lambda torch, p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "sgd weight decay": (lambda: nn.SGD(lr=0.1, weight_decay=0.05),
                         lambda torch, p: torch.optim.SGD(p, lr=0.1, weight_decay=0.05)),
    "sgd momentum weight decay": (
        lambda: nn.SGD(lr=0.05, momentum=0.5, weight_decay=0.1),
        lambda torch, p: torch.optim.SGD(p, lr=0.05, momentum=0.5, weight_decay=0.1)),
    "rmsprop": (lambda: nn.RMSprop(lr=0.01), lambda torch, p: torch.optim.RMSprop(p, lr=0.01)),
    "rmsprop momentum weight decay": (
        lambda: nn.RMSprop(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.7, weight_decay=0.02),
        lambda torch, p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-6, momentum=0.7,
                                             weight_decay=0.02)),
    "adam": (lambda: nn.Adam(lr=0.05), lambda torch, p: torch.optim.Adam(p, lr=0.05)),
    "adam betas eps": (
        lambda: nn.Adam(lr=0.02, betas=(0.8, 0.95), eps=1e-4),
        lambda torch, p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.95), eps=1e-4)),
    "adam weight decay": (lambda: nn.Adam(lr=0.05, weight_decay=0.1),
                          lambda torch, p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1)),
    "adamw": (lambda: nn.AdamW(lr=0.05, weight_decay=0.2),
              lambda torch, p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.2)),
    "adamw default decay": (lambda: nn.AdamW(lr=0.05),
                            lambda torch, p: torch.optim.AdamW(p, lr=0.05)),
}

START = [np.array([[0.3, 0.1], [-0.2, 0.4], [0.05, -0.6]]), np.array([0.1, -0.1])]
TARGET = [np.array([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]]), np.array([-0.5, 2.0])]
CURVATURE = [np.array([[0.5, 2.0], [1.0, 3.0], [0.2, 1.5]]), np.array([4.0, 0.3])]


def _max_relative_error(got, expected):
    return float(np.max(np.abs(got - expected) / np.maximum(np.abs(expected), 1e-300)))


@pytest.mark.parametrize("case", list(OPTIMIZERS))
def test_optimizer_matches_torch_optim_on_a_quadratic(backend, torch, case):
    """10 steps on L = ½ Σ q (w − target)², each side taking the gradient at its own
    weights (the same numbers, as long as the updates agree)."""
    make, make_torch = OPTIMIZERS[case]
    params = [nn.Parameter(backend.asarray(w, dtype="float64", copy=True)) for w in START]
    theirs = [torch.tensor(w, requires_grad=True) for w in START]
    optimizer, reference = make(), make_torch(torch, theirs)
    for _ in range(10):
        for param, q, target in zip(params, CURVATURE, TARGET):
            param.grad = f64(backend, q * (nn.to_numpy(param.value) - target))
        optimizer.step(params)
        reference.zero_grad()
        sum(0.5 * (torch.from_numpy(q) * (w - torch.from_numpy(t)) ** 2).sum()
            for w, q, t in zip(theirs, CURVATURE, TARGET)).backward()
        reference.step()
    for param, tensor, start in zip(params, theirs, START):
        expected = tensor.detach().numpy()
        assert np.abs(expected - start).min() > 1e-3  # every weight moved
        assert _max_relative_error(nn.to_numpy(param.value), expected) < 1e-10


@pytest.mark.parametrize("case", ["sgd nesterov", "rmsprop", "adam weight decay", "adamw"])
def test_training_a_network_matches_torch(backend, torch, case):
    """10 steps on a network: our backprop and torch autograd feed their own optimizer."""
    make, make_torch = OPTIMIZERS[case]
    build, loss, kind = NETWORKS["tanh-relu-sigmoid, bce"]
    nn.seed(13)
    model = nn.Sequential(*build())
    rng = np.random.default_rng(14)
    X_host, y_host = rng.normal(size=(16, 4)), _data(rng, kind, 16, 2)
    X, y = f64(backend, X_host), f64(backend, y_host)
    theirs = [torch.tensor(nn.to_numpy(p.value), requires_grad=True)
              for p in model.parameters()]
    optimizer, reference = make(), make_torch(torch, theirs)
    parameters = model.parameters()
    for _ in range(10):
        loss.forward(model.forward(X, training=True), y)
        model.backward(loss.backward(), need_input_grad=False)
        optimizer.step(parameters)
        reference.zero_grad()
        outputs = torch_forward(torch, model.layers, theirs, torch.from_numpy(X_host))
        torch_loss(torch, loss, outputs, torch.from_numpy(y_host)).backward()
        reference.step()
    for ours, tensor in zip(parameters, theirs):
        np.testing.assert_allclose(nn.to_numpy(ours.value), tensor.detach().numpy(),
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", ["step", "exponential", "cosine"])
def test_schedules_match_torch_schedulers(torch, case):
    base_lr = 0.1
    weight = torch.zeros(1, requires_grad=True)
    reference_optimizer = torch.optim.SGD([weight], lr=base_lr)
    scheduler = torch.optim.lr_scheduler
    if case == "step":
        ours, theirs = nn.StepDecay(3, 0.5), scheduler.StepLR(reference_optimizer, 3, 0.5)
    elif case == "exponential":
        ours, theirs = nn.ExponentialDecay(0.8), scheduler.ExponentialLR(reference_optimizer, 0.8)
    else:
        ours = nn.CosineDecay(total_epochs=6, min_lr=0.01)
        theirs = scheduler.CosineAnnealingLR(reference_optimizer, T_max=6, eta_min=0.01)
    for epoch in range(7):  # cosine: torch's curve climbs again after T_max, ours stays
        assert ours(base_lr, epoch) == pytest.approx(theirs.get_last_lr()[0], rel=1e-12)
        reference_optimizer.step()
        theirs.step()
