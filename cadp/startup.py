"""A command line's first step, before its libraries load: Ctrl-C is noted, never lost.

Python's own Ctrl-C handler raises KeyboardInterrupt wherever the program is. While torch, SciPy and FrEIA load,
that can be inside a callback whose exceptions Python only prints ("Exception ignored in ..."): the interrupt was
then lost, and ``python -m cadp.privatize`` went on to release every input with exit code 0. The handler here only
notes the signal; the run's own handler (``cadp.archive.StopRequests``) takes it over and stops before the first
release.
"""

from __future__ import annotations

import os
import signal
import sys

STOPPING_WHILE_STARTING = "stopping: the run ends once its libraries have loaded; nothing will be written"
STOPPED_STARTING = "stopped: interrupted while starting; nothing was written"


def stopped_while_starting(signum: int) -> tuple[str, int]:
    """What a command line says when ``signum`` ended it before it wrote anything, and its exit code (130 for
    Ctrl-C, 128 + N for signal N)."""
    if signum == signal.SIGINT:
        return STOPPED_STARTING, 130
    return f"stopped: ended by {signal.Signals(signum).name} while starting; nothing was written", 128 + signum


class StartupStop:
    """The SIGINT handler of a command line's start-up: notes the first signal (``signum``) and says so."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame) -> None:
        if self.signum is not None:  # a second Ctrl-C: nothing is written yet, so the process ends at once
            exit_while_starting(signum)
        self.signum = signum
        _say(STOPPING_WHILE_STARTING)


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # a closed or broken stderr: the stop still counts
        pass


def note_stop_signals() -> StartupStop | None:
    """Handle SIGINT with a ``StartupStop`` (not where it is ignored or handled already: nohup, an embedding
    program); returns it, or None."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None
    handler = StartupStop()
    signal.signal(signal.SIGINT, handler)
    return handler


def exit_while_starting(signum: int) -> None:
    """End the process at once for a second stop signal while nothing is written yet, saying so."""
    text, code = stopped_while_starting(signum)
    _say(text)
    os._exit(code)
