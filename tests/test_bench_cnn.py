"""bench/cnn.py compares like with like: its PyTorch copy of each network computes what
the nnscratch network computes, from the same weights, in training and in inference."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
from conftest import ROOT

import nnscratch as nn


@pytest.fixture(scope="module")
def cnn_bench():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return importlib.import_module("cnn")
    finally:
        sys.path.remove(str(ROOT / "bench"))


@pytest.mark.parametrize("name", ["conv 8/16 5x5", "conv 32/64 3x3", "nn.cnn"])
def test_the_pytorch_copy_computes_what_nnscratch_computes(cnn_bench, torch, name):
    with nn.use_backend("numpy"):
        nn.seed(0)
        model = cnn_bench.NETWORKS[name]()
        copy = cnn_bench.torch_copy(torch, model)
        X = np.random.default_rng(0).random((6, 1, 28, 28), dtype=np.float32)
        for training in (True, False):  # batch statistics, then the running ones
            copy.train(training)
            for module in copy:  # no dropout: the two draw different masks
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
            for layer in model.layers:
                if isinstance(layer, nn.Dropout):
                    layer.rate = 0.0
            ours = nn.to_numpy(model.forward(X, training=training))
            with torch.no_grad():
                theirs = copy(torch.as_tensor(X)).numpy()
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
