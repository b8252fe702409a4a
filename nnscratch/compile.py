"""The training step compiled by the backend's compiler: ``fit(compile=...)``.

A step of ``fit`` is a function of what it changes (docs/ARCHITECTURE.md, "a step is a
function"):

    (w, s, scalars_t, xb, yb, noise)  →  (w', s', ∇w, L, correct)

with w the parameters' values, s the optimizer's state, ``scalars_t`` the numbers of step
t that change between steps (the learning rate a schedule sets, Adam's α_t and ε_t),
noise the step's host-made random arrays (dropout masks), L the batch's loss and
``correct`` its number of right predictions.

Eagerly that function is the model's own step, ``Sequential._train_step``: forward, loss,
backward, ``optimizer.apply``, one array operation after the other (in place where the
array library allows). Compiled, the *same* Python code runs once per batch shape on
JAX's tracers (``jax.jit``): the layers, the loss and the optimizer see tracers in place of
arrays, and XLA fuses the step's ~50 operations into a few loops. The step takes its
batch's rows itself, from X on the device and the epoch's shuffled order: no shuffled
copy of X is made (on MNIST that copy was ~60 ms an epoch). Nothing is written
twice: ``JaxStep`` only puts the step's inputs where the layers and the optimizer look for
them, traces, and takes the outputs back. What must stay on the host stays there:

- the step counter and the scalars that depend on it (``optimizer.begin_step``, then
  ``step_scalars()`` as arguments, never as constants baked into the trace);
- random numbers, drawn by the seeded host streams (``random.on_device``) before each call
  in the order an eager step draws them, and passed in: compiled and eager runs see the
  same dropout masks;
- (the periodic flush of vanishing optimizer state, ``optimizer.end_step``, is left
  out: XLA flushes subnormal numbers to 0 itself.)

A layer whose step changes arrays other than its parameters (a BatchNorm's running
statistics) names them in ``state_attributes``; they are inputs and outputs of the compiled
step like the parameters. Layers must not read arrays back to the host inside ``forward``
or ``backward`` (``float(x)``), nor keep arrays made there anywhere but on themselves.

XLA is asked for a quick compile (``QUICK_COMPILE``) where a program's whole use does less
arithmetic than compiling it costs (``QUICK_WORK``): XOR's 10,000 epochs are ~5 million
operations, and on a CPU XLA's default compile (~0.16 s) would be most of the run; the
last, shorter batch of an epoch runs once an epoch. A program that runs long (MNIST's
full batches) gets XLA's full optimization.

``evaluate`` compiles as well (``JaxEvaluation``): a batch's forward pass in inference
mode, its loss and its count of right predictions as one program per batch shape, kept on
the model while its layers and loss are unchanged. Eagerly, JAX compiles each operation
of a first evaluation on its own (~130 compiles, 2.1 s of the MNIST example's first
validation on a CPU; compiled, 0.45 s).

The parameters and the optimizer's state are *donated*: XLA writes the new values into
their buffers, as the in-place libraries do. An array of the old values that a user held
on to is deleted by the step (copy it first: ``xp.asarray(w, copy=True)``).

``compile="auto"`` (``fit``'s default) compiles where a compiler pays (JAX, whose eager
steps are ~50 times slower than its compiled ones) and runs eagerly elsewhere: NumPy and
array-api-strict have no compiler, and ``torch.compile`` is not offered: on this MLP its
first call took 32 s for a 10% faster step (bench/README.md, "JAX and compiled steps").
"""

from __future__ import annotations

import warnings
from typing import Any

from . import random
from .errors import ConfigError
from .metrics import correct_count

COMPILERS = {"jax": "jax.jit"}
"""The backends whose training step ``fit`` can compile, and with what."""

QUICK_COMPILE = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}
"""XLA's options for a program whose run is shorter than its compile (CPU only): no fusion
emitters, no LLVM optimization. On XOR's 10,000-epoch loop they cut XLA's compile from
~0.16 s to ~0.065 s and leave the loop as fast (~2 µs an epoch); the MNIST MLP's step's
from ~0.33 s to ~0.09 s, but its epoch then takes 1.5 s instead of 0.7 s (bench/README.md,
"JAX and compiled steps")."""

QUICK_WORK = 1e9
"""The floating-point operations (XLA's count of one step × the steps of that batch shape
``fit`` will take) under which a program is compiled with ``QUICK_COMPILE``: XOR's loop,
and the short last batch of an epoch (MNIST's 96 rows, 5 times in a 5-epoch run). A
quick compile saves ~0.1-0.25 s and costs ~1e-11 s per operation run (the MLP's numbers
above): it pays below ~1e10 operations; the bound is a tenth of that."""

_warned_eager = False


def wants_compiling(compile: Any, backend_name: str, ranks: int) -> bool:
    """Whether ``fit(compile=compile)`` compiles its step on this backend and number of
    processes; ``ConfigError`` for a value it cannot honour."""
    global _warned_eager
    if compile not in ("auto", True, False) or isinstance(compile, (int, float)) \
            and not isinstance(compile, bool):
        raise ConfigError(f"compile must be 'auto', True or False, got {compile!r}")
    if compile == "auto":
        compiling = backend_name in COMPILERS and ranks == 1
        if backend_name in COMPILERS and not compiling and not _warned_eager:
            _warned_eager = True
            warnings.warn(f"fit runs its steps eagerly on {backend_name} with {ranks} "
                          "processes: the gradients' all-reduce sits between backward and "
                          "the update, on the host", stacklevel=3)
        return compiling
    if compile and backend_name not in COMPILERS:
        raise ConfigError(
            f"compile=True needs a backend with a compiler ({', '.join(COMPILERS)}: "
            f"nn.use_backend('jax')); the {backend_name} backend runs its steps eagerly: "
            "pass compile=False or compile='auto'"
        )
    if compile and ranks > 1:
        raise ConfigError(
            f"compile=True cannot be used with {ranks} processes: the all-reduce of the "
            "gradients runs on the host between backward and the update; pass "
            "compile=False (or 'auto', which runs such steps eagerly)"
        )
    if not compile and backend_name in COMPILERS and not _warned_eager:
        _warned_eager = True
        warnings.warn(f"eager steps on {backend_name} are tens of times slower than "
                      "compiled ones: fit(compile='auto') compiles them", stacklevel=3)
    return bool(compile)


class _DrawsNeededError(Exception):
    """Raised inside a trace that meets a host draw it was given no argument for."""


class JaxStep:
    """``Sequential._train_step`` compiled with ``jax.jit``: ``loss, correct = step(X, y,
    start, stop)`` takes a step on rows ``start:stop`` of (X, y) (``correct`` 0 for
    regression), updating the model's parameters and the optimizer's state as an eager
    step does; ``step(X, y, start, stop, order)`` on rows ``order[start:stop]`` (an
    epoch's shuffle, gathered inside the step). A batch made on its own (e.g. augmented)
    is ``step(xb, yb, 0, len(xb))``.

    ``steps``, how many steps ``fit`` will take of each batch size (``{size: count}``),
    chooses XLA's options (``QUICK_COMPILE``); None: many."""

    def __init__(self, model: Any, loss: Any, optimizer: Any, parameters: Any,
                 penalized: bool, required: bool = True,
                 steps: dict[int, int] | None = None) -> None:
        import jax

        from .backend import get_backend

        self.backend = get_backend()
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.parameters, self.penalized = parameters, penalized
        self.members = list(parameters)
        # what else a step changes: the layers' named state (``Layer.state_attributes``,
        # e.g. a BatchNorm's running statistics), threaded through the step as θ is
        self.layer_state = [(layer, name) for layer in model.layers
                            for name in getattr(layer, "state_attributes", ())]
        for param in self.members:  # the state exists before the trace: one structure
            optimizer.slots(param)
        self.judging = loss.task != "regression"
        self.required, self.eager = required, False  # eager: untraceable under "auto"
        self._draws: dict[tuple[Any, ...], list[tuple[Any, Any]]] = {}
        self._recording: list[tuple[Any, Any]] | None = None
        self._jax = jax
        self.steps = steps
        self.options: dict[str, Any] | None = None  # XLA's options, the last compile's
        self._step = jax.jit(self._pure, donate_argnums=(0, 1), static_argnums=(7,))
        self._executables: dict[tuple[Any, ...], Any] = {}

    # -- the host side --------------------------------------------------------------------

    def __call__(self, X: Any, y: Any, start: int, stop: int,
                 order: Any = None) -> tuple[Any, Any]:
        """One step on the batch ``X[start:stop]``, ``y[start:stop]``, or on rows
        ``order[start:stop]`` of them (rows sliced or gathered inside the compiled step:
        an eager JAX slice costs more than a small step, and gathering a whole epoch's
        shuffled copy of X first would be one more pass over it)."""
        if self.eager:
            return self._eager_step(X, y, start, stop, order)
        optimizer = self.optimizer
        optimizer.begin_step()
        scalars = optimizer.step_scalars()
        size = stop - start
        key = (tuple(X.shape), tuple(y.shape), size, order is None)
        draws = self._draws.get(key)
        values, states = self._values(), [optimizer.state[param] for param in self.members]
        arguments = (X, y, order, start, size)
        outputs = None
        if draws is None:
            try:  # most models draw nothing: one trace
                outputs = self._run_step(key, values, states, scalars, arguments, [])
                draws = self._draws[key] = []
            except _DrawsNeededError:
                draws = self._draws[key] = self._discover_draws(values, states, scalars,
                                                                arguments)
            except self._jax.errors.JAXTypeError as exc:  # a layer reads the host
                optimizer.t -= 1  # nothing ran: the eager step counts this step again
                self._untraceable(exc)
                return self._eager_step(X, y, start, stop, order)
        if outputs is None:
            noise = [self.backend.asarray(draw(), dtype=dtype) for draw, dtype in draws]
            outputs = self._run_step(key, values, states, scalars, arguments, noise)
        new_values, new_states, new_grads, value, correct = outputs
        self._install(new_values, new_states, new_grads)
        # No ``optimizer.end_step()``: its flush keeps decaying state out of the subnormal
        # numbers, which XLA already flushes to 0 itself (and eagerly, its few operations
        # per state array would each be compiled on first use, ~0.1 s apiece).
        return value, correct

    def _untraceable(self, error: Exception) -> None:
        """A layer (or loss) needs concrete values inside the step, e.g. ``float(x)``:
        ``compile=True`` raises; ``"auto"`` warns once and steps eagerly from now on."""
        message = (f"the training step cannot be traced for jax.jit: a layer or the loss "
                   f"reads array values on the host inside it ({type(error).__name__}: "
                   f"{str(error).splitlines()[0]})")
        if self.required:
            raise ConfigError(message + "; pass compile=False (or 'auto') to run it "
                              "eagerly, or keep host reads out of forward and backward") \
                from error
        warnings.warn(message + "; running the steps eagerly", stacklevel=5)
        self.eager = True

    def _eager_step(self, X: Any, y: Any, start: int, stop: int,
                    order: Any = None) -> tuple[Any, Any]:
        """The step run eagerly, as ``fit(compile=False)`` runs it."""
        if order is not None:
            rows = order[start:stop]
            xb, yb = (self.backend.xp.take(X, rows, axis=0),
                      self.backend.xp.take(y, rows, axis=0))
        else:
            xb, yb = (X, y) if stop - start == X.shape[0] else (X[start:stop, ...],
                                                                 y[start:stop, ...])
        value, outputs = self.model._train_step(xb, yb, self.loss, self.optimizer.step,
                                                self.parameters, self.penalized)
        if not self.judging:
            return value, self.backend.xp.zeros((), dtype=self.backend.xp.int64)
        return value, correct_count(outputs, yb, self.loss.task, self.loss.threshold)

    def full_batch_epochs(self, X: Any, y: Any, rates: list[float]) -> tuple[Any, Any] | None:
        """``len(rates)`` epochs of one full-batch step each (learning rate ``rates[e]``),
        as one compiled loop (``lax.scan``): the losses and right-prediction counts of
        every epoch, on the device. None (nothing done) where the step draws random
        numbers, which must come from the host step by step."""
        if self.eager:
            return None
        optimizer = self.optimizer
        t, lr = optimizer.t, optimizer.lr
        per_step = []
        for rate in rates:
            optimizer.lr = rate
            optimizer.begin_step()
            per_step.append(optimizer.step_scalars())
        xp, dtype = self.backend.xp, self.members[0].value.dtype
        scalars = {name: xp.asarray([step[name] for step in per_step], dtype=dtype)
                   for name in per_step[0]}
        values, states = self._values(), [optimizer.state[param] for param in self.members]
        grads = [xp.zeros_like(param.value) for param in self.members]
        try:
            arguments = (values, states, grads, scalars, X, y)
            scan = self._jax.jit(self._scan, donate_argnums=(0, 1, 2))
            outputs = self._compile(scan.lower(*arguments), len(rates), X)(*arguments)
        except (_DrawsNeededError, self._jax.errors.JAXTypeError) as exc:
            optimizer.t, optimizer.lr = t, lr
            if not isinstance(exc, _DrawsNeededError):
                self._untraceable(exc)
            return None
        new_values, new_states, new_grads, losses, correct = outputs
        self._install(new_values, new_states, new_grads)
        return losses, correct

    def _run_step(self, key: tuple[Any, ...], values: list[Any], states: list[Any],
                  scalars: dict[str, Any], arguments: tuple[Any, ...],
                  noise: list[Any]) -> tuple[Any, ...]:
        """The compiled step for this batch shape (compiled on first use), run."""
        X, y, order, start, size = arguments
        key = (*key, len(noise))
        executable = self._executables.get(key)
        if executable is None:
            lowered = self._step.lower(values, states, scalars, X, y, order, start, size,
                                       noise)
            steps = None if self.steps is None else self.steps.get(size)
            executable = self._executables[key] = self._compile(lowered, steps, X)
        return executable(values, states, scalars, X, y, order, start, noise)

    def _compile(self, lowered: Any, steps: int | None, data: Any) -> Any:
        """XLA's executable for a traced program that will run ``steps`` times on the
        device that holds ``data``, with the quick options where its whole arithmetic is
        less than compiling it costs."""
        self.options = None
        if steps is not None and _platform(data) == "cpu":
            flops = _flops(lowered)
            if flops is not None and flops * steps < QUICK_WORK:
                self.options = dict(QUICK_COMPILE)
        if self.options is not None:
            try:
                return lowered.compile(self.options)
            except Exception:  # noqa: BLE001 — an XLA without these options: its defaults
                self.options = None
        return lowered.compile()

    def _values(self) -> list[Any]:
        """The parameters' values, then the layers' state arrays (the step's inputs)."""
        return [param.value for param in self.members] + [
            getattr(layer, name) for layer, name in self.layer_state]

    def _install(self, values: list[Any], states: list[Any], grads: list[Any]) -> None:
        """Put a step's outputs where the model and the optimizer keep them."""
        count = len(self.members)
        for param, value, state, grad in zip(self.members, values, states, grads):
            param._value, param._grad = value, grad
            self.optimizer.state[param] = state
        for (layer, name), value in zip(self.layer_state, values[count:]):
            setattr(layer, name, value)

    def _scan(self, values: list[Any], states: list[Any], grads: list[Any],
              scalars: dict[str, Any], X: Any, y: Any) -> tuple[Any, ...]:
        def epoch(carry: tuple[Any, ...], step_scalars: dict[str, Any]) -> tuple[Any, Any]:
            values, states, _ = carry
            values, states, grads, value, correct = self._pure(
                values, states, step_scalars, X, y, None, 0, X.shape[0], None)
            return (values, states, grads), (value, correct)

        (values, states, grads), (losses, correct) = self._jax.lax.scan(
            epoch, (values, states, grads), scalars)
        return values, states, grads, losses, correct

    def _discover_draws(self, values: list[Any], states: list[Any], scalars: dict[str, float],
                        arguments: tuple[Any, ...]) -> list[tuple[Any, Any]]:
        """The host draws one step makes, in order: an abstract trace (nothing computed,
        nothing donated) that records them."""
        self._recording = []
        try:
            X, y, order, start, size = arguments
            def abstract_step(values: Any, states: Any, scalars: Any, X: Any, y: Any,
                              order: Any, start: Any) -> Any:
                return self._pure(values, states, scalars, X, y, order, start, size, None)

            self._jax.eval_shape(abstract_step, values, states, scalars, X, y, order, start)
            return self._recording
        finally:
            self._recording = None

    # -- the traced side ------------------------------------------------------------------

    def _pure(self, values: list[Any], states: list[dict[str, Any]], scalars: dict[str, Any],
              X: Any, y: Any, order: Any, start: Any, size: int, noise: list[Any] | None) \
            -> tuple[Any, ...]:
        """The step as a function of its inputs, run on tracers (see the module's
        docstring): the inputs are put where the model looks for them, and everything
        the trace touched is put back afterwards, so that no tracer outlives it."""
        saved = self._enter(values, states, scalars, noise)
        try:
            xb, yb = _batch_rows(self._jax, X, y, order, start, size)
            value, outputs = self.model._train_step(
                xb, yb, self.loss, self.optimizer.apply, self.parameters, self.penalized)
            if self.judging:
                correct = correct_count(outputs, yb, self.loss.task, self.loss.threshold)
            else:
                correct = self.backend.xp.zeros((), dtype=self.backend.xp.int64)
            return (self._values(),
                    [dict(self.optimizer.state[param]) for param in self.members],
                    [param.grad for param in self.members], value, correct)
        finally:
            self._leave(saved)

    def _enter(self, values: list[Any], states: list[dict[str, Any]],
               scalars: dict[str, Any], noise: list[Any] | None) -> dict[str, Any]:
        optimizer = self.optimizer
        fed = iter(noise or [])

        def draw_argument(draw: Any, shape: tuple[int, ...], dtype: Any) -> Any:
            if self._recording is not None:
                self._recording.append((draw, dtype))
                return self.backend.xp.zeros(shape, dtype=dtype)
            argument = next(fed, None)
            if argument is None:
                raise _DrawsNeededError
            return argument

        saved = _lend(self._jax, self.model, self.loss, self.members, self.layer_state,
                      values, draw_argument)
        saved["state"] = {param: optimizer.state[param] for param in self.members}
        saved["scalars"] = {name: getattr(optimizer, name) for name in scalars}
        for param, state in zip(self.members, states):
            optimizer.state[param] = dict(state)
        for name, value in scalars.items():
            setattr(optimizer, name, value)
        return saved

    def _leave(self, saved: dict[str, Any]) -> None:
        _give_back(self._jax, self.members, saved)
        self.optimizer.state.update(saved["state"])
        for name, value in saved["scalars"].items():
            setattr(self.optimizer, name, value)


class JaxEvaluation:
    """``model.evaluate``'s batches compiled with ``jax.jit``: ``total, correct =
    evaluation(X, y, start, stop)`` is the loss summed over rows ``start:stop`` (the
    batch's mean × its rows) and their number of right predictions (None for
    regression), on the device; the forward pass in inference mode, as eager evaluation
    runs it. The parameters and the layers' state are arguments, so a model trained since
    is evaluated with its new weights by the same executable; one compile per batch shape.

    ``evaluation(model, loss)`` keeps one on the model, found again while the model's
    layers, their parameters and the loss are the same objects, with the same settings
    (``_settings``)."""

    def __init__(self, model: Any, loss: Any) -> None:
        import jax

        from .backend import get_backend

        self.backend, self.model, self.loss, self._jax = get_backend(), model, loss, jax
        self.members = [param for layer in model.layers for param in layer.parameters()]
        self.layer_state = [(layer, name) for layer in model.layers
                            for name in getattr(layer, "state_attributes", ())]
        self.eager = False  # a layer reads the host in its forward pass: eager from now
        self._jit = jax.jit(self._pure, static_argnums=(4,))
        self._executables: dict[tuple[Any, ...], Any] = {}

    def __call__(self, X: Any, y: Any, start: int, stop: int) -> tuple[Any, Any]:
        size = stop - start
        if not self.eager:
            values = [param.value for param in self.members] + [
                getattr(layer, name) for layer, name in self.layer_state]
            key = (tuple(X.shape), str(X.dtype), tuple(y.shape), str(y.dtype), size,
                   tuple((tuple(value.shape), str(value.dtype)) for value in values))
            executable = self._executables.get(key)
            if executable is None:
                try:
                    executable = self._jit.lower(values, X, y, start, size).compile()
                except (self._jax.errors.JAXTypeError, _DrawsNeededError) as exc:
                    warnings.warn("evaluate runs eagerly: a layer or the loss reads array "
                                  "values on the host, or draws random numbers, in its "
                                  f"inference pass ({type(exc).__name__})", stacklevel=3)
                    self.eager = True
                else:
                    self._executables[key] = executable
            if not self.eager:
                return executable(values, X, y, start)
        return self.model._evaluation_sums(X[start:stop, ...], y[start:stop, ...],
                                           self.loss)

    def _pure(self, values: list[Any], X: Any, y: Any, start: Any, size: int) -> Any:
        """One batch's (total, correct) as a function of the weights and the rows: the
        values put where the layers look for them, everything put back afterwards."""
        # (a draw here would be baked in: refused, and the batch evaluated eagerly)
        saved = _lend(self._jax, self.model, self.loss, self.members, self.layer_state,
                      values, _no_draws)
        try:
            xb, yb = _batch_rows(self._jax, X, y, None, start, size)
            return self.model._evaluation_sums(xb, yb, self.loss)
        finally:
            _give_back(self._jax, self.members, saved)


def evaluation(model: Any, loss: Any) -> JaxEvaluation:
    """The model's compiled evaluation for ``loss``: the one it keeps, while the layers,
    their parameters and the loss are the same objects with the same settings, else a
    new one."""
    settings = (tuple(_settings(layer) for layer in model.layers), _settings(loss),
                tuple(id(param) for layer in model.layers for param in layer.parameters()))
    kept = model.__dict__.get("_evaluation")
    if kept is None or kept[0] != settings:
        kept = model._evaluation = (settings, JaxEvaluation(model, loss))
    return kept[1]


def _settings(owner: Any) -> tuple[Any, ...]:
    """What a trace of ``owner`` may have baked in: which object it is, its class, and
    its attributes that are numbers, strings or tuples of them (a rate, a threshold, a
    kernel size). Arrays are not settings: they are the trace's arguments."""
    plain = (bool, int, float, str, type(None))
    return (id(owner), type(owner), tuple(sorted(
        (name, value) for name, value in vars(owner).items()
        if isinstance(value, plain) or isinstance(value, tuple)
        and all(isinstance(item, plain) for item in value))))


def _batch_rows(jax: Any, X: Any, y: Any, order: Any, start: Any,
                size: int) -> tuple[Any, Any]:
    """Inside a trace, a batch's ``size`` rows of (X, y) from ``start``: of the epoch's
    shuffle ``order`` where given (gathered), else in X's order (sliced)."""
    lax = jax.lax
    if order is not None:
        rows = lax.dynamic_slice_in_dim(order, start, size)
        return jax.numpy.take(X, rows, axis=0), jax.numpy.take(y, rows, axis=0)
    if size == X.shape[0]:
        return X, y
    return lax.dynamic_slice_in_dim(X, start, size), lax.dynamic_slice_in_dim(y, start, size)


def _lend(jax: Any, model: Any, loss: Any, members: list[Any],
          layer_state: list[tuple[Any, str]], values: list[Any],
          draws: Any) -> dict[str, Any]:
    """Put a trace's ``values`` where the model looks for them (the parameters' values,
    then the layers' state arrays), send host draws to ``draws`` and give tracers a
    device, for the trace's length; returns what ``_give_back`` puts back (the layers'
    and the loss's attributes as they were, the parameters' values and gradients)."""
    saved = {"objects": [(owner, _snapshot(owner)) for owner in [*model.layers, loss]],
             "parameters": [(param._value, param._grad) for param in members]}
    for param, value in zip(members, values):
        param._value, param._grad = value, None
    for (layer, name), value in zip(layer_state, values[len(members):]):
        setattr(layer, name, value)  # (the layer's attributes are put back afterwards)
    random._traced_draws = draws
    saved["tracer device"] = _lend_tracer_device(jax)
    return saved


def _give_back(jax: Any, members: list[Any], saved: dict[str, Any]) -> None:
    """Undo ``_lend``: no tracer outlives the trace."""
    random._traced_draws = None
    jax.core.Tracer.device = saved["tracer device"]
    for owner, attributes in saved["objects"]:
        owner.__dict__.clear()
        owner.__dict__.update(attributes)
    for param, (value, grad) in zip(members, saved["parameters"]):
        param._value, param._grad = value, grad


def _no_draws(draw: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    raise _DrawsNeededError


def _lend_tracer_device(jax: Any) -> Any:
    """Give JAX tracers a ``device`` of None for a trace's length (the layers create
    arrays with ``device=x.device``, as the standard asks; array_api_compat says None
    for a tracer, and inside a trace None places an array with the computation). Returns
    what to put back in ``Tracer.device`` afterwards."""
    tracer = jax.core.Tracer
    saved = tracer.__dict__["device"]
    tracer.device = property(lambda _: None)
    return saved


def _platform(array: Any) -> str:
    """The platform (cpu, gpu, …) of the device a JAX array lives on."""
    devices = array.devices()
    return next(iter(devices)).platform if devices else "cpu"


def _flops(lowered: Any) -> float | None:
    """XLA's count of a traced program's floating-point operations (a loop's body counted
    once), or None where it gives none."""
    try:
        analysis = lowered.cost_analysis()
    except Exception:  # noqa: BLE001 — a count is advice; without it, the defaults
        return None
    if isinstance(analysis, (list, tuple)):  # one per device in some JAX versions
        analysis = analysis[0] if analysis else None
    flops = analysis.get("flops") if isinstance(analysis, dict) else None
    return float(flops) if flops is not None and flops >= 0 else None


def _snapshot(owner: Any) -> dict[str, Any]:
    """``owner``'s attributes, dicts among them copied (a layer's caches), to put back
    after a trace that set some of them to tracers."""
    return {name: dict(value) if isinstance(value, dict) else value
            for name, value in vars(owner).items()}

