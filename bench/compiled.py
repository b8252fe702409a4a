"""nnscratch on JAX, its training step compiled (``fit(compile=True)``), against PyTorch
eager and against what a JAX user would write (the same network with ``jax.grad`` and
optax, the step under ``jax.jit``), in one run, rounds interleaved (see common.py).

Every timed run starts from a fresh model and a fresh ``jax.jit``: **compile time is
included**, as a user meets it. Two workloads:

* MNIST MLP 784-256-128-10 (ReLU, softmax cross-entropy, Adam lr 1e-3), ``--epochs`` (5)
  shuffled epochs at batch 128 over the 60,000 training images;
* XOR 2-4-1 (sigmoid, binary cross-entropy, SGD lr 0.3), ``--xor-epochs`` (10,000)
  full-batch epochs: nnscratch runs them as one compiled loop (``lax.scan``), and so does
  the anchor. nnscratch asks XLA for a quick compile there (``nnscratch.compile.
  QUICK_COMPILE``: the loop's arithmetic is less than its compile); on a CPU a fourth row
  gives the anchor the same options, so that the table shows what they are worth.

    python bench/compiled.py                 # both, 3 rounds
    python bench/compiled.py --rounds 5 --skip-mnist

``torch.compile`` is not a row: see bench/README.md ("JAX and compiled steps").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import mlp  # noqa: E402
import xor  # noqa: E402

import nnscratch as nn  # noqa: E402
from nnscratch import compile as compiling  # noqa: E402

TARGET_MNIST = 1.5  # x faster than PyTorch eager, compile included
TARGET_XOR = 10.0
TARGET_ANCHOR = 1.1  # at most this many times the jax.grad + optax anchor's time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--xor-epochs", type=int, default=10_000)
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--skip-xor", action="store_true")
    parser.add_argument("--data", default=None)
    parser.add_argument("--device", default="cpu", help="jax and torch device (cpu, cuda)")
    parser.add_argument("--output", default=None, help="a JSON results file")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import jax
    import torch

    nn.use_backend("jax", device=args.device)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    results: dict[str, Any] = {"environment": common.environment(), "rounds": args.rounds,
                               "load_average_before": common.load_average()}
    if not args.skip_mnist:
        results["mnist"] = mnist_rows(args, jax, torch)
    if not args.skip_xor:
        results["xor"] = xor_rows(args, jax, torch)
    results["load_average_after"] = common.load_average()
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1, default=str))


# -- MNIST -----------------------------------------------------------------------------


def mnist_rows(args: argparse.Namespace, jax: Any, torch: Any) -> dict[str, Any]:
    import optax

    jnp = jax.numpy
    X_host, y_host, source = mlp.load_data(args.data, download=False)
    initial = mlp.initial_weights()
    backend = nn.get_backend()
    X, y = backend.asarray(X_host, dtype="float32"), backend.asarray(y_host.astype(np.int64))
    torch_device = "cuda" if args.device.startswith("cuda") else "cpu"
    X_torch = torch.from_numpy(X_host).to(torch_device)
    y_torch = torch.from_numpy(y_host.astype(np.int64)).to(torch_device)
    batch, epochs, samples = args.batch, args.epochs, X_host.shape[0]
    finals: dict[str, float] = {}

    def nnscratch_fit() -> None:
        nn.seed(mlp.SEED)
        model = mlp.build_model(initial)
        history = model.fit(X, y, loss=nn.SoftmaxCrossEntropy(), optimizer=nn.Adam(lr=mlp.LR),
                            epochs=epochs, batch_size=batch, seed=mlp.SEED, compile=True)
        finals["nnscratch"] = history.history["loss"][-1]

    def pytorch_eager() -> None:
        model = mlp.torch_model(torch, initial, torch_device)
        optimizer = torch.optim.Adam(model.parameters(), lr=mlp.LR)
        for _ in range(epochs):
            total, _ = mlp.torch_epoch(torch, model, optimizer, X_torch, y_torch, batch)
        finals["pytorch"] = total * batch / samples

    def anchor() -> None:
        """What a JAX user writes: value_and_grad of the loss, optax.adam, the step under
        jax.jit, the epoch's shuffle gathered once and each batch sliced in the step."""
        params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in initial]
        optimizer = optax.adam(mlp.LR)
        state = optimizer.init(params)

        def loss_of(params: Any, xb: Any, yb: Any) -> Any:
            h = xb
            for w, b in params[:-1]:
                h = jax.nn.relu(h @ w + b)
            w, b = params[-1]
            logits = h @ w + b
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            return loss, jnp.sum(jnp.argmax(logits, axis=1) == yb)

        def step(params: Any, state: Any, Xs: Any, ys: Any, start: Any, size: int) -> Any:
            xb = jax.lax.dynamic_slice_in_dim(Xs, start, size)
            yb = jax.lax.dynamic_slice_in_dim(ys, start, size)
            (loss, correct), grads = jax.value_and_grad(loss_of, has_aux=True)(params, xb, yb)
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss, correct

        jitted = jax.jit(step, donate_argnums=(0, 1), static_argnums=(5,))
        rng = nn.random.make_generator(mlp.SEED, "shuffle")
        for _ in range(epochs):
            order = jnp.asarray(nn.random.permutation(samples, rng))
            Xs, ys = jnp.take(X, order, axis=0), jnp.take(y, order, axis=0)
            losses = []
            for start in range(0, samples, batch):
                params, state, loss, _ = jitted(params, state, Xs, ys, start,
                                                min(batch, samples - start))
                losses.append(loss)
            finals["anchor"] = float(jnp.mean(jnp.stack(losses)))

    def sync() -> None:
        jax.effects_barrier()

    candidates = [
        common.Candidate("nnscratch jax fit(compile=True)", nnscratch_fit, 1, sync),
        common.Candidate("PyTorch eager (Adam)", pytorch_eager, 1),
        common.Candidate("jax.grad + optax under jax.jit (anchor)", anchor, 1, sync),
    ]
    return report(f"MNIST MLP 784-256-128-10, {epochs} epochs at batch {batch} ({source}), "
                  "fresh model and compile included, seconds per run", candidates, args.rounds,
                  TARGET_MNIST, finals)


# -- XOR -------------------------------------------------------------------------------


def xor_rows(args: argparse.Namespace, jax: Any, torch: Any) -> dict[str, Any]:
    import optax

    jnp = jax.numpy
    initial = xor.initial_weights()
    backend = nn.get_backend()
    X, y = backend.asarray(xor.X_XOR), backend.asarray(xor.Y_XOR)
    epochs, finals = args.xor_epochs, {}

    def nnscratch_fit() -> None:
        model = xor.build_model()
        dense = [layer for layer in model.layers if isinstance(layer, nn.Dense)]
        for layer, (weight, bias) in zip(dense, initial):
            layer.weight.value = backend.asarray(weight, dtype="float32", copy=True)
            layer.bias.value = backend.asarray(bias, dtype="float32", copy=True)
        history = model.fit(X, y, loss=nn.BinaryCrossEntropy(), optimizer=nn.SGD(lr=xor.LR),
                            epochs=epochs, batch_size=None, compile=True)
        finals["nnscratch"] = history.history["loss"][-1]

    def pytorch_autograd() -> None:
        (W1, b1), (W2, b2) = initial
        params = [torch.tensor(a, requires_grad=True) for a in (W1, b1, W2, b2)]
        Xt, yt = torch.from_numpy(xor.X_XOR), torch.from_numpy(xor.Y_XOR)
        optimizer = torch.optim.SGD(params, lr=xor.LR)
        for _ in range(epochs):
            h = torch.sigmoid(Xt @ params[0] + params[1])
            p = torch.sigmoid(h @ params[2] + params[3])
            loss = torch.nn.functional.binary_cross_entropy(p, yt)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        finals["pytorch"] = float(loss)

    def anchor(options: dict[str, Any] | None = None) -> None:
        """jax.grad + optax.sgd, the epochs as one lax.scan under jax.jit (compiled with
        XLA's ``options``)."""
        params = [jnp.asarray(a) for pair in initial for a in pair]
        optimizer = optax.sgd(xor.LR)

        def loss_of(params: Any) -> Any:
            W1, b1, W2, b2 = params
            p = jax.nn.sigmoid(jax.nn.sigmoid(X @ W1 + b1) @ W2 + b2)
            p = jnp.clip(p, 1e-7, 1 - 1e-7)
            return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log(1 - p))

        def epoch(carry: Any, _: Any) -> Any:
            params, state = carry
            loss, grads = jax.value_and_grad(loss_of)(params)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        run = jax.jit(lambda params, state: jax.lax.scan(epoch, (params, state), None,
                                                        length=epochs),
                      compiler_options=options)
        _, losses = run(params, optimizer.init(params))
        finals["anchor" if options is None else "anchor, quick"] = float(losses[-1])

    candidates = [
        common.Candidate("nnscratch jax fit(compile=True)", nnscratch_fit, 1),
        common.Candidate("PyTorch autograd (SGD)", pytorch_autograd, 1),
        common.Candidate("jax.grad + optax, lax.scan under jax.jit (anchor)", anchor, 1),
    ]
    if args.device == "cpu":  # what nnscratch asks XLA for, given to the anchor too
        candidates.append(common.Candidate(
            "the anchor with nnscratch's QUICK_COMPILE options",
            lambda: anchor(compiling.QUICK_COMPILE), 1))
    return report(f"XOR 2-4-1, {epochs} full-batch epochs, fresh model and compile included, "
                  "seconds per run", candidates, args.rounds, TARGET_XOR, finals)


# -- the table -------------------------------------------------------------------------


def report(title: str, candidates: list[common.Candidate], rounds: int, target: float,
           finals: dict[str, float]) -> dict[str, Any]:
    for candidate in candidates:  # warm-up: imports, first allocations, XLA's own start
        candidate.run()
    common.run_interleaved(candidates, rounds, progress=common.print_flush)
    ours, pytorch, anchor, *_ = candidates
    vs_pytorch = common.ratio(pytorch.seconds, ours.seconds)
    vs_anchor = common.ratio(ours.seconds, anchor.seconds)
    common.print_flush(f"\n{title}")
    for candidate in candidates:
        s = common.spread(candidate.seconds)
        common.print_flush(f"  {candidate.name:<52} {s['median']:7.2f} s "
                           f"[{s['min']:.2f}-{s['max']:.2f}]")
    common.print_flush(
        f"  nnscratch x faster than PyTorch: {vs_pytorch['median']:.2f} "
        f"[{vs_pytorch['min']:.2f}-{vs_pytorch['max']:.2f}] (target >= {target:g}: "
        f"{'PASS' if vs_pytorch['median'] >= target else 'not met'})")
    common.print_flush(
        f"  nnscratch time / anchor time: {vs_anchor['median']:.2f} "
        f"[{vs_anchor['min']:.2f}-{vs_anchor['max']:.2f}] (target <= {TARGET_ANCHOR:g}: "
        f"{'PASS' if vs_anchor['median'] <= TARGET_ANCHOR else 'not met'})")
    results = {"title": title, "seconds": {c.name: common.spread(c.seconds) for c in candidates},
               "x_faster_than_pytorch": vs_pytorch, "time_over_anchor": vs_anchor,
               "final_losses": finals}
    for other in candidates[3:]:  # the anchor under nnscratch's compiler options
        vs_other = common.ratio(ours.seconds, other.seconds)
        common.print_flush(f"  nnscratch time / the quick-compiled anchor's: "
                           f"{vs_other['median']:.2f} "
                           f"[{vs_other['min']:.2f}-{vs_other['max']:.2f}]")
        results[f"time_over: {other.name}"] = vs_other
    common.print_flush(f"  final losses: {finals}")
    return results


if __name__ == "__main__":
    main()
