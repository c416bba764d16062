# -*- test-case-name: tests.test_cli_e2e -*-
"""What every tool of the ``sockproto`` command shares: its exit statuses and how it runs the reactor."""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer, task

from sockproto.interfaces import IServerReactor

#: It worked.
OK = 0
#: The server said no: the key is not there, or is there already (``kv``).
NO = 1
#: A bad command line or endpoint string.
USAGE = 2
#: Could not connect: refused, timed out, the TLS certificate or name not accepted.
UNREACHABLE = 3
#: Connected, then failed: the connection lost, a server error, no reply in time.
FAILED = 4
#: Stopped by Ctrl-C (SIGINT), as shells report it: 128 + 2.
INTERRUPTED = 130
#: Stopped by SIGTERM, as shells report it: 128 + 15.
TERMINATED = 143

#: For every tool's ``--help``.
EXIT_STATUSES = (
    "Exit status: 0 success, 1 not found or already exists, 2 usage, "
    "3 could not connect (refused, timed out, certificate or name not accepted), "
    "4 failed after connecting (connection lost, server error, no reply in time), 130 interrupted (Ctrl-C), "
    "143 stopped (SIGTERM)."
)


def interrupted() -> int:
    """Ctrl-C: finish the terminal's line (a prompt or a progress line may be open), no traceback."""
    sys.stderr.write("\n")
    sys.stderr.flush()
    return INTERRUPTED


_interrupts: list[bool] = []


def wasInterrupted() -> bool:
    """Whether Ctrl-C is stopping the reactor: what is lost meanwhile is the user's doing, not an error."""
    return bool(_interrupts)


def runReactor(main: Callable[[Any], Awaitable[int]]) -> int:
    """
    Run ``main(reactor)`` (a coroutine function returning an exit status)
    under ``task.react`` and return its status; :data:`FAILED` if it raised,
    :data:`INTERRUPTED` after Ctrl-C, which stops the reactor at once.
    """
    status: list[int] = []
    stopped: list[int] = []  # the signal that stopped it

    def run(reactor: IServerReactor) -> defer.Deferred[None]:
        def onInterrupt(signum: int, frame: Any) -> None:
            # Twisted's own handler would log and stop too; this one just stops.
            stopped.append(signum)
            _interrupts.append(True)
            reactor.callFromThread(reactor.stop)

        # Ctrl-C, and a kill (SIGTERM) as well: what is lost meanwhile is not an error.  Once
        # running too: the reactor installs its own SIGTERM handler when it starts.
        def handleSignals() -> None:
            signal.signal(signal.SIGINT, onInterrupt)
            signal.signal(signal.SIGTERM, onInterrupt)

        handleSignals()
        reactor.callWhenRunning(handleSignals)

        async def go() -> None:
            status.append(await main(reactor))

        return defer.ensureDeferred(go())

    try:
        task.react(run)
    except SystemExit:
        pass  # react exits; the status is the one main returned
    except KeyboardInterrupt:
        stopped.append(signal.SIGINT)
    if stopped:
        if stopped[0] == signal.SIGTERM:
            return TERMINATED
        return interrupted()
    return status[0] if status else FAILED
