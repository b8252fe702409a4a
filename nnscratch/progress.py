"""One progress display for the whole library: bytes of a download, steps of an epoch.

    with Progress(total=469, label="epoch 1/10", unit="step") as bar:
        for batch in batches:
            ...
            bar.update(1)
            bar.set_postfix_str(f"loss {loss:.4f}")   # as often as you like: redrawn at most
                                                      # every `refresh` seconds

The interface is the part of tqdm's that the library uses, so either can stand in for the
other: ``update(n)`` adds ``n`` done units, ``set_postfix_str(text)`` sets the text shown
after the counts, ``close()`` ends the display (a ``with`` block calls it).

What is shown, on ``stream`` (stderr by default):

- ``enabled=False``: nothing at all;
- tqdm installed (and ``use_tqdm`` not false): a tqdm bar, sizes in kB/MB when
  ``unit="B"``;
- else, on a terminal: one line rewritten in place (``\\r``): the label, a bar of ``#`` and
  the percentage when the total is known, the counts, the postfix;
- else (a pipe, a log file): nothing while it runs, since a line rewritten in place makes
  a mess of a log; with ``leave=True`` one final line on ``close()``.

``leave`` says whether the finished display stays (a final line) or is erased (tqdm's
``leave``). The display never decides anything: it only shows what it is told.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

_BAR_WIDTH = 30
_MEGABYTE = 1e6


class Progress:
    """A progress display: tqdm when installed, else a one-line display on a terminal."""

    def __init__(self, total: int | None = None, label: str = "", *, unit: str = "it",
                 enabled: bool = True, leave: bool = False, stream: TextIO | None = None,
                 refresh: float = 0.1, use_tqdm: bool | None = None) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.enabled, self.leave, self.refresh = enabled, leave, refresh
        self.stream = stream
        self.count = 0
        self.postfix = ""
        self._tqdm: Any = None
        self._shown = ""  # the text of the line now on screen (plain display)
        self._last_draw = float("-inf")
        self._closed = False
        if enabled and use_tqdm is not False:
            self._tqdm = _make_tqdm(total, label, unit, leave, self._stream(), refresh)

    # -- the interface -------------------------------------------------------------------

    def update(self, count: int = 1) -> None:
        """Add ``count`` units done."""
        self.count += count
        if self._tqdm is not None:
            self._tqdm.update(count)
        else:
            self._draw()

    def set_postfix_str(self, text: str) -> None:
        """Show ``text`` after the counts (e.g. ``"loss 0.1234"``)."""
        self.postfix = text
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(text, refresh=False)
        else:
            self._draw()

    def close(self) -> None:
        """End the display: erase it, or leave a final line (``leave=True``)."""
        if self._closed:
            return
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.enabled:
            stream = self._stream()
            if _is_terminal(stream):
                if self.leave:
                    self._draw(force=True)
                    stream.write("\n")
                elif self._shown:
                    stream.write("\r" + " " * len(self._shown) + "\r")
            elif self.leave:
                stream.write(self.text() + "\n")
            stream.flush()
        self._closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the plain display ---------------------------------------------------------------

    def text(self) -> str:
        """The plain display's line: ``label [####      ]  40%  4.0/9.9 MB  postfix``."""
        parts = [self.label] if self.label else []
        if self.total:
            share = min(1.0, self.count / self.total)
            filled = int(_BAR_WIDTH * share)
            parts.append(f"[{'#' * filled}{' ' * (_BAR_WIDTH - filled)}] {100 * share:3.0f}%")
        parts.append(self._counts())
        if self.postfix:
            parts.append(self.postfix)
        return "  ".join(parts)

    def _counts(self) -> str:
        if self.unit == "B":
            done = f"{self.count / _MEGABYTE:.1f}"
            return f"{done}/{self.total / _MEGABYTE:.1f} MB" if self.total else f"{done} MB"
        done = f"{self.count}/{self.total}" if self.total else f"{self.count}"
        return f"{done} {self.unit}"

    def _draw(self, force: bool = False) -> None:
        if not self.enabled or self._closed:
            return
        stream = self._stream()
        if not _is_terminal(stream):
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.refresh:
            return
        self._last_draw = now
        line = self.text()
        if line != self._shown:
            # pad with spaces so a shorter line hides the end of a longer one
            stream.write("\r" + line.ljust(len(self._shown)))
            stream.flush()
            self._shown = line

    def _stream(self) -> TextIO:
        # looked up at each use, so output follows a redirected sys.stderr (pytest's capsys)
        return self.stream if self.stream is not None else sys.stderr


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _make_tqdm(total: int | None, label: str, unit: str, leave: bool, stream: TextIO,
               refresh: float) -> Any:
    """A tqdm bar, or None when tqdm is not installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    # disable=None: tqdm stays silent off a terminal (a pipe, a log), as the plain display
    return tqdm(total=total, desc=label or None, unit=unit, unit_scale=unit == "B",
                leave=leave, file=stream, dynamic_ncols=True, mininterval=refresh,
                disable=None)


__all__ = ["Progress"]
