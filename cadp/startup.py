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


class StartupStop:
    """The SIGINT handler of a command line's start-up: notes the first signal (``signum``) and says so."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame) -> None:
        if self.signum is not None:  # a second Ctrl-C: nothing is written yet, so the process ends at once
            _say("stopped: interrupted while starting; nothing was written")
            os._exit(130)
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
