"""The array operations of a training step, counted (bench/opcount.py). On a GPU every
operation is a kernel launch of a few microseconds of host time, more than a small
network's arithmetic: the count is the step's cost, and unlike a time it is stable, so
it is pinned here. The network of the benchmarks: 784-256-128-10, ReLU, softmax
cross-entropy, batch 128."""

from __future__ import annotations

import importlib
import sys

import pytest
from conftest import ROOT

import nnscratch as nn

BENCH = ROOT / "bench"


@pytest.fixture(scope="module")
def opcount():
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("opcount")
    finally:
        sys.path.remove(str(BENCH))


# The budget of issue 12: at most 50 per step on torch (there were 136 before θ became
# one vector). The exact counts are pinned too, so that any new operation is noticed. The
# quarter is the epoch's shuffle, gathered once per run of 20 steps (slice + take's 4).
BUDGET = 50
TORCH_ADAM, TORCH_SGD = 49.25, 41.25  # ATen operators, array-api-compat's own included
# array-api-strict functions and operators: the weight gradients are a product and a
# copy there (no out=), and a gather per run of steps is 2 calls
STRICT_ADAM, STRICT_SGD = 50.1, 42.1


def test_a_fit_step_on_torch_stays_within_the_budget(opcount):
    pytest.importorskip("torch", reason="the count is taken on the torch backend")
    adam = opcount.fit_ops("torch", optimizer=nn.Adam)
    sgd = opcount.fit_ops("torch", optimizer=nn.SGD)
    assert adam["per_step"] == TORCH_ADAM <= BUDGET, adam["by_operation"]
    assert sgd["per_step"] == TORCH_SGD, sgd["by_operation"]
    assert adam["by_operation"]["aten.index_select.default"] == 1 / 20  # a gather a run
    # Adam over all of θ is the same few operations whatever the number of layers
    assert adam["per_step"] - sgd["per_step"] == 8
    # the matrix products: 3 forward, 3 weight gradients, 2 input gradients
    assert adam["by_operation"]["aten.mm.default"] + adam["by_operation"]["aten.mm.out"] == 8
    # an epoch's own work (its shuffle, the loss and accuracy read back) is per epoch
    assert adam["per_epoch"] < 30


def test_a_fit_step_on_array_api_strict_stays_within_the_budget(opcount):
    pytest.importorskip("array_api_strict", reason="the count needs array-api-strict")
    adam = opcount.fit_ops("array_api_strict", optimizer=nn.Adam)
    sgd = opcount.fit_ops("array_api_strict", optimizer=nn.SGD)
    assert adam["per_step"] == pytest.approx(STRICT_ADAM), adam["by_operation"]
    assert sgd["per_step"] == pytest.approx(STRICT_SGD), sgd["by_operation"]


def test_more_layers_cost_operations_per_layer_not_per_parameter(opcount):
    """Adding a Dense+ReLU pair adds its forward and backward, and nothing to Adam."""
    pytest.importorskip("torch", reason="the count is taken on the torch backend")
    sizes = opcount.LAYER_SIZES
    opcount.LAYER_SIZES = (784, 256, 128, 64, 10)
    try:
        deeper = opcount.fit_ops("torch", optimizer=nn.Adam)
    finally:
        opcount.LAYER_SIZES = sizes
    shallow = opcount.fit_ops("torch", optimizer=nn.Adam)
    # Dense forward 2 (concat, matmul), backward 3 (transpose, product into ∇θ, input
    # gradient), ReLU forward 1, backward 3
    assert deeper["per_step"] - shallow["per_step"] == 9


def test_the_counter_counts(opcount):
    """The counters see what runs: a product and an addition are two operations."""
    pytest.importorskip("torch", reason="the torch counter needs torch")
    import torch

    a = torch.ones((3, 3))
    with opcount.torch_ops() as counts:
        (a @ a) + 1.0
    assert sum(counts.values()) == 2
    strict = pytest.importorskip("array_api_strict", reason="needs array-api-strict")
    b = strict.ones((3, 3))
    with opcount.strict_ops() as counts:
        strict.sum(b @ b + 1.0)
    assert sum(counts.values()) == 3


def test_pytorch_own_step_is_counted_with_its_backward(opcount):
    """PyTorch's autograd runs its backward kernels from C++; the dispatcher still sees
    them (a foreach-free CPU Adam costs more than its fused one)."""
    pytest.importorskip("torch", reason="the count is taken on torch")
    plain, fused = opcount.pytorch_ops(fused=False), opcount.pytorch_ops(fused=True)
    assert fused < plain and fused > 30
