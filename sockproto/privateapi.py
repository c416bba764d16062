# -*- test-case-name: tests.test_privateapi,tests.test_listen -*-
"""Every use of Twisted's private API in sockproto, fenced in one place.

Each function names the public API it stands in for and why that is not
enough; ``tests/test_privateapi.py`` checks each against the installed
Twisted, so an upgrade that breaks one fails loudly there, not in production.

- :func:`parseEndpointDescription`: ``twisted.internet.endpoints._parse``.
- :func:`optionHandler`: ``usage.Options._dispatch``.
- :func:`eagerWriter` and :func:`unsentBytes`: the write buffer of
  ``tcp.Connection`` (``_tempDataLen``, ``dataBuffer``, ``offset``,
  ``_writeDisconnected``).
- :func:`leanDispatch`: ``EPollReactor``'s ``_poller``, ``_selectables`` and
  ``_doReadOrWrite``.
- :func:`serveClientsOfferingALPN`: ``twisted.internet._sslverify``'s
  ``setupForALPN`` and ``protosFromProtocol``.
- :func:`flushBeforeTLSClose`: ``BufferingTLSTransport``'s ``_shutdownTLS``
  and ``_aggregator``.
- :func:`encodeRedisCommandsInOnePass`: txredisapi's ``RedisProtocol._build_command``
  and ``_encode_value`` (a third-party library's private API is fenced here too).
- :func:`refuseAtDescriptorLimit`: ``tcp._accept``, ``tcp._reservedFD``,
  ``tcp._ACCEPT_ERRORS`` and ``tcp.Port.socket``.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from twisted.internet import endpoints, tcp
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    globalLogBeginner,
)
from twisted.python import usage
from zope.interface import implementer

log = Logger()


def parseEndpointDescription(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Split an endpoint string into its positional and keyword parts, with
    Twisted's own quoting rules (``\\:`` for a colon).

    Public counterpart: ``endpoints.serverFromString``, which parses and builds
    at once; sockproto needs the parts to add defaults and to check strings
    before anything is built.
    """
    args, kwargs = endpoints._parse(description)
    return list(args), dict(kwargs)


def nameOptionsInErrors(options: usage.Options) -> None:
    """
    Make a bad value of a typed option say which option it was given to:
    ``bad --max-connections '0': 0 is not a positive whole number`` instead
    of usage.Options' ``Parameter type enforcement failed: ...``.

    Public counterpart: none; ``CoerceParameter.dispatch`` knows the name but
    leaves it out, so each coercing handler in ``Options._dispatch`` is
    wrapped.
    """
    for name, handler in list(options._dispatch.items()):
        if isinstance(handler, usage.CoerceParameter):
            options._dispatch[name] = _NamedCoercion(options, handler.coerce)


class _NamedCoercion(usage.CoerceParameter):
    def dispatch(self, parameterName: str, value: str) -> None:
        if value is None:
            raise usage.UsageError(f"--{parameterName} needs a value")
        try:
            self.options.opts[parameterName] = self.coerce(value)
        except ValueError as e:
            # A coercer of values that may hold a secret (a Redis URL's
            # password) says what is wrong without repeating the value.
            shown = "" if getattr(self.coerce, "secretive", False) else f" {value!r}"
            raise usage.UsageError(f"bad --{parameterName}{shown}: {e}") from None


#: Twisted's own lines about ports and factories, said for every listener and
#: datagram protocol; sockproto says "<service> listening on <address>" itself.
_TWISTED_CHATTER = re.compile(
    r"^(?:\S.* starting on \S+|\((?:\w+ )?Port \S+ Closed\)|Starting protocol <.*|Stopping protocol <.*"
    r"|(?:Starting|Stopping) factory (?:<.*|\{factory!r\}))$"
)


_NO_SNI_NAME = "no server certificate for name {name!r}"


@implementer(ILogFilterPredicate)
class _QuietAndLevel:
    """Drops Twisted's routine lines, then filters by level."""

    def __init__(self, level: LogLevel) -> None:
        self.levels = LogLevelFilterPredicate(defaultLogLevel=level)

    def __call__(self, event: dict[str, Any]) -> Any:
        text = event.get("log_text") or event.get("log_format") or ""
        if isinstance(text, str) and _TWISTED_CHATTER.match(text):
            return PredicateResult.no
        if text == _NO_SNI_NAME and event.get("name") is None:
            # tls:'s SNI lookup warns for every client that names no host, which gets the default certificate.
            return PredicateResult.no
        return self.levels(event)


def filterLogs(level: LogLevel, beginner: Any = globalLogBeginner) -> None:
    """
    Log events below ``level`` and Twisted's routine port and factory lines
    are dropped, whoever logs them (``--log-level``).

    Public counterpart: ``twist --log-level`` does the level part for
    ``python -m twisted`` only; twistd has none.  The observers twistd and
    twist install are wrapped in a ``FilteringLogObserver`` by wrapping
    ``globalLogBeginner.beginLoggingTo``, which both call once they have
    built the service (after this runs).
    """
    predicate = _QuietAndLevel(level)
    original = getattr(beginner, "_sockprotoOriginalBegin", None) or beginner.beginLoggingTo

    def beginLoggingTo(observers: Any, *args: Any, **kwargs: Any) -> Any:
        wrapped = [FilteringLogObserver(observer, [predicate]) for observer in observers]
        return original(wrapped, *args, **kwargs)

    setattr(beginner, "_sockprotoOriginalBegin", original)  # noqa: B010 - idempotent across calls
    beginner.beginLoggingTo = beginLoggingTo


def optionHandler(options: usage.Options, name: str) -> Any:
    """
    The handler ``usage.Options`` calls for the long option ``name``.

    Public counterpart: ``Options.parseOptions(argv)``, which handles a whole
    command line; the config file sets one key at a time, so that an error
    names its key.
    """
    return options._dispatch[name]


def eagerWriter(transport: Any, traffic: Any = None) -> Callable[[bytes], None]:
    """
    A ``write`` for ``transport`` that sends immediately when its buffer is empty.

    Only plain TCP and UNIX stream transports get the fast path (their buffer
    state is Twisted's ``FileDescriptor``'s); anything else, TLS included,
    gets its own ``write``.  With ``traffic`` (a
    :class:`sockproto.server.connections.Traffic`), the bytes written are counted
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


def sendAtOnce(transport: Any) -> None:
    """
    Make ``transport.write`` the :func:`eagerWriter`, for a protocol that a
    library writes with (a Redis client's): what it writes in a reactor turn
    is sent in that turn, without a trip through the reactor (two
    ``epoll_ctl`` calls and a wait for the next poll per write).

    Public counterpart: none; Twisted's ``write`` buffers until the socket
    is next reported writable.  A no-op for transports the eager writer
    does not speed up (TLS).
    """
    write = eagerWriter(transport)
    if write is not transport.write:
        transport.write = write


def unsentBytes(transport: Any) -> int | None:
    """
    Bytes written to ``transport`` and not sent yet, or None when it cannot
    be told (a transport that is not a Twisted socket).

    Public counterpart: the streaming producer's ``pauseProducing``, which
    only says that more than the buffer mark (64 KiB, also the size of every
    read) is unsent; raising the mark would make every read allocate that
    much.  Under TLS, the socket's buffer holds the encrypted bytes.
    """
    while not isinstance(transport, tcp.Connection):
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


# -- the epoll reactor ------------------------------------------------------------
#
# For every ready socket, Twisted's epoll reactor wraps the read or write in
# ``log.callWithLogger``, which copies two dictionaries to give *legacy*
# ``log.msg`` calls a "system" prefix.  sockproto logs through
# ``twisted.logger``, which does not use that context, and on a small-message
# load the wrapping costs about as much as the service's own work.
# Set ``SOCKPROTO_PLAIN_REACTOR=1`` to keep the reactor as Twisted made it.
# Public counterpart: none (``IReactorCore.run``).

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
    reactor.doIteration = _leanPoll(reactor)  # type: ignore[method-assign]
    setattr(reactor, "_sockprotoLean", True)  # noqa: B010 - a mark of our own on Twisted's object
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


def adoptUNIXPort(reactor: Any, fileDescriptor: int, factory: Any, mode: int) -> Any:
    """
    ``reactor.adoptStreamPort`` for a listening UNIX socket, keeping ``mode``
    on its path.

    Public counterpart: ``adoptStreamPort`` itself, which chmods the path of
    an adopted UNIX socket to 0666 (``unix.Port``'s default mode); the port
    is built the way it does, with the mode set before it starts listening.
    """
    from twisted.internet import unix

    port = unix.Port._fromListeningDescriptor(reactor, fileDescriptor, factory)
    port.mode = mode
    port.startListening()
    return port


# -- ALPN on TLS servers ------------------------------------------------------------


def serveClientsOfferingALPN() -> bool:
    """
    Make Twisted's TLS servers accept clients that offer ALPN protocols the
    server does not speak (every browser and curl offer ``h2`` and
    ``http/1.1``), instead of failing the handshake with an internal-error
    alert.

    From Twisted 25, every context ``CertificateOptions`` makes gets an ALPN
    selection callback (``_sslverify.setupForALPN``) that answers "no
    overlap" with an empty protocol name; pyOpenSSL passes it on as a
    selection, and OpenSSL 3 aborts the handshake on an empty one.  The
    marker pyOpenSSL defines for "none of these, go on without ALPN" is
    ``SSL.NO_OVERLAPPING_PROTOCOLS`` (Twisted's own code says so in a TODO).
    The replacement chooses exactly as Twisted does otherwise: the first of
    the server's protocols (its factory's ``IProtocolNegotiationFactory``
    ones, then the options' own) that the client offered.

    Twisted before 25 sets no callback where the server has no protocols of
    its own, so there is nothing to mend.  Returns whether it changed
    anything.  Idempotent.

    Public counterpart: none; the callback is installed inside
    ``CertificateOptions.getContext``.
    """
    from OpenSSL import SSL
    from twisted.internet import _sslverify

    original = getattr(_sslverify, "setupForALPN", None)
    protocolsOf = getattr(_sslverify, "protosFromProtocol", None)
    if original is None or protocolsOf is None or getattr(original, "_sockprotoMended", False):
        return False

    def setupForALPN(context: SSL.Context, acceptableProtocols: Any) -> None:
        def select(connection: SSL.Connection, offered: list[bytes]) -> Any:
            ours = protocolsOf(connection.get_app_data(), acceptableProtocols)
            for candidate in ours:
                if candidate in offered:
                    return candidate
            return SSL.NO_OVERLAPPING_PROTOCOLS

        context.set_alpn_select_callback(select)

    setattr(setupForALPN, "_sockprotoMended", True)  # noqa: B010 - a mark of our own
    _sslverify.setupForALPN = setupForALPN
    return True


def flushBeforeTLSClose() -> bool:
    """
    Make a TLS connection send what its protocol wrote before the close it
    sends in answer to the peer's (close_notify).

    Twisted's TLS transport gathers small writes and sends them at the next
    reactor turn; when the peer's close arrives in the same read as its last
    request (``socat`` and ``nc``-like TLS clients at the end of their
    input, a proxy passing a half-close on), the reply written in
    ``dataReceived`` is still gathered when the transport answers the close
    and shuts down, and it is lost.  Its ``loseConnection`` flushes first;
    its answer to the peer's close (``_shutdownTLS``) did not.  Returns
    whether it changed anything.  Idempotent.

    Public counterpart: none; ``BufferingTLSTransport`` is what
    ``TLSMemoryBIOFactory`` builds.
    """
    from twisted.protocols import tls

    buffering = getattr(tls, "BufferingTLSTransport", None)
    if buffering is None or getattr(buffering, "_sockprotoFlushes", False):
        return False
    shutdown = buffering._shutdownTLS

    def _shutdownTLS(self: Any) -> None:
        aggregator = getattr(self, "_aggregator", None)
        if aggregator is not None:
            aggregator.flush()
        shutdown(self)

    buffering._shutdownTLS = _shutdownTLS
    setattr(buffering, "_sockprotoFlushes", True)  # noqa: B010 - a mark of our own
    return True
class DescriptorLimitHandler(Protocol):
    """What a listening port does with connections it cannot take at the descriptor limit."""

    #: Sent to each such connection before it is closed (None: closed without a word, e.g. TLS).
    refusal: bytes | None

    def refused(self, count: int) -> None:
        """``count`` connections were accepted on the reserve descriptor, sent the refusal and closed."""

    def couldNotAccept(self, reason: str) -> None:
        """accept() failed (``EMFILE`` with no reserve, ``ENFILE``, ``ENOBUFS``...); the client waits in the backlog."""


_descriptorLimitHandlers: weakref.WeakKeyDictionary[socket.socket, DescriptorLimitHandler] = (
    weakref.WeakKeyDictionary()
)
_twistedAccept = tcp._accept


def refuseAtDescriptorLimit(port: Any, handler: DescriptorLimitHandler) -> bool:
    """
    At the descriptor limit, have ``port`` (a listening ``tcp.Port``, or
    ``unix.Port``, ``ssl.Port``) send each connection it cannot take
    ``handler.refusal`` and tell ``handler``, where Twisted logs three lines
    per connection and closes it without a word.  As nginx does, a reserve
    descriptor is closed, the connection accepted on it, refused, closed,
    and the reserve opened again.  Returns whether the port is one it can
    do this for.

    Public counterpart: none.  ``tcp.Port.doRead`` accepts through the
    module's ``_accept`` generator, which does the EMFILE recovery with
    Twisted's own reserve (``tcp._reservedFD``) and logs each step; it is
    replaced (once, for every port) by one that does the same for the
    listening sockets registered here, and hands the others to Twisted's.
    """
    listener = getattr(port, "socket", None)
    if not isinstance(listener, socket.socket):
        return False
    _descriptorLimitHandlers[listener] = handler
    tcp._accept = _acceptOrRefuse
    return True


def _acceptOrRefuse(logger: Any, accepts: Any, listener: Any, reservedFD: Any) -> Iterator[tuple[Any, Any]]:
    handler = _descriptorLimitHandlers.get(listener)
    if handler is None:
        yield from _twistedAccept(logger, accepts, listener, reservedFD)
        return
    for _ in accepts:
        try:
            client, address = listener.accept()
        except OSError as e:
            code = e.args[0]
            if code in (errno.EWOULDBLOCK, errno.EAGAIN):
                return
            if code == errno.EPERM:  # netfilter refused it after all
                continue
            if code == errno.EMFILE and reservedFD.available():
                # Nothing in here may open a descriptor: the reserve's is the only one free.
                refused = 0
                with reservedFD:
                    # As many more as Twisted would have accepted (``accepts`` is a range, iterated afresh).
                    for extra in _acceptWhilePending(accepts, listener):
                        _refuse(extra, handler.refusal)
                        refused += 1
                handler.refused(refused)
                return
            if code in tcp._ACCEPT_ERRORS:
                handler.couldNotAccept(errno.errorcode.get(code, str(code)))
                return
            raise
        else:
            yield client, address


def _acceptWhilePending(accepts: Any, listener: Any) -> Iterator[Any]:
    for _ in accepts:
        try:
            client, _address = listener.accept()
        except OSError as e:
            if e.args[0] == errno.EPERM:
                continue
            return  # none left (EAGAIN), or still no descriptor
        yield client


def _refuse(client: socket.socket, refusal: bytes | None) -> None:
    try:
        if refusal:
            client.setblocking(False)
            client.send(refusal)  # a fresh socket's buffer takes one line; if not, it goes unsaid
    except OSError:
        pass
    finally:
        client.close()


# -- txredisapi ------------------------------------------------------------------------

#: RESP bulk-string headers (``$LENGTH\r\n``) of the usual sizes, made once.
_CACHED_HEADERS = 4096
_BULK_HEADERS = [b"$%d\r\n" % size for size in range(_CACHED_HEADERS)]


def encodeRedisCommandsInOnePass(protocolClass: type) -> None:
    """
    Give a subclass of txredisapi's ``RedisProtocol`` a command encoder that
    makes the same bytes as txredisapi's own in one pass.

    Public counterpart: none; txredisapi encodes every command with
    ``RedisProtocol._build_command``, which formats every length through
    ``str.format``, and converts non-bytes values with ``_encode_value``,
    which this one calls for them as txredisapi does.
    """

    def _build_command(self: Any, *args: Any, **kwargs: Any) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        encode = self._encode_value
        for arg in args:
            if arg.__class__ is not bytes:
                arg = encode(arg)
            size = len(arg)
            parts += (_BULK_HEADERS[size] if size < _CACHED_HEADERS else b"$%d\r\n" % size, arg, b"\r\n")
        return b"".join(parts)

    protocolClass._build_command = _build_command  # type: ignore[attr-defined]
