"""Sequential: a stack of layers, and the training loop.

Forward propagation runs the layers in order; backpropagation runs their backward
passes in reverse, each turning ``∂L/∂(its output)`` into ``∂L/∂(its input)`` (the
chain rule, one layer at a time). ``fit`` is the mini-batch gradient-descent loop of
the course notes:

    for each epoch:
        shuffle the samples (seeded, on the host; the data stays on the device)
        for each batch (xb, yb):
            out = forward(xb);  L = loss(out, yb) + penalties
            backward(∂L/∂out);  optimizer.step(parameters)

``batch_size=None`` is batch gradient descent (one step per epoch over all samples),
``batch_size=1`` stochastic gradient descent.

Given a ``communicator`` of N > 1 processes (``nnscratch.distributed``), ``fit`` trains
one model data-parallel: ``batch_size`` is the global batch, each rank computes the
gradient on its share of it, and one all-reduce of ∇θ per step gives every rank the
gradient of the whole batch, so every rank takes the step one process would take.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable, Sequence
from typing import Any

from . import compile as compiling
from . import distributed, random
from .activations import get_activation
from .backend import get_backend, namespace, to_numpy, traced
from .callbacks import Callback, History, ProgressBar
from .data import (
    check_batch_size,
    forward_input,
    prepare_features,
    prepare_targets,
    train_validation_split,
)
from .distributed import Communicator
from .errors import ConfigError, DivergenceError
from .layers import Dense, Flatten, Layer, check_model, parameters_placement
from .losses import Loss
from .metrics import class_predictions, correct_count, expected_predictions
from .optim import Optimizer, Schedule
from .parameters import Parameters, ParameterVector, pack


class Sequential:
    """Layers applied one after the other: ``Sequential(Dense(2, 4), Sigmoid(), ...)``."""

    def __init__(self, *layers: Layer) -> None:
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for layer in layers:
            if not isinstance(layer, Layer):
                raise ConfigError(f"Sequential takes layers, got {layer!r}")
        parameters_placement(layers)  # BackendError for layers built under two backends
        self.layers: list[Layer] = list(layers)
        self.loss: Loss | None = None
        self.stop_training = False
        self._vector: ParameterVector | None = None
        self.parameters()  # lay the parameters out as one vector θ (see parameters.py)

    # -- the parts -----------------------------------------------------------------------

    def add(self, layer: Layer) -> Sequential:
        if not isinstance(layer, Layer):
            raise ConfigError(f"Sequential takes layers, got {layer!r}")
        self.layers.append(layer)
        self.parameters()
        return self

    def __getstate__(self) -> dict[str, Any]:
        """The model's attributes, less the compiled evaluation it may keep (XLA's
        executables are not pickled; the next evaluation compiles again)."""
        state = dict(self.__dict__)
        state.pop("_evaluation", None)
        return state

    def parameters(self) -> Parameters:
        """Every trainable parameter, in layer order (each Dense: weight, then bias).

        Their values are windows of one flat vector θ, and their gradients of one ∇θ
        (``.vector``; None where the backend cannot share memory between them), laid out
        again if the layers have changed since the last call.
        """
        members = [param for layer in self.layers for param in layer.parameters()]
        vector = self._vector
        if vector is None or vector.parameters != members or not vector.holds_all():
            vector = self._vector = pack(members)
        # the parameters' array type: an input of that type goes straight to the layers
        self._array_type = type(members[0].value) if members else None
        return Parameters(members, vector)

    @property
    def in_features(self) -> int | None:
        """The number of values per sample the model takes, where its first layer that
        changes widths tells it (a ``Dense``, after only layers that keep the size such
        as ``Flatten`` or activations); None where no layer fixes it."""
        for layer in self.layers:
            if hasattr(layer, "in_features"):
                return layer.in_features
            if not layer.keeps_size:
                return None
        return None

    @property
    def takes_images(self) -> bool:
        """True when the model takes batches of images, (N, H, W) or (N, C, H, W): its
        first layer that is not elementwise does (``Flatten``, a convolution)."""
        for layer in self.layers:
            if isinstance(layer, Flatten) or not (layer.keeps_size and layer.takes_images):
                return layer.takes_images
        return False

    @property
    def out_features(self) -> int | None:
        """Output width of the last layer that sets one (the number of classes)."""
        for layer in reversed(self.layers):
            if hasattr(layer, "out_features"):
                return layer.out_features
        return None

    @property
    def dtype(self) -> str:
        for layer in self.layers:
            if hasattr(layer, "dtype"):
                return layer.dtype
        return "float32"

    def parameter_count(self) -> int:
        return sum(math.prod(param.shape) for param in self.parameters())

    def summary(self) -> str:
        """A table of the layers, their output widths and parameter counts."""
        lines = [f"{'layer':<36}{'parameters':>12}"]
        for layer in self.layers:
            params = sum(math.prod(p.shape) for p in layer.parameters())
            lines.append(f"{layer!r:<36}{params:>12,}")
        lines.append(f"{'total':<36}{self.parameter_count():>12,}")
        return "\n".join(lines)

    def config(self) -> list[dict[str, Any]]:
        """The architecture as plain data: ``[{"type": "Dense", "config": {...}}, ...]``."""
        return [{"type": type(layer).__name__, "config": layer.config()} for layer in self.layers]

    def __repr__(self) -> str:
        inner = ",\n".join(f"    {layer!r}" for layer in self.layers)
        return f"Sequential(\n{inner}\n)"

    # -- propagation ---------------------------------------------------------------------

    def forward(self, x: Any, training: bool = False) -> Any:
        if type(x) is not self._array_type and not traced(x):
            x = forward_input(x, self)  # host data moved in, another library's refused
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    __call__ = forward

    def backward(self, grad_output: Any, need_input_grad: bool = True) -> Any:
        """Backpropagate ``∂L/∂output`` through every layer, filling each parameter's
        ``.grad``; returns ``∂L/∂input`` (None with ``need_input_grad=False``, which
        spares the first layer's product with its weights)."""
        return self._backward_from(len(self.layers) - 1, grad_output, need_input_grad)

    def backward_loss(self, loss: Loss, need_input_grad: bool = True) -> Any:
        """Backpropagate the gradient of ``loss``'s last forward, as ``fit`` does.

        Where the network ends in the activation a loss pairs with (Sigmoid before
        ``BinaryCrossEntropy``, Softmax before ``CategoricalCrossEntropy``) the chain
        rule through that activation collapses, e.g. ``∂L/∂z = (p − y) / N``: the loss
        hands that straight to the layer below (``Loss.fused_backward``). Otherwise this
        is ``backward(loss.backward())``, the notes' loop.
        """
        gradient = loss.fused_backward(self.layers[-1]) if self.layers else None
        if gradient is None:
            return self.backward(loss.backward(), need_input_grad)
        return self._backward_from(len(self.layers) - 2, gradient, need_input_grad)

    def _backward_from(self, last: int, grad_output: Any, need_input_grad: bool) -> Any:
        """Backpropagate through layers ``last``, ``last − 1``, ..., 0."""
        for index in range(last, -1, -1):
            needed = need_input_grad or index > 0
            grad_output = self.layers[index].backward(grad_output, needed)
        return grad_output

    def _penalized(self) -> bool:
        return any(getattr(layer, "l1", 0) or getattr(layer, "l2", 0) for layer in self.layers)

    def regularization_loss(self) -> Any:
        penalty = 0.0
        for layer in self.layers:
            penalty = penalty + layer.regularization_loss()
        return penalty

    # -- training ------------------------------------------------------------------------

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        loss: Loss,
        optimizer: Optimizer,
        epochs: int = 1,
        batch_size: int | None = 32,
        seed: int | None = None,
        shuffle: bool = True,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float = 0.0,
        callbacks: list[Callback] | tuple[Callback, ...] = (),
        schedule: Schedule | None = None,
        verbose: int = 0,
        initial_epoch: int = 0,
        communicator: Communicator | None = None,
        augment: Callable[[Any], Any] | None = None,
        compile: bool | str = "auto",
    ) -> History:
        """Train with mini-batch gradient descent; returns the ``History``.

        ``seed`` fixes the shuffles (default: the ``nn.seed`` stream). ``verbose=1``
        prints a line per epoch, ``verbose=2`` adds a progress bar within each epoch.
        The loss is checked once per epoch: a NaN or infinite loss raises
        ``DivergenceError`` naming the epoch and the first bad step.

        ``initial_epoch`` resumes a run (see ``nnscratch.checkpoint``): epochs
        ``initial_epoch`` .. ``epochs − 1`` are trained, with the shuffles and learning
        rates those epochs have in a run from 0.

        ``communicator`` (``nn.distributed.init()``) of N > 1 ranks: every rank calls fit
        with the same model, data and settings (checked: else ``ConfigError``); θ starts
        as rank 0's; ``batch_size`` is the global batch, rank r training on rows
        ⌊r·B/N⌋ .. ⌊(r+1)·B/N⌋ − 1 of each (``ConfigError`` if a batch has fewer samples
        than there are ranks); the epoch's loss and accuracy, and validation, are those
        of all ranks together. Only rank 0 shows progress (``verbose``); callbacks run on
        every rank (``info["rank"]`` tells them which), and if one asks to stop, all stop.

        ``augment`` (e.g. ``nn.augment.RandomAffine(rotation=10)``) is applied to each
        training batch just before the forward pass: a new array each step, so X is never
        changed and validation and test data are never augmented. X must then be images,
        (N, H, W) or (N, C, H, W), for a model that starts with ``nn.Flatten()``. (On N > 1
        ranks each distorts its own rows, drawing from its own copy of the stream: not
        the distortions one process would draw.)

        ``compile``: ``True`` traces the training step (``_train_step``) once per batch
        shape and runs it compiled by the backend's compiler (``jax.jit`` on jax; see
        ``nnscratch.compile``), ``False`` runs it eagerly, ``"auto"`` compiles where a
        compiler pays (jax, on one process) and runs eagerly elsewhere. Compiled and
        eager runs agree to float rounding: same masks, shuffles and learning rates.
        """
        check_model(self, "fit")  # has layers, on the active backend (BackendError)
        if not isinstance(loss, Loss):
            raise ConfigError(f"loss must be a Loss (e.g. nn.SoftmaxCrossEntropy()), got {loss!r}")
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(f"optimizer must be an Optimizer (e.g. nn.Adam()), got {optimizer!r}")
        if isinstance(epochs, bool) or not hasattr(epochs, "__index__") or epochs <= 0:
            raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
        epochs = operator.index(epochs)
        if isinstance(initial_epoch, bool) or not hasattr(initial_epoch, "__index__") \
                or not 0 <= initial_epoch <= epochs:
            raise ConfigError(f"initial_epoch must be an integer from 0 to epochs={epochs}, "
                              f"got {initial_epoch!r}")
        initial_epoch = operator.index(initial_epoch)
        if augment is not None and not callable(augment):
            raise ConfigError(f"augment must be a transform of a batch of images (e.g. "
                              f"nn.augment.RandomAffine(rotation=10)), got {augment!r}")
        X, y = self._prepare(X, y, loss)
        if validation_data is not None and validation_split:
            raise ConfigError("pass validation_data or validation_split, not both")
        if validation_split:
            X, y, X_val, y_val = train_validation_split(X, y, validation_split, seed)
            validation_data = (X_val, y_val)
        elif validation_data is not None:
            validation_data = self._prepare(*validation_data, loss, what="validation ")

        self.loss = loss
        comm = communicator or distributed.LOCAL
        backend = get_backend()
        compiled = compiling.wants_compiling(compile, backend.name, comm.size)
        samples = X.shape[0]
        batch_size = check_batch_size(batch_size, samples)
        steps = -(-samples // batch_size)
        rng = random.make_generator(seed, "shuffle") if seed is not None else None
        base_lr = optimizer.lr
        parameters = self.parameters()
        penalized = self._penalized()  # any L1/L2 terms to add to the loss
        # accuracy counts samples (multiclass) or output elements (binary)
        judged = samples * (1 if loss.task == "multiclass" else self._binary_width())
        # Each step's rows, and (distributed) this rank's positions in the epoch's order
        # and its share n_r / B of each global batch.
        bounds = [(start, min(start + batch_size, samples))  # the standard forbids
                  for start in range(0, samples, batch_size)]  # slicing past the end
        rows, shares = None, None
        if comm.size > 1:
            distributed.check_same_run(comm, self._run_signature(
                X, y, batch_size, epochs, initial_epoch, shuffle, seed, optimizer,
                validation_data))
            rows, bounds, shares = distributed.local_batches(samples, batch_size, comm)
            distributed.broadcast_parameters(comm, parameters)
            distributed.broadcast_states(comm, self.layers)
        step = self._train_step
        if compiled:  # the same step, traced and compiled (see nnscratch.compile)
            step = compiling.JaxStep(self, loss, optimizer, parameters, penalized,
                                     required=compile is True,
                                     steps=_steps_per_size(bounds, epochs - initial_epoch))

        history = History()
        callbacks = [history, *callbacks]
        progress = ProgressBar(per_step=verbose >= 2) if verbose and comm.rank == 0 else None
        if progress is not None:
            callbacks.append(progress)
        info = {"epochs": epochs, "initial_epoch": initial_epoch, "steps": steps,
                "samples": samples, "validation": validation_data is not None,
                "optimizer": optimizer, "loss": loss, "schedule": schedule,
                "rank": comm.rank, "size": comm.size}
        self.stop_training = False
        for callback in callbacks:
            callback.on_train_begin(self, info)
        # Only the hooks a callback overrides are called: a step is microseconds on a
        # small network, and most callbacks ignore most hooks.
        epoch_begin_hooks = _hooks(callbacks, "on_epoch_begin")
        batch_end_hooks = _hooks(callbacks, "on_batch_end")
        shuffled = shuffle and steps > 1  # a full batch needs no shuffle: the mean
        # gradient does not depend on order
        if shuffled and seed is not None:
            for _ in range(initial_epoch):  # the shuffles of the epochs already trained
                random.permutation(samples, rng)
        try:
            if compiled and steps == 1 and callbacks == [history] and validation_data is None \
                    and augment is None:
                # every epoch one full-batch step (e.g. XOR): all of them one compiled loop
                initial_epoch = self._fused_epochs(step, X, y, schedule, base_lr, initial_epoch,
                                                   epochs, history, samples, judged)
            for epoch in range(initial_epoch, epochs):
                if schedule is not None:
                    optimizer.lr = schedule(base_lr, epoch)
                for hook in epoch_begin_hooks:
                    hook(epoch)
                order = random.permutation(samples, rng) if shuffled else None
                if rows is not None:  # this rank's rows of the epoch's global batches
                    order = rows if order is None else order[rows]
                if order is not None:
                    order = backend.asarray(order)
                step_losses, correct = self._train_epoch(
                    X, y, order, bounds, loss, optimizer, parameters, penalized,
                    batch_end_hooks, comm, shares, step, augment)
                losses, correct = _to_host(backend, step_losses, correct)
                if comm.size > 1:
                    losses, correct = distributed.sum_epoch(comm, losses, shares, correct)
                logs = self._epoch_logs(losses, correct, samples, batch_size, judged, epoch,
                                        optimizer.lr)
                if validation_data is not None:
                    scores = self.evaluate(*validation_data, loss=loss, _checked=True,
                                           communicator=comm, compile=compile)
                    logs.update({f"val_{key}": value for key, value in scores.items()})
                for callback in callbacks:
                    callback.on_epoch_end(epoch, logs)
                if comm.size > 1:  # a callback on one rank asking to stop stops them all
                    self.stop_training = comm.allreduce_scalars([self.stop_training])[0] > 0
                if self.stop_training:
                    break
        finally:
            if schedule is not None:  # a later fit starts from the rate the user gave
                optimizer.lr = base_lr
            if progress is not None:  # a display within the epoch ends, even on an error
                progress.close()
        for callback in callbacks:
            callback.on_train_end()
        return history

    def _train_epoch(self, X: Any, y: Any, order: Any, bounds: list[tuple[int, int]],
                     loss: Loss, optimizer: Optimizer, parameters: Parameters,
                     penalized: bool, batch_end_hooks: list[Any], comm: Communicator,
                     shares: list[float] | None, step_function: Any,
                     augment: Callable[[Any], Any] | None = None) -> tuple[list[Any], Any]:
        """One pass over the data: a gradient step per batch, rows ``bounds[step]`` of
        the epoch's order. Returns the steps' losses and the number of correct
        predictions (None for regression; compiled, each step's count), on the device.

        The epoch's shuffle is applied to a run of steps at once (``GATHER_BYTES`` of X),
        so that every step takes a contiguous slice: one gather per run of steps rather
        than two per step (the compiled step, unless augmented, gathers its own rows of
        ``order`` instead). The steps' outputs are kept, and judged against the targets
        once, at the end. On N > 1 ranks, ``order`` holds this rank's rows only, and ∇θ
        is summed over the ranks, weighted by ``shares``, before each step. ``augment``
        makes each batch a new, distorted copy before the forward pass.

        ``step_function`` is ``_train_step``, or the compiled step (``nnscratch.compile``),
        which returns each batch's number of right predictions instead of its outputs.
        """
        xp = namespace(X)
        eager = step_function == self._train_step
        inside = not eager and augment is None  # the compiled step gathers its own rows
        gathered, first = X, 0  # the rows of X the current steps slice, from row `first`
        if order is not None and not inside:
            y = xp.take(y, order, axis=0)
            row_bytes = math.prod(X.shape[1:]) * _itemsize(X)
            runs = _runs_of_steps(bounds, max(1, GATHER_BYTES // row_bytes)) if eager \
                else {0: (0, X.shape[0])}  # compiled, augmented: one gather an epoch
        samples = X.shape[0]
        judging = loss.task != "regression"
        step_losses, step_outputs = [], []
        for step, (start, stop) in enumerate(bounds):
            if order is not None and not inside and step in runs:  # the next run: gather
                first, last = runs[step]
                gathered = xp.take(X, order[first:last], axis=0)
            if eager:
                xb, yb = (X, y) if stop - start == samples else (
                    gathered[start - first:stop - first, ...], y[start:stop, ...])
                if augment is not None:  # a new array: X itself is never changed
                    xb = augment(xb)
                value, outputs = self._train_step(xb, yb, loss, optimizer.step, parameters,
                                                  penalized, comm, shares and shares[step])
            elif augment is not None:  # distorted outside the trace (its draws are the
                # host's), then the compiled step on that batch
                xb = augment(gathered[start - first:stop - first, ...])
                value, outputs = step_function(xb, y[start:stop, ...], 0, stop - start)
            else:  # compiled: the batch's rows of the epoch's order gathered in the step,
                # which returns their number of right predictions, not the outputs
                value, outputs = step_function(X, y, start, stop, order)
            step_losses.append(value)
            if judging:
                step_outputs.append(outputs)
            for hook in batch_end_hooks:
                hook(step, value)
        if not judging:
            return step_losses, None
        if not eager:  # each compiled step's count, added up on the host (_to_host)
            return step_losses, step_outputs
        outputs = step_outputs[0] if len(step_outputs) == 1 else xp.concat(step_outputs, axis=0)
        predicted = class_predictions(outputs, loss.task, loss.threshold)
        expected = expected_predictions(y, loss.task)
        if expected.shape != predicted.shape:  # (n,) binary targets of an (n, 1) output
            expected = xp.reshape(expected, predicted.shape)
        return step_losses, xp.count_nonzero(predicted == expected)

    def _fused_epochs(self, step: Any, X: Any, y: Any, schedule: Schedule | None,
                      base_lr: float, initial_epoch: int, epochs: int, history: History,
                      samples: int, judged: int) -> int:
        """Epochs ``initial_epoch`` .. ``epochs − 1`` of one full-batch step each, run as one
        compiled loop, and their logs given to ``history`` afterwards (it is the only
        callback). Returns the epoch the ordinary loop goes on from: ``epochs`` when done,
        ``initial_epoch`` where the step draws random numbers (one call per step then)."""
        rates = [schedule(base_lr, epoch) if schedule is not None else base_lr
                 for epoch in range(initial_epoch, epochs)]
        done = step.full_batch_epochs(X, y, rates)
        if done is None:
            return initial_epoch
        losses, correct = (to_numpy(array).tolist() for array in done)
        judging = self.loss.task != "regression"
        for index, epoch in enumerate(range(initial_epoch, epochs)):
            logs = self._epoch_logs([losses[index]], correct[index] if judging else None,
                                    samples, samples, judged, epoch, rates[index])
            history.on_epoch_begin(epoch)
            history.on_epoch_end(epoch, logs)
        return epochs

    def _train_step(self, xb: Any, yb: Any, loss: Loss, update: Any, parameters: Parameters,
                    penalized: bool, comm: Communicator = distributed.LOCAL,
                    share: float | None = None) -> tuple[Any, Any]:
        """One step of gradient descent on the batch (xb, yb); returns the batch's loss
        and the network's outputs.

            out = forward(xb);  L = loss(out, yb) + penalties
            backward(∂L/∂out);  [∇θ summed over the ranks];  update(parameters)

        ``update`` is ``optimizer.step`` eagerly, ``optimizer.apply`` in a compiled step
        (whose host part runs outside the trace: see ``nnscratch.compile``, which traces
        this very function).
        """
        outputs = self.forward(xb, training=True)
        value = loss.forward(outputs, yb)
        if penalized:
            value = value + self.regularization_loss()
        self.backward_loss(loss, need_input_grad=False)
        if comm.size > 1:
            distributed.sum_gradients(comm, parameters, share)
        update(parameters)
        return value, outputs

    @staticmethod
    def _epoch_logs(losses: list[float], correct: float | None, samples: int,
                    batch_size: int, judged: int, epoch: int, lr: float) -> dict[str, float]:
        """The epoch's mean loss (and accuracy: ``correct`` of ``judged`` predictions)
        from the steps' losses."""
        if len(losses) == 1:  # batch gradient descent
            mean_loss = losses[0]
        else:
            # each step's loss is its batch's mean; the last batch may be short
            last = samples - batch_size * (len(losses) - 1)
            mean_loss = (sum(losses[:-1]) * batch_size + losses[-1] * last) / samples
        if not all(map(math.isfinite, losses)):
            first_bad = next(i for i, value in enumerate(losses) if not math.isfinite(value))
            raise DivergenceError(
                f"the loss became {losses[first_bad]} at epoch {epoch + 1}, step "
                f"{first_bad + 1}: training diverged. Lower the learning rate (it is {lr:g}), "
                "scale the inputs (e.g. to [0, 1]), or check the data for extreme values"
            )
        if correct is None:
            return {"loss": mean_loss}
        return {"loss": mean_loss, "accuracy": correct / judged}

    def _run_signature(self, X: Any, y: Any, batch_size: int, epochs: int,
                       initial_epoch: int, shuffle: bool, seed: int | None,
                       optimizer: Optimizer, validation_data: Any) -> dict[str, Any]:
        """What every rank of a distributed fit must share: the same model, data and
        settings, else the ranks would train different runs or wait for each other."""
        xp = namespace(X)
        return {
            "model": self.config(), "dtype": self.dtype,
            "data": (tuple(X.shape), tuple(y.shape),
                     float(xp.sum(X)), float(xp.sum(xp.astype(y, X.dtype)))),
            "validation": None if validation_data is None else tuple(
                validation_data[0].shape),
            "batches": (batch_size, epochs, initial_epoch, shuffle),
            "shuffle seed": seed if seed is not None or not shuffle
            else random.generator("shuffle").bit_generator.state,
            "optimizer": (type(optimizer).__name__, optimizer.config(), optimizer.t),
        }

    def _binary_width(self) -> int:
        return self.out_features or 1

    def _prepare(self, X: Any, y: Any, loss: Loss, what: str = "") -> tuple[Any, Any]:
        X = prepare_features(X, self.in_features, self.dtype, what=f"{what}X",
                             images=self.takes_images)
        classes = self.out_features if loss.task == "multiclass" else None
        y = prepare_targets(y, X.shape[0], loss.task, classes, self.dtype, what=f"{what}y")
        return X, y

    # -- using a trained model -----------------------------------------------------------

    def predict(self, X: Any, batch_size: int | None = 4096) -> Any:
        """The last layer's outputs for ``X`` in evaluation mode (e.g. logits), batched;
        an array of the active backend."""
        check_model(self, "predict")
        X = prepare_features(X, self.in_features, self.dtype, images=self.takes_images)
        return self._predict(X, batch_size)

    def _predict(self, X: Any, batch_size: int | None) -> Any:
        samples = X.shape[0]
        batch_size = check_batch_size(batch_size, samples)
        if batch_size >= samples:
            return self.forward(X, training=False)
        xp = namespace(X)
        parts = [self.forward(X[start:min(start + batch_size, samples), ...], training=False)
                 for start in range(0, samples, batch_size)]
        return xp.concat(parts, axis=0)

    def evaluate(self, X: Any, y: Any, loss: Loss | None = None, batch_size: int | None = 4096,
                 _checked: bool = False, communicator: Communicator | None = None,
                 compile: bool | str = "auto") -> dict[str, float]:
        """``{"loss": ..., "accuracy": ...}`` on (X, y) (accuracy for classification
        losses). ``loss`` defaults to the one the model was last fitted with.

        ``compile`` as in ``fit``: on jax (``"auto"``) each batch shape's forward pass,
        loss and count of right predictions run as one compiled program, kept on the
        model for the next evaluation (``nnscratch.compile.JaxEvaluation``); eagerly, the
        first evaluation on JAX compiles each operation on its own.

        With a ``communicator`` of N ranks, each holding the same (X, y), rank r
        evaluates rows ⌊r·S/N⌋ .. ⌊(r+1)·S/N⌋ − 1 and the sums of losses and correct
        predictions are added up over the ranks: every rank gets the scores of all S.
        """
        check_model(self, "evaluate")
        comm = communicator or distributed.LOCAL
        loss = loss or self.loss
        if loss is None:
            raise ConfigError("evaluate needs a loss: pass loss=... or fit the model first")
        if not _checked:
            X, y = self._prepare(X, y, loss)
        samples = X.shape[0]
        batch_size = check_batch_size(batch_size, samples)
        first, last = distributed.shard(0, samples, comm.rank, comm.size)  # this rank's
        compiled = compile is not False and compiling.wants_compiling(
            compile, get_backend().name, 1)
        batch_sums = compiling.evaluation(self, loss) if compiled else None
        total, correct = None, None
        for start in range(first, last, batch_size):
            stop = min(start + batch_size, last)
            if batch_sums is not None:
                weighted, count = batch_sums(X, y, start, stop)
            else:
                weighted, count = self._evaluation_sums(X[start:stop, ...], y[start:stop, ...],
                                                        loss)
            total = weighted if total is None else total + weighted
            if count is not None:
                correct = count if correct is None else correct + count
        total = 0.0 if total is None else float(total)  # None: no rows on this rank
        judging = loss.task != "regression"
        correct = (0.0 if correct is None else float(correct)) if judging else None
        if comm.size > 1:
            sums = comm.allreduce_scalars([total] + ([correct] if judging else []))
            total, correct = sums[0], (sums[1] if judging else None)
        scores = {"loss": total / samples + float(self.regularization_loss())}
        if correct is not None:
            width = 1 if loss.task == "multiclass" else self._binary_width()
            scores["accuracy"] = correct / (samples * width)
        return scores


    def _evaluation_sums(self, xb: Any, yb: Any, loss: Loss) -> tuple[Any, Any]:
        """A batch's loss summed over its rows and its number of right predictions (None
        for regression), arrays on the device; the forward pass in inference mode."""
        outputs = self.forward(xb, training=False)
        total = loss.forward(outputs, yb) * xb.shape[0]
        if loss.task == "regression":
            return total, None
        return total, correct_count(outputs, yb, loss.task, loss.threshold)


def mlp(sizes: Sequence[int], activation: str = "relu", init: str = "he_normal",
        dtype: str = "float32") -> Sequential:
    """A multilayer perceptron: ``Dense`` layers of the widths ``sizes`` (input first,
    outputs last) with ``activation`` between them, none after the last (its outputs are
    the logits a ``SoftmaxCrossEntropy`` expects). He-normal weights keep the
    activations' variance through ReLU units.

    The memory the network will need is estimated first (``training_bytes``): on the CPU,
    a network larger than the machine's memory is refused with ``ConfigError`` before
    anything is allocated.
    """
    sizes = [int(size) for size in sizes]
    if len(sizes) < 2 or min(sizes) <= 0:
        raise ConfigError(f"an MLP needs at least two positive widths, got {sizes}")
    parameters = sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes, sizes[1:]))
    needed = training_bytes(parameters, dtype)
    backend = get_backend()  # the host's memory bounds a network on the CPU, not on a GPU
    on_gpu = backend.name == "cupy" or str(backend.device).startswith("cuda")
    available = None if on_gpu else _physical_memory()
    too_big = ConfigError(
        f"the network {'-'.join(map(str, sizes))} has {parameters:,} parameters and needs "
        f"about {needed / 1e9:.1f} GB to train (weights, gradients, Adam's moments and the "
        "initial draw)" + (f", more than this machine's {available / 1e9:.1f} GB"
                           if available else "") + "; choose fewer or narrower layers")
    if available is not None and needed > available:
        raise too_big
    layers: list[Layer] = []
    try:
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [Dense(fan_in, fan_out, init=init, dtype=dtype),
                       get_activation(activation)]
        return Sequential(*layers[:-1])
    except MemoryError as exc:
        raise too_big from exc


def training_bytes(parameters: int, dtype: str = "float32", optimizer_slots: int = 2) -> int:
    """Bytes to train ``parameters`` parameters: θ, ∇θ and the optimizer's state
    (``optimizer_slots`` arrays, 2 for Adam), plus the float64 host draw of the initial
    weights. Activations, which grow with the batch, are not counted."""
    itemsize = 8 if dtype == "float64" else 4
    return parameters * (itemsize * (2 + optimizer_slots) + 8)


def _physical_memory() -> int | None:
    """The machine's physical memory in bytes, where the system tells it."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _to_host(backend: Any, step_losses: list[Any], correct: Any) -> tuple[list[float],
                                                                          float | None]:
    """The steps' losses and the correct count (an array, or a list of the compiled
    steps' counts, read with the losses), from the device: one transfer for the losses."""
    if isinstance(correct, list):
        losses, counts = backend.scalars_to_numpy(step_losses, correct)
        return losses.tolist(), float(counts.sum())
    if len(step_losses) == 1:  # batch gradient descent: one value, one host read
        losses = [float(step_losses[0])]
    else:
        (losses,) = backend.scalars_to_numpy(step_losses)
        losses = losses.tolist()
    return losses, None if correct is None else float(correct)


# The rows of X one gather of the epoch's shuffle takes, in bytes: enough steps that the
# gather's cost per step vanishes, few enough to be reused memory (an allocation above
# glibc's 32 MiB mmap ceiling is fresh pages, and faulting those in cost ~5% of a step).
GATHER_BYTES = 8 << 20


def _steps_per_size(bounds: list[tuple[int, int]], epochs: int) -> dict[int, int]:
    """How many steps of each batch size ``epochs`` epochs of ``bounds`` take."""
    counts: dict[int, int] = {}
    for start, stop in bounds:
        counts[stop - start] = counts.get(stop - start, 0) + epochs
    return counts


def _runs_of_steps(bounds: list[tuple[int, int]], rows: int) -> dict[int, tuple[int, int]]:
    """``{first step of a run: (first row, end row)}``: consecutive steps grouped so that
    each group spans at most ``rows`` rows (at least one step)."""
    runs: dict[int, tuple[int, int]] = {}
    first_step = 0
    for step, (_, stop) in enumerate(bounds):
        start = bounds[first_step][0]
        if stop - start > rows and step > first_step:
            runs[first_step] = (start, bounds[step - 1][1])
            first_step = step
    runs[first_step] = (bounds[first_step][0], bounds[-1][1])
    return runs


def _itemsize(array: Any) -> int:
    """Bytes per element of ``array`` (``finfo``/``iinfo`` give the bits)."""
    xp = namespace(array)
    kind = xp.finfo if xp.isdtype(array.dtype, "real floating") else xp.iinfo
    return kind(array.dtype).bits // 8


def _hooks(callbacks: list[Callback], name: str) -> list[Any]:
    """The bound ``name`` methods of the callbacks that override it."""
    return [getattr(callback, name) for callback in callbacks
            if getattr(type(callback), name) is not getattr(Callback, name)]
