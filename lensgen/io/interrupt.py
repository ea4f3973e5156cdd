"""Ctrl-C at safe points: SIGINT sets a flag that the workflows check between steps.

Python's default SIGINT handler raises :class:`KeyboardInterrupt` wherever the
main thread happens to be. Inside JAX that is unsafe: jaxlib's wait for a
compilation checks for signals, so the exception abandons a compilation that an
XLA worker thread is still running; interpreter shutdown then frees the client
under that thread, which crashes (segmentation fault, exit 139).
Raised inside a module import or a garbage-collection callback it half-imports
the module, or is swallowed ("Exception ignored in _xla_gc_callback") so that
Ctrl-C is lost and the command goes on to replace its outputs.

Inside :func:`deferred_interrupt`, Ctrl-C only records the request;
:func:`check_interrupt` raises :class:`KeyboardInterrupt` at the points the
workflow chose (between epochs, chunks, subfields, downloaded blocks), where no
JAX work is in flight and every file on disk is consistent; leaving a block with
a request pending raises it there too. :func:`interruptible` marks waits with no
JAX work (network reads) where Ctrl-C may act at once. Pure standard library: the
CLI installs it before importing JAX.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class _State:
    depth = 0
    pending = False
    previous: object = None


def _handler(signum: int, frame: object) -> None:
    _State.pending = True


def check_interrupt() -> None:
    """Raise :class:`KeyboardInterrupt` if Ctrl-C was pressed since the last check."""
    if _State.pending:
        _State.pending = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Within this block Ctrl-C is acted upon only at :func:`check_interrupt` calls.

    Nested blocks share the outermost one's handler. Outside the main thread, or
    when SIGINT is not Python's default handler (ignored, or set by the host
    program), nothing is changed.
    """
    if _State.depth == 0:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.default_int_handler:
            yield
            return
        _State.previous = previous
        _State.pending = False
        signal.signal(signal.SIGINT, _handler)
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if _State.depth == 0:
            signal.signal(signal.SIGINT, _State.previous)
    check_interrupt()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Let Ctrl-C raise at once inside this block (a network wait, with no JAX work).

    Within :func:`deferred_interrupt` a pending Ctrl-C is raised on entry and
    Python's default handler is in place until the block ends; elsewhere this does
    nothing.
    """
    if _State.depth == 0 or signal.getsignal(signal.SIGINT) is not _handler:
        yield
        return
    check_interrupt()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, _handler)
