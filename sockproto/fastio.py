"""Eager writes: send at once when nothing is queued, instead of on the next reactor turn.

Twisted's TCP transport appends every ``write`` to a buffer, asks the reactor
to watch the socket for writability and sends on the next turn: two extra
``epoll_ctl`` calls and a reactor pass for every small reply.  When the
transport has nothing queued, sending straight away is equivalent and much
cheaper; whatever the kernel does not take goes through the normal buffered
path, so ordering, producers and error handling stay Twisted's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp


def eagerWriter(transport: Any, traffic: Any = None) -> Callable[[bytes], None]:
    """
    A ``write`` for ``transport`` that sends immediately when its buffer is empty.

    Only plain TCP and UNIX stream transports get the fast path (their buffer
    state is Twisted's ``FileDescriptor``'s); anything else, TLS included,
    gets its own ``write``.  With ``traffic`` (a
    :class:`sockproto.connections.Traffic`), the bytes written are counted
    in its ``bytesOut``.
    """
    if not isinstance(transport, tcp.Connection) or type(transport).write is not tcp.Connection.write:
        if traffic is None:
            return transport.write
        plainWrite = transport.write

        def countingWrite(data: bytes) -> None:
            traffic.bytesOut += len(data)
            plainWrite(data)

        return countingWrite
    fallback = transport.write
    sock = transport.socket
    send = sock.send

    def write(data: bytes) -> None:
        if traffic is not None:
            traffic.bytesOut += len(data)
        t = transport
        if (
            not t._tempDataLen
            and t.offset == len(t.dataBuffer)
            and t.connected
            and not t.disconnecting
            and not t._writeDisconnected
        ):
            try:
                sent = send(data)
            except OSError:
                # EAGAIN, or an error Twisted's own write path will report.
                sent = 0
            if sent == len(data):
                return
            if sent:
                data = data[sent:]
        fallback(data)

    return write
