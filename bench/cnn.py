"""nnscratch's convolutional networks against PyTorch CPU eager, on the same networks in
one run: ms per training step (interleaved rounds, per-round ratios; see common.py) and
array operations per step.

    python bench/cnn.py                     # the numbers in bench/README.md
    python bench/cnn.py --quick             # a smoke test
    python bench/cnn.py --threads 1
    python bench/cnn.py --gpu               # cupy and torch on CUDA against PyTorch CUDA

The networks (batch 128, 28 × 28 one-channel images, ReLU, softmax cross-entropy, Adam
lr 1e-3, float32), each built once in nnscratch and copied weight for weight into
``torch.nn`` modules:

* ``conv 8/16 5x5``: Conv(1→8, 5×5) ReLU MaxPool(2) Conv(8→16, 5×5) ReLU MaxPool(2)
  Dense(256→128) ReLU Dense(128→10);
* ``conv 32/64 3x3``: the same with 32 and 64 filters of 3×3 (Dense(1600→128));
* ``nn.cnn``: the network of ``examples/mnist.py --model cnn`` (16/32 5×5 with
  BatchNorm after each convolution, Dropout 0.25 in the dense head).

Each round is one epoch of ``--steps`` steps over random images (a step's time and
operations do not depend on the pixel values): nnscratch through ``model.fit`` (its
shuffle and gathers included) on numpy and on the torch backend, PyTorch as its
tutorial loop (zero_grad, forward, cross_entropy, backward, Adam step) over the same
batches. Operations per step are counted as in opcount.py (the torch backend's ATen
operators; PyTorch's own autograd step, its C++ backward kernels included).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
from common import (
    Candidate,
    default_results_path,
    environment,
    format_range,
    limit_threads,
    load_average,
    now,
    print_flush,
    ratio,
    run_interleaved,
    spread,
    table,
    write_results,
)

import nnscratch as nn

BATCH = 128


def plain_cnn(stages: list[tuple[int, int, int]], flat: int) -> nn.Sequential:
    layers: list[nn.Layer] = []
    for in_channels, out_channels, kernel in stages:
        layers += [nn.Conv2D(in_channels, out_channels, kernel), nn.ReLU(), nn.MaxPool2D(2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Dense(flat, 128, init="he_normal"),
                         nn.ReLU(), nn.Dense(128, 10))


NETWORKS = {
    "conv 8/16 5x5": lambda: plain_cnn([(1, 8, 5), (8, 16, 5)], 16 * 4 * 4),
    "conv 32/64 3x3": lambda: plain_cnn([(1, 32, 3), (32, 64, 3)], 64 * 5 * 5),
    "nn.cnn": lambda: nn.cnn(),
}


def torch_copy(torch: Any, model: nn.Sequential) -> Any:
    """The same network as ``torch.nn`` modules, with nnscratch's weights copied in."""
    modules, images = [], True
    for layer in model.layers:
        values = [torch.tensor(nn.to_numpy(p.value)) for p in layer.parameters()]
        if isinstance(layer, nn.Conv2D):
            module = torch.nn.Conv2d(layer.in_channels, layer.out_channels,
                                     layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, nn.BatchNorm):
            kind = torch.nn.BatchNorm2d if images else torch.nn.BatchNorm1d
            module = kind(layer.num_features, eps=layer.eps, momentum=layer.momentum)
        elif isinstance(layer, nn.Dense):
            module = torch.nn.Linear(layer.in_features, layer.out_features)
            values[0] = values[0].T.contiguous()
        elif isinstance(layer, nn.MaxPool2D):
            module = torch.nn.MaxPool2d(layer.kernel_size, layer.stride)
        elif isinstance(layer, nn.Flatten):
            module, images = torch.nn.Flatten(), False
        elif isinstance(layer, nn.Dropout):
            module = torch.nn.Dropout(layer.rate)
        elif isinstance(layer, nn.ReLU):
            module = torch.nn.ReLU()
        else:
            raise TypeError(f"no PyTorch counterpart for {layer!r}")
        with torch.no_grad():
            for param, value in zip(module.parameters(), values):
                param.copy_(value)
        modules.append(module)
    return torch.nn.Sequential(*modules)


def torch_trainer(torch: Any, model: Any, X: Any, y: Any, steps: int) -> Any:
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = np.random.default_rng(0)

    def epoch() -> None:
        order = torch.as_tensor(generator.permutation(steps * BATCH), device=X.device)
        Xs, ys = X[order], y[order]  # the epoch's shuffle, as fit's gather
        model.train()
        for step in range(steps):
            xb, yb = Xs[step * BATCH:(step + 1) * BATCH], ys[step * BATCH:(step + 1) * BATCH]
            adam.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            adam.step()

    return epoch


def nnscratch_trainer(backend: str, build: Any, X: np.ndarray, y: np.ndarray,
                      device_name: str | None = None) -> Any:
    with nn.use_backend(backend, device=device_name) as device:
        nn.seed(0)
        model, adam, loss = build(), nn.Adam(lr=1e-3), nn.SoftmaxCrossEntropy()
        data = device.asarray(X), device.asarray(y)
    rounds = iter(range(10**9))

    def epoch() -> None:
        with nn.use_backend(backend, device=device_name):
            model.fit(*data, loss=loss, optimizer=adam, epochs=1, batch_size=BATCH,
                      seed=next(rounds))

    return epoch


def count_ops(build: Any, steps: int) -> dict[str, float]:
    """Operations per step: nnscratch's fit on the torch backend, PyTorch's own step."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    import opcount
    import torch

    with nn.use_backend("torch") as device:
        nn.seed(0)
        model, adam, loss = build(), nn.Adam(), nn.SoftmaxCrossEntropy()
        xp = device.xp
        ours = opcount.ops_per_step("torch", lambda X, y: model.fit(
            xp.reshape(X, (-1, 1, 28, 28)), y, loss=loss, optimizer=adam, epochs=1,
            batch_size=BATCH, seed=1), steps, BATCH)
        reference = torch_copy(torch, model)
    X = torch.rand((2 * BATCH, 1, 28, 28))
    y = torch.randint(0, 10, (2 * BATCH,))
    step = torch_trainer(torch, reference, X, y, 2)
    step()
    with opcount.torch_ops() as counts:
        step()
    return {"nnscratch": ours["per_step"], "pytorch": sum(counts.values()) / 2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="steps per round")
    parser.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads")
    parser.add_argument("--networks", default=",".join(NETWORKS),
                        help=f"comma-separated, of: {', '.join(NETWORKS)}")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5 steps")
    parser.add_argument("--gpu", action="store_true", help="on CUDA: PyTorch, nnscratch on "
                        "cupy and on torch")
    parser.add_argument("--results", help="the JSON results file (default bench/results/)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 2, 5
    import torch

    load_at_start = load_average()
    note = limit_threads(args.threads)
    if note:
        print_flush(note)
    rng = np.random.default_rng(0)
    X = rng.random((args.steps * BATCH, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, args.steps * BATCH).astype(np.int64)
    rows, results = [], []
    for name in args.networks.split(","):
        build = NETWORKS[name]
        nn.seed(0)
        device = "cuda" if args.gpu else "cpu"
        reference = torch_copy(torch, build()).to(device)
        sync = torch.cuda.synchronize if args.gpu else (lambda: None)
        candidates = [Candidate(
            f"PyTorch {'CUDA' if args.gpu else 'CPU'} eager", torch_trainer(
                torch, reference, torch.as_tensor(X, device=device),
                torch.as_tensor(y, device=device), args.steps), args.steps, sync)]
        for backend, where in ([("cupy", None), ("torch", "cuda")] if args.gpu
                               else [("numpy", None), ("torch", None)]):
            with nn.use_backend(backend, device=where):
                wait = nn.get_backend().synchronize
            candidates.append(Candidate(f"nnscratch {backend}", nnscratch_trainer(
                backend, build, X, y, where), args.steps, wait))
        for candidate in candidates:  # warm-up, untimed
            candidate.run()
        run_interleaved(candidates, args.rounds, print_flush)
        ops = count_ops(build, 2 if args.quick else 20)  # on the CPU: the same count
        base = candidates[0].seconds
        for candidate in candidates:
            times = spread([1e3 * s for s in candidate.seconds])
            versus = ratio(candidate.seconds, base)
            counted = ops["pytorch"] if candidate is candidates[0] else \
                ops["nnscratch"] if candidate.name.endswith(("torch", "cupy")) else None
            rows.append([name, candidate.name, format_range(times, 1),
                         format_range(versus, 2), "-" if counted is None else f"{counted:g}"])
            results.append({"network": name, "implementation": candidate.name,
                            "ms_per_step": times, "ratio_to_pytorch": versus,
                            "ops_per_step": counted})
    print(table(["network", "implementation", "ms/step [min-max]", "× PyTorch [min-max]",
                 "ops/step"], rows, align_left=2))
    path = args.results or default_results_path()
    write_results(__import__("pathlib").Path(path), "cnn", {
        "date": now(), "batch": BATCH, "rounds": args.rounds, "steps": args.steps,
        "threads": args.threads, "gpu": args.gpu, "rows": results, "environment": environment(
            load_at_start=load_at_start)})
    print_flush(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
