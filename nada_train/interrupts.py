"""Ctrl-C that never lands half-way through a change of state.

A training step's commit (the optimizer update, the iteration count, its log line) must happen
whole or not at all, or a resumed run is not the run it continues. Inside `interrupts_deferred()`
SIGINT and SIGTERM are held; they are delivered when the block ends, to the handlers that were
there before.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_deferred(signals: tuple[int, ...] = DEFERRED_SIGNALS) -> Iterator[None]:
    """Hold `signals` until the block ends, then deliver the first one that arrived.

    Python runs signal handlers only in the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum)) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if arrived:
            signal.raise_signal(arrived[0])


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's or `kill`'s polite stop) raises KeyboardInterrupt, as Ctrl-C does, so
    the same save-and-exit path runs. Main thread only; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
