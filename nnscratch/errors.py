"""The exceptions nnscratch raises.

Every error a user can meet is one of these, and each is also a subclass of the
matching built-in exception, so ``except ValueError`` keeps working for code that
does not know about nnscratch. Messages name the problem and the fix.
"""

from __future__ import annotations


class NNScratchError(Exception):
    """Base class of every error raised on purpose by nnscratch."""


class BackendError(NNScratchError, RuntimeError):
    """The array backend cannot be used: unknown name, missing package, no device,
    or an array that belongs to another backend than the active one."""


class ShapeError(NNScratchError, ValueError):
    """Arrays whose shapes do not fit the layer, the loss or each other."""


class ConfigError(NNScratchError, ValueError):
    """A bad hyper-parameter or constructor argument: a negative size, a
    non-positive learning rate, an unknown activation or initializer name."""


class DataError(NNScratchError, ValueError):
    """Bad data: a corrupt or truncated file, labels out of range, NaN inputs,
    an empty dataset, a dataset that cannot be found or downloaded."""


class DivergenceError(NNScratchError, RuntimeError):
    """Training produced a NaN or infinite loss."""


class CheckpointError(NNScratchError, ValueError):
    """A checkpoint that cannot be read, or that does not match the model."""


class NotDifferentiableError(NNScratchError, RuntimeError):
    """backward() was called on a layer that has no useful gradient (Step)."""


class StateError(NNScratchError, RuntimeError):
    """A method called out of order: ``backward`` before the ``forward`` whose cached
    values it needs."""


__all__ = [
    "NNScratchError",
    "BackendError",
    "ShapeError",
    "ConfigError",
    "DataError",
    "DivergenceError",
    "CheckpointError",
    "NotDifferentiableError",
    "StateError",
]
