"""The digit recognizer: a multilayer perceptron trained on MNIST, from scratch.

    python examples/mnist.py                             # train: ~98.5% in 10 epochs
    python examples/mnist.py --dataset fashion-mnist     # clothes instead of digits
    python examples/mnist.py --model cnn                 # a convolutional network (nn.cnn)
    python examples/mnist.py --predict my_digit.png      # read your own digit
    python examples/mnist.py --resume mnist-interrupted.safetensors    # after a Ctrl-C
    python examples/mnist.py --augment                   # distorted digits: 99.3%
    mpiexec -n 2 python examples/mnist.py      # two processes, one model, data-parallel

784-512-256-10, ReLU, Adam (lr 1e-3 along a cosine to 0, batches of 128), 10 epochs; the
last 5,000 training images validate. ``--data DIR`` (or ``$NNSCRATCH_DATA``) is used as
it is or the run stops; else the per-user cache, downloaded into (failing that, loudly,
the 8x8 digits). The run is saved at every epoch's end: Ctrl-C keeps every finished
epoch, and ``--resume`` ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np

import nnscratch as nn
from nnscratch import datasets, images
from nnscratch.checkpoint import read_settings
from nnscratch.errors import CheckpointError, ConfigError, NNScratchError

DEFAULT_SAVE, INTERRUPTED = "digits.safetensors", "mnist-interrupted.safetensors"
EXIT_FAILURE, EXIT_INTERRUPTED = 1, 130  # 130: the shell's code for "ended by Ctrl-C"
VALIDATION = 5000


def number(kind, low=0, high=math.inf):  # an argparse type: a number in (low, high)
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low < value < high:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__} in ({low}, {high}), "
                                             f"got {text!r}")
        return value
    return parse


def widths(text):
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError("--hidden takes positive layer widths separated by "
                                         f"commas, e.g. 512,256; got {text!r}")
    return sizes


switch = {"True": True, "False": False}.get  # an on/off flag's value, as a run saves it


def dataset_name(text):
    if text not in datasets.DATASETS:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(datasets.DATASETS)}")
    return text


SETTINGS = {  # saved with the run and kept on resume: the flag's type, default and help
    "dataset": (dataset_name, "mnist", ", ".join(datasets.DATASETS)),
    "model": (lambda text: {"mlp": "mlp", "cnn": "cnn"}[text], "mlp",
              "mlp, or cnn: nn.cnn's convolutional network, trained as nn.CNN_TRAINING says"),
    "hidden": (widths, [512, 256], "hidden layer widths"),
    "epochs": (number(int), 10, "epochs to train"),
    "batch_size": (number(int), 128, "samples per step"),
    "lr": (number(float), 1e-3, "Adam's initial rate, decayed along a cosine to 0"),
    "seed": (number(int, -1), 0, "seed of the initial weights and the shuffles"),
    "limit": (number(int), None, "train on the first N samples only"),
    "augment": (switch, False, "distort the training digits (nn.augment.mnist_recipe: "
                "its own network, epochs and rate)"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="mnist.py", description="Train a from-scratch MLP "
                                     "on MNIST, or read your own digit with --predict.")
    backend = os.environ.get("NNSCRATCH_BACKEND", "").strip().lower() or "numpy"
    parser.add_argument("--backend", choices=nn.BACKENDS, default=backend,
                        help=f"array library (default $NNSCRATCH_BACKEND or numpy: {backend})")
    parser.add_argument("--device", help="e.g. cuda:1 (default $NNSCRATCH_DEVICE)")
    for key, (kind, default, text) in SETTINGS.items():
        parser.add_argument("--" + key.replace("_", "-"), help=f"{text} (default {default})",
                            **({"action": "store_const", "const": True} if kind is switch
                               else {"type": kind}))
    parser.add_argument("--data", metavar="DIR", help="the folder of the dataset's files")
    parser.add_argument("--no-download", action="store_true", help="never download")
    parser.add_argument("--save", metavar="PATH", help=f"the model and run (default "
                        f"{DEFAULT_SAVE}; {INTERRUPTED} until the run ends)")
    parser.add_argument("--resume", metavar="PATH", help="continue a saved run")
    parser.add_argument("--plots", metavar="DIR", help="write the learning curves, the "
                        "confusion matrix and the misclassified test images there")
    parser.add_argument("--predict", metavar="IMAGE", help="read your own digit")
    parser.add_argument("--min-accuracy", type=number(float, -1e-9, 1 + 1e-9), metavar="X",
                        help="exit 1 if the test accuracy is below X (CI uses 0.98)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def select_backend(args):
    """--backend and --device ($NNSCRATCH_DEVICE if $NNSCRATCH_BACKEND names the same)."""
    device = args.device
    if device is None and os.environ.get("NNSCRATCH_BACKEND", "numpy").lower() == args.backend:
        device = os.environ.get("NNSCRATCH_DEVICE") or None
    return nn.use_backend(args.backend, device=device).backend


def resolve_settings(args, saved=None):
    """The defaults overridden by the flags; on resume, the run's own settings, checked
    as the flags are, which the flags may not change (but --epochs: train on, or stop)."""
    given = {key: getattr(args, key) for key in SETTINGS if getattr(args, key) is not None}
    if saved is None:
        recipe = nn.augment.mnist_recipe().settings if given.get("augment") else {}
        cnn = nn.CNN_TRAINING if given.get("model") == "cnn" else {}
        return {**{key: default for key, (_, default, _) in SETTINGS.items()}, **recipe, **cnn,
                **given}
    saved = {"augment": False, "model": "mlp", **saved}  # saved before these flags existed
    try:
        if set(saved) != set(SETTINGS):
            raise ValueError(f"keys {sorted(saved)}")
        for key, (kind, _, _) in SETTINGS.items():
            if saved[key] is not None or key != "limit":
                text = ",".join(map(str, saved[key])) if key == "hidden" else str(saved[key])
                if kind(text) != saved[key]:
                    raise ValueError(f"{key} {saved[key]!r}")
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        raise CheckpointError(f"{args.resume}: its settings are not valid ({exc}); the file "
                              "was edited: start a new run") from exc
    conflicts = [f"--{key.replace('_', '-')} {value} (the run has {saved[key]})"
                 for key, value in given.items() if key != "epochs" and value != saved[key]]
    if conflicts:
        raise ConfigError(f"cannot resume with other settings: {'; '.join(conflicts)}. Drop "
                          "these flags to continue the run, or start a new one without --resume")
    return {**saved, **given}


def check_replacing(path, dataset, inputs):
    """Say so before a model of another dataset or input width is replaced."""
    try:
        saved = (read_settings(path).get("dataset", "?"), nn.load(path).in_features)
    except NNScratchError:
        saved = ("an unreadable file", "?")
    if path.is_file() and saved != (dataset, inputs):
        print(f"note: {path} holds a model of {saved[0]} ({saved[1]} inputs); this run "
              f"replaces it with one of {dataset} ({inputs} inputs)")


def run(args, callbacks=()):
    """Train (or resume), save, plot, and print the test accuracy last. Under MPI,
    --batch-size is the global batch, and rank 0 alone prints and writes."""
    comm = nn.distributed.init()  # rank 0 of 1 without MPI
    if comm.size > 1:
        print(comm.describe())  # e.g. "2 ranks × 1 thread": each rank its share of the cores
    resumed = nn.resume(args.resume) if args.resume else None
    settings = resolve_settings(args, resumed and resumed.settings)
    dataset = datasets.load(settings["dataset"], args.data, download=not args.no_download,
                            fallback=None if args.dataset or args.resume else "digits",
                            interface=datasets.COMMAND_LINE)  # messages name --data
    backend = nn.get_backend()
    side, cnn = math.isqrt(dataset.x_train.shape[1]), settings["model"] == "cnn"
    shape = (-1, 1, side, side) if cnn else (-1, side * side)  # a CNN takes (N, 1, H, W)
    x_train, y_train, x_val, y_val, x_test, y_test = (
        backend.asarray(part.reshape(shape) if part.ndim == 2 else part) for part in
        (*dataset.split(VALIDATION, settings["limit"]), dataset.x_test, dataset.y_test))
    recipe = nn.augment.mnist_recipe() if settings["augment"] else None
    x_train = recipe.images(x_train) if recipe and not cnn else x_train  # (N, 28, 28)
    sizes = [dataset.x_train.shape[1], *settings["hidden"], dataset.num_classes]
    if resumed:
        model, optimizer, start = resumed.model, resumed.optimizer, resumed.epoch
        dense = [layer for layer in model.layers if isinstance(layer, nn.Dense)]
        if [dense[0].in_features] + [layer.out_features for layer in dense] != sizes and not cnn:
            raise CheckpointError(f"{args.resume} holds a network that is not the "
                                  f"{'-'.join(map(str, sizes))} of its settings")
    else:
        nn.seed(settings["seed"])
        model = nn.cnn((1, side, side), dataset.num_classes) if cnn else \
            recipe.model(sizes) if recipe else nn.mlp(sizes)
        optimizer, start = nn.Adam(lr=settings["lr"]), 0
    saving = dataset.fallback_reason is None  # a stand-in dataset's model is never saved
    writing = saving and comm.rank == 0
    final = Path(args.save or DEFAULT_SAVE)
    checkpoint = nn.Checkpoint(args.save or INTERRUPTED, settings=settings)
    plots = [Path(args.plots) / "learning_curves.png"] if args.plots else []
    for path in [final, checkpoint.path, *plots] if saving else plots:
        nn.io.check_writable(path)  # every file the run writes, checked before it starts
    if saving:
        check_replacing(final, settings["dataset"], model.in_features)
    print(f"{dataset.name}: {x_train.shape[0]:,} training, {x_val.shape[0]:,} validation, "
          f"{x_test.shape[0]:,} test samples (from {dataset.source})")
    print(f"backend {backend}; {model.parameter_count():,} parameters ("
          f"{'cnn' if cnn else '-'.join(map(str, sizes))}); Adam lr {settings['lr']:g} (cosine "
          f"decay), batch {settings['batch_size']}, {settings['epochs']} epochs, seed "
          f"{settings['seed']}" + ("; training digits distorted (nn.augment.mnist_recipe)"
                                   if recipe else ""))
    if resumed:
        print(f"resuming {args.resume} after epoch {start}")
        checkpoint.resumed_from(resumed)
    progress = nn.ProgressBar(per_step=not args.quiet and sys.stderr.isatty() and not comm.rank)
    try:
        history = model.fit(
            x_train, y_train, loss=nn.SoftmaxCrossEntropy(), optimizer=optimizer,
            epochs=settings["epochs"], batch_size=settings["batch_size"],
            seed=settings["seed"], validation_data=(x_val, y_val), initial_epoch=start,
            schedule=nn.CosineDecay(settings["epochs"]), communicator=comm,
            augment=recipe and recipe.transform,
            callbacks=[checkpoint, *callbacks, progress] if writing else [*callbacks, progress])
    except KeyboardInterrupt:
        progress.close()
        return interrupted(checkpoint, settings, resumed)
    if writing:
        checkpoint.path = str(final)
        checkpoint.save()
        if args.save is None and Path(INTERRUPTED).is_file():
            os.unlink(INTERRUPTED)  # the run is complete: its in-progress file is done with
        print(f"saved the model to {final} (read your own digit: python examples/mnist.py "
              f"--predict IMAGE --save {final})")
    elif not saving:
        print(f"the model is not saved: it learnt {dataset.name}, not {settings['dataset']}")
    accuracy = model.evaluate(x_test, y_test, communicator=comm)["accuracy"]
    if args.plots and comm.rank == 0:
        from nnscratch.plots import plot_training_run

        predicted = nn.to_numpy(backend.xp.argmax(model.predict(x_test), axis=1))
        written = plot_training_run(args.plots, checkpoint.history if saving else history,
                                    dataset.x_test, dataset.y_test, predicted,
                                    dataset.class_names, augment=recipe and recipe.transform)
        print("plots: " + ", ".join(written))
    print(f"test accuracy: {accuracy:.4f}", flush=True)
    if args.min_accuracy is not None:
        if not saving:
            print(f"error: --min-accuracy {args.min_accuracy:g} is a target for "
                  f"{settings['dataset']}, and this run trained on {dataset.name} because "
                  "it is unavailable (see above): failing on purpose", file=sys.stderr)
            return EXIT_FAILURE
        if accuracy < args.min_accuracy:
            print(f"error: the test accuracy {accuracy:.4f} is below --min-accuracy "
                  f"{args.min_accuracy:g}", file=sys.stderr)
            return EXIT_FAILURE
    return 0


def interrupted(checkpoint, settings, resumed):
    """Ctrl-C: say where the last finished epoch is kept and how to carry on."""
    if checkpoint.last_saved is not None:
        where, epoch = checkpoint.path, checkpoint.last_saved
    elif resumed:
        where, epoch = resumed.path, resumed.epoch
    else:
        print("\ninterrupted before the first epoch finished: nothing to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"\ninterrupted: {where} holds the state after epoch {epoch} of "
          f"{settings['epochs']}\nresume with: python examples/mnist.py --resume {where}",
          file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


def predict(args):
    """--predict IMAGE: what a trained model reads in your picture (top 3 classes)."""
    path = args.resume or args.save or DEFAULT_SAVE
    if not Path(path).is_file():
        raise CheckpointError(f"no trained model at {path}: train one first (python "
                              f"examples/mnist.py --save {path}), or name it with --save PATH")
    _, probabilities = images.classify(nn.load(path), images.read_image(args.predict))
    spec = datasets.DATASETS.get(read_settings(path).get("dataset"), datasets.DATASETS["mnist"])
    top = [(spec.class_names[k], probabilities[k]) for k in np.argsort(-probabilities)[:3]]
    print(f"{args.predict}: read with {path} ({spec.title})")
    print("top 3: " + ", ".join(f"{label} ({share:.1%})" for label, share in top))
    print(f"predicted: {top[0][0]} ({top[0][1]:.1%})")
    return 0


def main(argv=None, callbacks=()):
    """The command line; returns the exit code. ``callbacks`` go to ``fit`` (the tests
    interrupt a run with one)."""
    args, handler = parse_args(argv), None
    try:
        select_backend(args)
        if nn.distributed.init().rank:  # after the backend (one GPU per MPI rank)
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - rank 0 alone prints
        elif threading.current_thread() is threading.main_thread():  # Ctrl-C interrupts,
            handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # always
        return predict(args) if args.predict else run(args, callbacks)
    except NNScratchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:  # outside training (loading data, saving): nothing to keep
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)


if __name__ == "__main__":
    sys.exit(nn.distributed.run(main))  # a failure on one MPI rank ends them all
