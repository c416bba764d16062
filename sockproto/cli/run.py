"""What every tool of the ``sockproto`` command shares: its exit statuses and how it runs the reactor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer, task

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

#: For every tool's ``--help``.
EXIT_STATUSES = (
    "Exit status: 0 success, 1 not found or already exists, 2 usage, "
    "3 could not connect (refused, timed out, certificate or name not accepted), "
    "4 failed after connecting (connection lost, server error, no reply in time)."
)


def runReactor(main: Callable[[Any], Awaitable[int]]) -> int:
    """
    Run ``main(reactor)`` (a coroutine function returning an exit status)
    under ``task.react`` and return its status; :data:`FAILED` if it raised.
    """
    status: list[int] = []

    def run(reactor: Any) -> defer.Deferred[None]:
        async def go() -> None:
            status.append(await main(reactor))

        return defer.ensureDeferred(go())

    try:
        task.react(run)
    except SystemExit:
        pass  # react exits; the status is the one main returned
    return status[0] if status else FAILED
