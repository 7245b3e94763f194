"""Progress of long loops: a tqdm bar on a terminal, plain periodic log lines otherwise.

A bar redraws itself in place, which a log file records as one line per redraw (replay
wrote one per image). When the stream is not a terminal (a service, CI, ``> log``),
``progress`` prints ``desc: 120/677 img (17.7%), 9.8 img/s, 12 s`` at most every
``interval_s`` seconds, and one line when the loop ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from tqdm import tqdm

LOG_INTERVAL_S = 10.0


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             leave: bool = True, disable: bool = False, initial: int = 0, interval_s: float = LOG_INTERVAL_S,
             stream=None):
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else a ``LogLines`` with the same calls."""
    stream = sys.stderr if stream is None else stream
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if _is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=disable, initial=initial,
                    file=stream)
    return LogLines(iterable, total, desc, unit, initial, interval_s, stream, disable)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LogLines:
    """The part of tqdm's interface the project uses (iterate, update, set_postfix, close, with)."""

    def __init__(self, iterable, total: int | None, desc: str, unit: str, initial: int, interval_s: float,
                 stream, disable: bool):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.interval_s, self.stream, self.disable = initial, interval_s, stream, disable
        self._initial, self._postfix, self._closed = initial, "", False
        self._started = self._last_log = time.monotonic()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last_log >= self.interval_s:
            self._last_log = now
            self._log(now)

    def set_postfix(self, values: dict) -> None:
        self._postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._log(time.monotonic(), done=True)

    def _log(self, now: float, done: bool = False) -> None:
        if self.disable:
            return
        elapsed = now - self._started
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100 * self.n / self.total:.1f}%)" if self.total else ""
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        line = (f"{self.desc}: {'done ' if done else ''}{count} {self.unit}{share}, {rate:.1f} {self.unit}/s, "
                f"{elapsed:.0f} s" + (f", {self._postfix}" if self._postfix else ""))
        print(line, file=self.stream, flush=True)
