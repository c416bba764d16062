# -*- test-case-name: tests.test_chat_crowd,tests.test_chat_irc,tests.test_chat_moderation_line -*-
"""Options and service of ``twistd -n sockproto-chat``."""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit

from twisted.application import service
from twisted.cred import checkers, credentials, strcred
from twisted.cred.portal import Portal
from twisted.python import usage

from sockproto.chat.history import History
from sockproto.chat.hub import ANNOUNCE_JOINS_DEFAULT, ChatHub
from sockproto.chat.login import AnyOfCheckers, ChatRealm
from sockproto.chat.moderator import Moderator
from sockproto.chat.protocol import ChatFactory
from sockproto.chat.text import validNick
from sockproto.interfaces import IServerReactor
from sockproto.server.endpointstrings import checkEndpoint
from sockproto.server.files import explainDatabaseError
from sockproto.server.lifecycle import defaultReactor, standalone
from sockproto.server.listen import CloseOnStop, ListeningService, StopInOrder
from sockproto.server.options import ServerOptions, nonNegativeFloat, nonNegativeInt, nonNegativeNumber, positiveInt
from sockproto.server.redis import redisURL

_NODE_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
_PREFIX = re.compile(r"[A-Za-z0-9_.:{}-]{1,64}")
#: What --web-host takes: a DNS name (IP addresses are always served).
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")


def nodeName(value: str) -> str:
    if not _NODE_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a node name (1-64 of A-Z a-z 0-9 _ . : @ -)")
    return value


nodeName.coerceDoc = "1-64 of A-Z a-z 0-9 _ . : @ - (default HOSTNAME:PID)."  # type: ignore[attr-defined]


def keyPrefix(value: str) -> str:
    if not _PREFIX.fullmatch(value):
        raise ValueError(f"{value!r} is not a key prefix (1-64 of A-Z a-z 0-9 _ . : {{ }} -)")
    return value


keyPrefix.coerceDoc = "1-64 of A-Z a-z 0-9 _ . : { } -."  # type: ignore[attr-defined]


#: Shortest --cluster-secret-file accepted (bytes, surrounding white space not counted).
MIN_SECRET = 16


def readSecret(path: str) -> bytes:
    """The cluster's shared secret in ``path``; ValueError saying what is wrong (never the secret)."""
    try:
        with open(path, "rb") as file:
            secret = file.read(65536).strip()
    except OSError as e:
        raise ValueError(f"cannot read {path!r}: {e.strerror}") from None
    if len(secret) < MIN_SECRET:
        raise ValueError(f"{path!r} holds {len(secret)} bytes; a secret needs at least {MIN_SECRET}")
    return secret


def secretFile(value: str) -> str:
    readSecret(value)
    return value


secretFile.coerceDoc = (  # type: ignore[attr-defined]
    f"A file whose contents (at least {MIN_SECRET} bytes, e.g. from 'openssl rand -hex 32') every server of the "
    "cluster shares."
)


linesPerSecond = nonNegativeNumber("lines a second")


class Options(ServerOptions, strcred.AuthOptionMixin):
    """``sockproto-chat``'s options: history, flood control, limits, logins, the web and IRC faces and the cluster."""

    serviceName = "chat"
    defaultPort = 5000
    defaultIdleTimeout = 3600.0
    repeatable = ("listen", "auth", "web", "web-origin", "web-host", "irc", "operator", "operators")
    supportedInterfaces = (credentials.IUsernamePassword,)
    longdesc = (
        "Multi-room line chat for nc, telnet or socat: nicknames, rooms, private "
        "messages, history in SQLite, optional logins (--auth), flood control and "
        "slow-consumer protection."
    )
    optParameters = [
        ["history", None, "sockproto-chat.sqlite3", "SQLite file for room history (:memory: keeps none)."],
        ["max-line-length", None, 512, "Longest line accepted, in bytes.", positiveInt],
        ["flood-burst", None, 20, "Lines a client may send at once before flood control.", positiveInt],
        ["flood-rate", None, 5.0, "Lines per second a client may keep sending (0: no flood control).", linesPerSecond],
        ["max-output-buffer", None, 1 << 20, "Unsent bytes a client may owe before it is dropped as too slow.",
         positiveInt],
        ["max-rooms", None, 1000, "Rooms that may exist at once (in a cluster: on all servers together).",
         positiveInt],
        ["announce-joins-up-to", None, ANNOUNCE_JOINS_DEFAULT, "Announce who joins, leaves and changes name only "
         "in rooms of at most this many members (0: in none); bigger rooms show member lists on request "
         "(/list), so a crowd arriving at once costs each member nothing.", nonNegativeInt],
        ["cluster", None, None, "Join the chat servers that share this Redis: rooms, names and history span "
         "them all (see docs/scaling.rst). The password may also come from $SOCKPROTO_REDIS_PASSWORD.", redisURL],
        ["cluster-wait", None, 0.0, "Seconds to keep trying to reach the --cluster Redis at start "
         "(0: exit at once if it cannot be reached).", nonNegativeFloat],
        ["cluster-prefix", None, "sockproto:", "Prefix of this cluster's Redis keys and channel, "
         "so several clusters can share one Redis.", keyPrefix],
        ["node-name", None, None, "This server's name in the cluster, its logs and metrics "
         "(default HOSTNAME:PID).", nodeName],
        ["cluster-secret-file", None, None, "Sign what this server publishes on the --cluster channel with the "
         "secret in FILE, and believe only what is signed with it (see docs/scaling.rst).", secretFile],
    ]
    optFlags = [
        ["no-keepalive", None, "Do not turn on TCP keep-alive (which drops dead peers)."],
    ]

    def opt_auth(self, description: str) -> None:
        """Where logins are checked: hashed:FILE (made by 'sockproto passwd'), file:FILE, memory:NAME:PASSWORD...; repeatable. See --help-auth."""  # noqa: E501
        kind, _, argument = description.partition(":")
        if kind == "file" and not os.path.isfile(argument):
            # Twisted's file: checker only warns, then refuses every login.
            raise usage.UsageError(f"bad --auth {description!r}: no such file {argument!r}")
        try:
            strcred.AuthOptionMixin.opt_auth(self, description)
        except usage.UsageError as e:
            why = str(e).removeprefix("Unexpected error: ")
            raise usage.UsageError(f"bad --auth {description!r}: {why}") from None

    def __init__(self) -> None:
        ServerOptions.__init__(self)
        self["web"] = []
        self["web-origin"] = []
        self["web-host"] = []
        self["irc"] = []
        self["operator"] = []

    def opt_web(self, description: str) -> None:
        """Serve the chat's web page (at /) and WebSocket (at /ws) on this endpoint, like --listen (loopback unless told otherwise). Repeatable. [default: none]"""  # noqa: E501
        self["web"].append(checkEndpoint(description, option="--web"))

    def opt_irc(self, description: str) -> None:
        """Serve the chat to IRC clients (irssi, weechat...) on this endpoint, like --listen (loopback unless told otherwise; 6667 by convention, 6697 for ssl:). Repeatable. [default: none]"""  # noqa: E501
        self["irc"].append(checkEndpoint(description, option="--irc"))

    def opt_web_origin(self, origin: str) -> None:
        """An origin (https://chat.example.org) whose pages may open the chat's WebSocket; repeatable. [default: the page's own origin]"""  # noqa: E501
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise usage.UsageError(
                f"bad --web-origin {origin!r}: expected SCHEME://HOST[:PORT], e.g. https://chat.example.org"
            )
        self["web-origin"].append(origin)

    def opt_web_host(self, name: str) -> None:
        """A host name the web page and WebSocket are served under (chat.example.org), beside localhost, IP addresses and the names of --web-origin; others get 421 (DNS rebinding). Repeatable. [default: none]"""  # noqa: E501
        if not _HOST_NAME.fullmatch(name):
            raise usage.UsageError(f"bad --web-host {name!r}: expected a host name such as chat.example.org")
        self["web-host"].append(name)

    def opt_operator(self, name: str) -> None:
        """A server operator: the user NAME (as --auth or a client certificate verifies it) is an operator of every room, #lobby too. Repeatable. [default: none]"""  # noqa: E501
        if not validNick(name):
            raise usage.UsageError(f"bad --operator {name!r}: not a user name (1 to 24 of A-Z a-z 0-9 _ -)")
        self["operator"].append(name)

    def opt_operators(self, name: str) -> None:
        """The same as --operator (in the config file: operators = ["NAME", ...])."""
        self.opt_operator(name)

    def opt_max_clients(self, value: str) -> None:
        """Clients served at once (the same as --max-connections)."""
        try:
            self["max-connections"] = positiveInt(value)
        except ValueError as e:
            raise usage.UsageError(f"bad --max-clients: {e}") from None

    def listeners(self) -> list[tuple[str, list[str]]]:
        return [*ServerOptions.listeners(self), ("chat-web", list(self["web"])), ("chat-irc", list(self["irc"]))]

    def workersProblem(self) -> str | None:
        if self["cluster"]:
            return None
        return (
            "needs --cluster redis://...: each worker is a chat server of its own, and only a cluster "
            "makes them one chat (docs/scaling.rst)"
        )

    def postOptions(self) -> None:
        ServerOptions.postOptions(self)
        if self["cluster-secret-file"] and not self["cluster"]:
            raise usage.UsageError("--cluster-secret-file needs --cluster redis://...")
        self.setdefault("credCheckers", [])
        for checker in self["credCheckers"]:
            if isinstance(checker, checkers.InMemoryUsernamePasswordDatabaseDontUse):
                # strcred's memory: checker keeps str names but is asked with
                # bytes, so it never matches; give it bytes.
                checker.users = {_bytes(k): _bytes(v) for k, v in checker.users.items()}


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


class ClusterService(service.Service):
    """Links the hub to the other servers while the process runs; signs off when it stops."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus

    def startService(self) -> None:
        service.Service.startService(self)
        self.bus.start()

    def stopService(self) -> Any:
        service.Service.stopService(self)
        return self.bus.stop()


def buildService(options: Options, reactor: IServerReactor | None = None) -> service.IService:
    reactor = defaultReactor(reactor)
    top = StopInOrder()
    if options["cluster"]:
        from sockproto.chat.cluster import RedisChatBus
        from sockproto.chat.history import ClusterHistory
        from sockproto.server.redis import parseRedisURL, waitForRedis

        address = parseRedisURL(options["cluster"])
        waitForRedis(address, options["cluster-wait"], "sockproto-chat", "--cluster-wait")
        history: Any = ClusterHistory()
        secretPath = options["cluster-secret-file"]
        try:
            secret = readSecret(secretPath) if secretPath else None
        except ValueError as e:  # changed since the options were read
            raise SystemExit(f"sockproto-chat: --cluster-secret-file: {e}") from None
        bus: Any = RedisChatBus(
            reactor, address, history, options["node-name"], options["cluster-prefix"], secret=secret
        )
        # Stopped after the clients are gone: the other servers hear they left.
        ClusterService(bus).setServiceParent(top)
    else:
        bus = None
        history = History(options["history"], reactor)
        try:
            history.open()
        except Exception as e:
            why = explainDatabaseError(e)
            raise SystemExit(f"sockproto-chat: cannot open history {options['history']!r}: {why}") from None
    hub = ChatHub(
        reactor, history, maxRooms=options["max-rooms"], bus=bus, announceJoinsUpTo=options["announce-joins-up-to"]
    )
    # Rooms' topics, modes, bans and owners: kept in the history database (a cluster: in Redis).
    store = history.storeRoom if isinstance(history, History) else None
    moderator = Moderator(hub, options["operator"], store=store)
    if isinstance(history, History):
        moderator.loadStored(history.roomStates)
    portal = Portal(ChatRealm(), [AnyOfCheckers(options["credCheckers"])]) if options["credCheckers"] else None
    factory = ChatFactory(
        reactor,
        hub,
        portal=portal,
        maxLineLength=options["max-line-length"],
        floodRate=options["flood-rate"],
        floodBurst=options["flood-burst"],
        maxOutputBuffer=options["max-output-buffer"],
        keepAlive=not options["no-keepalive"],
        **options.limits(),
    )
    # Writes the last messages and closes the history, after the clients are gone.
    CloseOnStop(history).setServiceParent(top)
    # Added last, stopped first: clients are told goodbye and gone before the history closes.
    options.listeningService(factory, reactor).setServiceParent(top)
    if options["web"]:
        from sockproto.chat.web import webSite

        # Browser users are clients of the same factory: same hub, limits and drain on stop.
        site = webSite(factory, options["web-origin"], options["web-host"])
        web = ListeningService("chat-web", options["web"], site, reactor)
        web.setServiceParent(top)
    if options["irc"]:
        from sockproto.chat.irc import IrcFactory

        ircFactory = IrcFactory(
            reactor,
            hub,
            loginGate=factory.loginGate,
            serverName=options["node-name"] or "sockproto",
            floodRate=options["flood-rate"],
            floodBurst=options["flood-burst"],
            maxOutputBuffer=options["max-output-buffer"],
            keepAlive=not options["no-keepalive"],
            **options.limits(),
        )
        ListeningService("chat-irc", options["irc"], ircFactory, reactor).setServiceParent(top)
    return top


makeService = standalone(buildService)
