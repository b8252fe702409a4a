"""The :class:`Dataset` every loader returns: a train/test split as host NumPy arrays, with
what a program needs to talk about it (the class names, a title, where it came from, and
anything the loader wants the user to know)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnscratch.errors import DataError


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split held as host NumPy arrays.

    ``x_*`` are float32 features, one sample per row; ``y_*`` are int64 class labels.
    ``name`` says which dataset this is (``"mnist"``), ``title`` how to write it for people
    (``"MNIST"``), ``source`` where it was read from. ``class_names[k]`` is the name of label
    ``k`` (``"Sneaker"``), so a program can print ``predicted: Sneaker (97.1%)``.

    ``notes`` are the one-line remarks the loader made while loading (already shown to the
    user through its ``report``), e.g. that the files are not the canonical ones.
    ``fallback_reason`` is set when this is a stand-in for the dataset asked for (the 8x8
    digits instead of MNIST): why the one asked for could not be had.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    source: str
    title: str = ""
    class_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    fallback_reason: str | None = None

    def __post_init__(self) -> None:
        for split, features, labels in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if features.shape[0] != labels.shape[0]:
                raise DataError(
                    f"{self.name}: {features.shape[0]} {split} samples but "
                    f"{labels.shape[0]} {split} labels"
                )
            if self.class_names and labels.size and int(labels.max()) >= len(self.class_names):
                raise DataError(
                    f"{self.name}: {split} label {int(labels.max())} has no class name "
                    f"(there are {len(self.class_names)})"
                )
        if not self.title:
            object.__setattr__(self, "title", self.name)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "notes", tuple(self.notes))

    @property
    def num_classes(self) -> int:
        """How many classes there are: the class names', else one more than the largest
        label."""
        if self.class_names:
            return len(self.class_names)
        largest = max((int(y.max()) for y in (self.y_train, self.y_test) if y.size), default=-1)
        return largest + 1

    def split(self, validation: int = 5000, limit: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(x_train, y_train, x_val, y_val)``: the last ``validation`` training samples
        (a tenth of them, if that is fewer) held out for validation, and of the others the
        first ``limit`` (all when None). The test set stays for the final number."""
        samples = self.x_train.shape[0]
        held_out = min(validation, samples // 10)
        end = samples - held_out
        kept = end if limit is None else min(limit, end)
        return (self.x_train[:kept], self.y_train[:kept],
                self.x_train[end:], self.y_train[end:])

    def class_name(self, label: int) -> str:
        """The name of class ``label`` (the label itself, as text, when there are no names)."""
        return class_name(label, self.class_names, f"{self.name}: ")

    def __repr__(self) -> str:
        def describe(array: np.ndarray) -> str:
            return f"{array.dtype}{list(array.shape)}"

        return (
            f"Dataset(name={self.name!r}, x_train={describe(self.x_train)}, "
            f"y_train={describe(self.y_train)}, x_test={describe(self.x_test)}, "
            f"y_test={describe(self.y_test)}, source={self.source!r})"
        )




def class_name(label: Any, class_names: Sequence[str] | None, owner: str = "") -> str:
    """``class_names[label]``, or the label itself as text where there are no names;
    ``DataError`` for a label that is not 0 to len(class_names) − 1 (``owner`` begins the
    message: whose names they are)."""
    if not class_names:
        return str(label)
    if not (float(label).is_integer() and 0 <= int(label) < len(class_names)):
        raise DataError(f"{owner}label {label} has no class name: no class {label} among "
                        f"the {len(class_names)} names, for the labels 0 to "
                        f"{len(class_names) - 1}")
    return str(class_names[int(label)])


__all__ = ["Dataset", "class_name"]
