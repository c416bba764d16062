"""Lean event dispatch for the epoll reactor.

For every ready socket, Twisted's epoll reactor wraps the read or write in
``log.callWithLogger``, which copies two dictionaries to give *legacy*
``log.msg`` calls a "system" prefix.  sockproto logs through
``twisted.logger``, which does not use that context, and on a small-message
load the wrapping costs about as much as the service's own work.
:func:`leanDispatch` gives an installed epoll reactor a loop that dispatches
straight to the same ``_doReadOrWrite``; nothing else changes.

Set ``SOCKPROTO_PLAIN_REACTOR=1`` to keep the reactor as Twisted made it.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.logger import Logger

log = Logger()


def leanDispatch(reactor: Any) -> bool:
    """
    Give ``reactor`` the lean dispatch loop if it is Twisted's epoll reactor.

    Returns whether it did.  Idempotent.
    """
    if os.environ.get("SOCKPROTO_PLAIN_REACTOR", "") not in ("", "0"):
        return False
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # not Linux
        return False
    if type(reactor) is not EPollReactor or getattr(reactor, "_sockprotoLean", False):
        return False
    reactor.doIteration = _leanPoll(reactor)
    reactor._sockprotoLean = True
    return True


def _leanPoll(reactor: Any) -> Any:
    poll = reactor._poller.poll
    selectables = reactor._selectables
    dispatch = reactor._doReadOrWrite

    def doPoll(timeout: float | None) -> None:
        if timeout is None:
            timeout = -1
        try:
            events = poll(timeout, len(selectables))
        except InterruptedError:
            return
        except OSError as e:  # pragma: no cover - Python retries EINTR itself
            if e.errno == errno.EINTR:
                return
            raise
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                try:
                    dispatch(selectable, fd, event)
                except Exception:
                    # _doReadOrWrite handles application errors itself; this is
                    # only for a failure while disconnecting.
                    log.failure("error dispatching an event for {fd}", fd=fd)

    return doPoll
