"""A watchdog for training runs that hang: no step within ``--watchdog-seconds`` ⇒ stacks, phase, exit.

The trainers name the phase they are in (``generation``, ``reward``, ``training``, ``collective``,
``weight sync``, ``checkpoint``, ``eval``, ``plot``) through :meth:`Watchdog.phase` and call
:meth:`Watchdog.beat` when a step starts and again when its training part is done (so writing
its checkpoint gets a full window of its own). A daemon thread checks the clock; when no step
finished within the limit it writes every thread's stack (``faulthandler``) and a one-line
error naming the phase and step to stderr, then ends the process with exit status
:data:`EXIT_CODE` via ``os._exit`` — the stuck thread may never return, so nothing waits for it.
Checkpoints are written to a temporary folder and renamed (``save_checkpoint``), so the last
complete checkpoint is intact whenever the process dies. Under torchrun each rank has its own
watchdog; ``torchrun`` ends the other ranks when one exits non-zero.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
import threading
import time
from collections.abc import Iterator

#: Exit status of a run ended by the watchdog.
EXIT_CODE = 3


class Watchdog:
    """``Watchdog(seconds)``; ``seconds <= 0`` makes every method a cheap no-op."""

    def __init__(self, seconds: float, rank: int = 0):
        self.seconds, self.rank = seconds, rank
        self.current, self.step = "startup", 1
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Watchdog:
        if self.seconds > 0 and self._thread is None:
            self._stop.clear()
            self._last = time.monotonic()
            self._thread = threading.Thread(target=self._watch, name="verity-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Mark ``name`` as the current phase for the duration of the block (nests; restores on exit)."""
        saved, self.current = self.current, name
        try:
            yield
        finally:
            self.current = saved

    def beat(self, step: int) -> None:
        """Restart the clock; ``step`` (1-based) is the step being worked on, named if it hangs."""
        self.step, self._last = step, time.monotonic()

    def _watch(self) -> None:
        poll = min(1.0, self.seconds / 4)
        while not self._stop.wait(poll):
            if time.monotonic() - self._last > self.seconds:
                self._fire()

    def _fire(self) -> None:
        where = f" (rank {self.rank})" if self.rank else ""
        try:
            print(f"\nwatchdog{where}: stack of every thread:", file=sys.stderr, flush=True)
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            print(f"error: watchdog{where}: no training step finished within --watchdog-seconds "
                  f"{self.seconds:g}; stuck in phase '{self.current}' during step {self.step}; "
                  "the last checkpoint is intact (resume with --resume)", file=sys.stderr, flush=True)
        finally:
            os._exit(EXIT_CODE)
