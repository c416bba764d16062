# -*- test-case-name: tests.test_redis_link,tests.test_binary_redisstore,tests.test_chat_cluster -*-
"""A link to a Redis server, shared by the services that keep state there.

Addresses are URLs: ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``,
``rediss://...`` (TLS, verified: ``?ca=FILE`` for a private CA,
``&cert=FILE&key=FILE`` for a client certificate) and ``unix:PATH`` or
``unix://PATH`` (``?db=N&password=...``).  A password may come from the
``SOCKPROTO_REDIS_PASSWORD`` environment variable instead, so it is not on
the command line; it never appears in a log.

The client is txredisapi, the maintained Twisted-native Redis client, on
hiredis's C reply parser (txredisapi's own parser resumes after every bulk
reply in a new reactor turn).  Only its protocols are used: connecting and
reconnecting (capped exponential backoff) is Twisted's ``ClientService`` on
sockproto's own endpoints, so the reactor is injected and TLS is verified
like every other sockproto client.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl as stdssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, endpoints, protocol
from twisted.logger import Logger

from sockproto.interfaces import IServerReactor
from sockproto.privateapi import encodeRedisCommandsInOnePass, sendAtOnce
from sockproto.server.targets import TLSSettings, tlsOptions

log = Logger()

PASSWORD_VARIABLE = "SOCKPROTO_REDIS_PASSWORD"

#: Reconnecting: the first retry after 0.1 s, then doubling up to 5 s.
RETRY_POLICY = backoffPolicy(initialDelay=0.1, factor=2.0, maxDelay=5.0)


@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis is and how to log in to it."""

    display: str  # the URL without its password, for logs and errors
    host: str = ""
    port: int = 6379
    path: str = ""  # a UNIX socket
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: TLSSettings | None = None

    def endpoint(self, reactor: IServerReactor, timeout: float = 5.0) -> Any:
        if self.path:
            return endpoints.UNIXClientEndpoint(reactor, self.path, timeout=timeout)
        inner = endpoints.HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)
        if self.tls is None:
            return inner
        return endpoints.wrapClientTLS(tlsOptions(self.host, self.tls), inner)


def parseRedisURL(url: str) -> RedisAddress:
    """A :class:`RedisAddress` for ``url``, or ValueError saying what is wrong with it."""
    if url.startswith("unix:") and not url.startswith("unix://"):
        url = "unix://" + url[len("unix:"):]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{_masked(url)!r} is not a Redis URL ({e})") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"db", "password", "ca", "cert", "key"}
    if unknown:
        known = "db, password, ca, cert, key"
        raise ValueError(f"{_masked(url)!r}: unknown option {sorted(unknown)[0]!r} (known: {known})")
    password = unquote(parts.password) if parts.password else query.get("password")
    username = unquote(parts.username) if parts.username else None
    password = password or os.environ.get(PASSWORD_VARIABLE) or None
    dbText = query.get("db", parts.path.lstrip("/") if parts.scheme != "unix" else "") or "0"
    if not dbText.isdigit():
        raise ValueError(f"{_masked(url)!r}: the database must be a number, not {dbText!r}")
    scheme = parts.scheme.lower()
    if scheme == "unix":
        path = parts.path or parts.netloc
        if not path:
            raise ValueError(f"{_masked(url)!r}: no socket path (unix:/path/to/redis.sock)")
        return RedisAddress(f"unix:{path}", path=path, db=int(dbText), username=username, password=password)
    if scheme not in ("redis", "rediss"):
        raise ValueError(f"{_masked(url)!r}: expected redis://, rediss:// or unix:")
    host = parts.hostname or "127.0.0.1"
    tls = TLSSettings(query.get("ca"), query.get("cert"), query.get("key")) if scheme == "rediss" else None
    display = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port or 6379}/{int(dbText)}"
    return RedisAddress(display, host, port or 6379, "", int(dbText), username, password, tls)


def _masked(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password:
            return url.replace(":" + parts.password + "@", ":***@", 1)
    except ValueError:
        pass
    return url.split("password=")[0] + ("password=***" if "password=" in url else "")


def redisURL(value: str) -> str:
    """A usage.Options coercer: the URL, checked."""
    parseRedisURL(value)
    return value


redisURL.secretive = True  # type: ignore[attr-defined]  # errors show the URL masked, not as given
redisURL.coerceDoc = (  # type: ignore[attr-defined]
    "redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS, ?ca=FILE), or unix:PATH[?db=N]."
)


# -- at start-up -------------------------------------------------------------


def _command(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def probe(address: RedisAddress, timeout: float = 3.0) -> None:
    """
    Connect, log in and PING, blocking (before the reactor runs): the process
    must not start serving a cluster it cannot reach.  Raises OSError or
    ValueError with the reason.
    """
    if address.path:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        sock.connect(address.path)
    else:
        sock = socket.create_connection((address.host, address.port), timeout=timeout)
    try:
        if address.tls is not None:
            context = stdssl.create_default_context(cafile=address.tls.ca)
            context.minimum_version = stdssl.TLSVersion.TLSv1_2
            if address.tls.cert:
                context.load_cert_chain(address.tls.cert, address.tls.key)
            sock = context.wrap_socket(sock, server_hostname=address.host)
        requests = []
        if address.password is not None:
            login = (address.username, address.password) if address.username else (address.password,)
            requests.append(_command("AUTH", *login))
        if address.db:
            requests.append(_command("SELECT", str(address.db)))
        requests.append(_command("PING"))
        sock.sendall(b"".join(requests))
        replies = b""
        while replies.count(b"\r\n") < len(requests):
            chunk = sock.recv(4096)
            if not chunk:
                raise OSError("the server closed the connection")
            replies += chunk
        for line in replies.split(b"\r\n")[: len(requests)]:
            if line.startswith(b"-"):
                raise ValueError(line[1:].decode("utf-8", "replace"))
    finally:
        sock.close()


def waitForRedis(address: RedisAddress, wait: float, what: str, waitOption: str) -> None:
    """
    :func:`probe` until it answers, for at most ``wait`` seconds (0: once);
    SystemExit naming the address if it never does, and the option
    (``waitOption``) that would have kept trying.
    """
    deadline = time.monotonic() + wait
    delay = 0.1
    while True:
        try:
            probe(address)
            return
        except (OSError, ValueError) as e:
            reason = str(e) or type(e).__name__
        if time.monotonic() + delay > deadline:
            hint = "" if wait else f" ({waitOption} SECONDS keeps trying)"
            raise SystemExit(f"{what}: cannot reach Redis at {address.display}: {reason}{hint}")
        log.warn("waiting for Redis at {address}: {reason}", address=address.display, reason=reason)
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


# -- while running -----------------------------------------------------------


class FirstLink:
    """
    Work that comes before a service's first link to Redis waits for it, for
    at most ``timeout`` seconds from :meth:`start`; after that (or once
    :meth:`open`), nothing waits: the service decides with or without Redis.
    """

    def __init__(self, reactor: IServerReactor, timeout: float) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self._waiting: list[defer.Deferred[None]] | None = []
        self._timer: Any = None

    def start(self) -> None:
        self._timer = self.reactor.callLater(self.timeout, self.open)

    @property
    def pending(self) -> bool:
        """True until the first link is made or the wait is over."""
        return self._waiting is not None

    def wait(self) -> defer.Deferred[None]:
        """Fires once the gate opens (call only while :attr:`pending`)."""
        assert self._waiting is not None, "FirstLink.wait after the gate opened"
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)
        return d

    def __len__(self) -> int:
        return len(self._waiting or ())

    def open(self) -> None:
        waiting, self._waiting = self._waiting, None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        for d in waiting or ():
            d.callback(None)


class Script:
    """
    A Lua script run by its SHA1 (EVALSHA).  Give it to the RedisLink, which
    loads it on every connection; should Redis forget it (SCRIPT FLUSH), it
    is sent whole again.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, connection: Any, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> defer.Deferred[Any]:
        d = connection.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

        def unknown(failure: Any) -> Any:
            failure.trap(txredisapi.ResponseError)
            if "NOSCRIPT" not in str(failure.value):
                return failure
            return connection.execute_command("EVAL", self.source, len(keys), *keys, *args)

        return d.addErrback(unknown)


class _CommandProtocol(txredisapi.RedisProtocol):
    link: RedisLink

    def connectionMade(self) -> Any:
        # A turn's commands go to Redis in that turn, not at the next poll.
        sendAtOnce(self.transport)
        return txredisapi.RedisProtocol.connectionMade(self)

    def tryConvertData(self, data: Any) -> Any:
        # The link's protocols convert nothing (no charset, no numbers), so
        # txredisapi's conversion is the identity; it walks every element of
        # every reply all the same (a method call per value of an MGET).
        if self.charset is None and not self.convertNumbers:
            return data
        return txredisapi.RedisProtocol.tryConvertData(self, data)

    def connectionLost(self, why: Any) -> None:
        txredisapi.RedisProtocol.connectionLost(self, why)
        self.link._lost(self)


# txredisapi's command encoder converted every length through str.format: a
# sixth of a turn's CPU with a few hundred arguments (a turn's writes in one
# script call).  The same bytes, in one pass.
encodeRedisCommandsInOnePass(_CommandProtocol)


class _SubscriberProtocol(txredisapi.SubscriberProtocol):
    link: RedisLink

    def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
        self.link.onMessage(channel, message)

    def connectionLost(self, why: Any) -> None:
        txredisapi.SubscriberProtocol.connectionLost(self, why)
        self.link._lost(self)


class _Factory(protocol.Factory):
    noisy = False

    def __init__(self, link: RedisLink, protocolClass: type) -> None:
        self.link = link
        self.protocolClass = protocolClass

    def buildProtocol(self, addr: Any) -> Any:
        link = self.link
        # Bytes in and out, no guessing at numbers; a command that gets no
        # answer in time drops the connection (a hung Redis is a lost one).
        timeout = link.replyTimeout if self.protocolClass is _CommandProtocol else None
        proto = self.protocolClass(charset=None, convertNumbers=False, replyTimeout=timeout)
        proto.factory = self
        proto.link = link
        # ClientService hands prepareConnection a proxy of this protocol; the
        # link keeps the protocol itself, to know it when it is lost.
        proto.itself = proto
        proto.callLater = link.reactor.callLater  # txredisapi's default is the global reactor
        return proto

    # What txredisapi's protocol calls on its factory.
    def stopTrying(self) -> None:
        pass

    def connectionError(self, message: str) -> None:
        log.error("Redis: {message}", message=message)


class _Preparation:
    """
    Makes a new connection ready (``prepare``: log in, load the scripts,
    subscribe) for ClientService, which must never see it fail.

    ClientService takes a failed preparation for a failed connection attempt
    and waits to retry, but leaves the connection open; when that connection
    is then lost (a reply timeout during a Redis stall aborts it, as does
    Redis going away), it hears of a disconnection in a state that has none
    and raises automat's NoTransition from the transport's connectionLost, a
    critical "Unhandled Error" on every retry.  So a connection that cannot
    be made ready is accepted and at once aborted: ClientService sees an
    ordinary lost connection and retries.  Because an accepted connection
    resets its count of failures, the retry delay grows with this count
    instead (``retryDelay`` is the service's retry policy).
    """

    def __init__(self, link: RedisLink, prepare: Callable[[Any], Any]) -> None:
        self.link = link
        self.prepare = prepare
        #: Connections in a row that could not be made ready.
        self.failures = 0

    def retryDelay(self, attempt: int) -> float:
        return float(RETRY_POLICY(max(attempt, self.failures)))

    def __call__(self, proto: Any) -> defer.Deferred[None]:
        return defer.maybeDeferred(self.prepare, proto).addCallbacks(
            self._ready, self._failed, errbackArgs=(proto,)
        )

    def _ready(self, _: Any) -> None:
        self.failures = 0

    def _failed(self, failure: Any, proto: Any) -> None:
        self.failures += 1
        if self.failures == 1:  # once per episode; "linked to Redis" ends it
            log.warn(
                "a new connection to Redis at {address} could not be made ready ({reason}); retrying",
                address=self.link.address.display, reason=failure.value,
            )
        if proto.connected and proto.transport is not None:
            proto.transport.abortConnection()


class RedisLink:
    """
    A command connection and, given ``channels``, a subscriber connection to
    one Redis, both reconnected with capped exponential backoff.

    ``onUp(link)`` is called once both are ready (logged in, subscribed), and
    ``onDown(link)`` once when either is lost; ``onMessage(channel, data)``
    for every published message.  ``command`` is the connection to use, or
    None while the link is down.
    """

    def __init__(
        self,
        reactor: IServerReactor,
        address: RedisAddress,
        channels: Sequence[bytes] = (),
        onUp: Callable[[RedisLink], Any] = lambda link: None,
        onDown: Callable[[RedisLink], Any] = lambda link: None,
        onMessage: Callable[[bytes, bytes], Any] = lambda channel, data: None,
        replyTimeout: float = 5.0,
        scripts: Sequence[Script] = (),
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.channels = list(channels)
        self.onUp = onUp
        self.onDown = onDown
        self.onMessage = onMessage
        self.replyTimeout = replyTimeout
        self.scripts = list(scripts)
        self.command: Any = None
        self.subscriber: Any = None
        self.up = False
        self.connects = 0
        self._services: list[ClientService] = []
        self.preparations: list[_Preparation] = []

    def start(self) -> None:
        kinds = [(_CommandProtocol, self._prepareCommand)]
        if self.channels:
            kinds.append((_SubscriberProtocol, self._prepareSubscriber))
        for protocolClass, prepare in kinds:
            preparation = _Preparation(self, prepare)
            self.preparations.append(preparation)
            service = ClientService(
                self.address.endpoint(self.reactor),
                _Factory(self, protocolClass),
                retryPolicy=preparation.retryDelay,
                clock=self.reactor,
                prepareConnection=preparation,
            )
            service.startService()
            self._services.append(service)

    def stop(self) -> defer.Deferred[Any]:
        services, self._services = self._services, []
        self.up = False
        return defer.gatherResults([defer.maybeDeferred(s.stopService) for s in services], consumeErrors=True)

    @defer.inlineCallbacks
    def _login(self, proto: Any) -> Any:
        address = self.address
        if address.password is not None:
            login = (address.username, address.password) if address.username else (address.password,)
            yield proto.execute_command("AUTH", *login)
        if address.db:
            yield proto.execute_command("SELECT", address.db)

    @defer.inlineCallbacks
    def _prepareCommand(self, proto: Any) -> Any:
        yield self._login(proto)
        # Loaded before use: a script Redis does not know would be sent again
        # after the commands that followed it, out of order.
        for script in self.scripts:
            yield proto.execute_command("SCRIPT", "LOAD", script.source)
        self.command = proto.itself
        self._checkUp()

    @defer.inlineCallbacks
    def _prepareSubscriber(self, proto: Any) -> Any:
        yield self._login(proto)
        yield proto.subscribe(self.channels)
        self.subscriber = proto.itself
        self._checkUp()

    def _checkUp(self) -> None:
        if self.up or self.command is None or (self.channels and self.subscriber is None):
            return
        self.up = True
        self.connects += 1
        log.info("linked to Redis at {address}", address=self.address.display)
        self.onUp(self)

    def _lost(self, proto: Any) -> None:
        if proto is self.command:
            self.command = None
        elif proto is self.subscriber:
            self.subscriber = None
        else:
            return
        if self.up:
            self.up = False
            if self._services:  # not stopping
                log.warn("lost the link to Redis at {address}; reconnecting", address=self.address.display)
            self.onDown(self)
