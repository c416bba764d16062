# -*- test-case-name: tests.test_listen -*-
"""
The options every sockproto service shares, and the coercers of option values.

:class:`ServerOptions` is the base of each service's ``Options``
(``--listen``, limits, timeouts, ``--metrics``, ``--workers``...); the
coercers give a one-line usage error for a bad value.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.python import usage

from sockproto.interfaces import IServerReactor
from sockproto.privateapi import nameOptionsInErrors
from sockproto.server.endpointstrings import checkEndpoint
from sockproto.server.listen import DEFAULT_SHUTDOWN_TIMEOUT, ListeningService
from sockproto.server.workers import workerCount


def _wholeNumber(minimum: int, what: str) -> Callable[[str], int]:
    """A usage.Options coercer for whole numbers of at least ``minimum``, described as ``what``."""

    def coerce(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected {what}") from None
        if number < minimum:
            raise ValueError(f"{value} is not {what}")
        return number

    coerce.coerceDoc = what[0].upper() + what[1:] + "."  # type: ignore[attr-defined]
    return coerce


positiveInt = _wholeNumber(1, "a positive whole number")
nonNegativeInt = _wholeNumber(0, "a whole number, 0 or more")


def nonNegativeNumber(unit: str) -> Callable[[str], float]:
    """
    A usage.Options coercer for finite numbers of at least 0, described as
    numbers of ``unit`` (``"seconds"``, ``"lines a second"``).
    """

    def coerce(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"expected a number of {unit}, 0 or more") from None
        if not number >= 0 or number == float("inf"):
            raise ValueError(f"{value} is not a number of {unit}, 0 or more")
        return number

    coerce.coerceDoc = f"{unit[0].upper()}{unit[1:]}, 0 or more."  # type: ignore[attr-defined]
    return coerce


nonNegativeFloat = nonNegativeNumber("seconds")


LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


def logLevel(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return value.lower()


logLevel.coerceDoc = "One of " + ", ".join(LOG_LEVELS) + "."  # type: ignore[attr-defined]

LOG_LEVEL_HELP = (
    "Least severe log events shown: debug (also each connection opened and closed), info, warn, error "
    "or critical."
)


def showVersion(program: str) -> None:
    """``--version``: sockproto's and Twisted's versions on standard output, then exit 0."""
    import twisted
    from sockproto import __version__

    sys.stdout.write(f"{program} {__version__} (Twisted {twisted.__version__})\n")
    raise SystemExit(0)


def withUsageErrorLast(program: str, parse: Callable[[], None]) -> None:
    """
    Run ``parse`` (a plugin's ``parseOptions``); a usage error under
    ``python -m twisted`` ends the process with the error alone, as the last
    line, and status 64 (EX_USAGE, twist's own).  twist would print it
    first, above the whole usage (30 to 90 lines), where it scrolls away;
    twistd prints it last already, and so is left to do so.
    """
    try:
        parse()
    except usage.UsageError as e:
        if "twisted.application.twist._twist" not in sys.modules or "twisted.scripts.twistd" in sys.modules:
            raise
        sys.stderr.write(f"{program}: error: {e}\n(python -m twisted {program} --help lists the options)\n")
        sys.stderr.flush()
        raise SystemExit(64) from None


class ServerOptions(usage.Options):
    """
    The options every sockproto service takes.

    Subclasses set :attr:`serviceName` and :attr:`defaultPort`, and add their
    own ``optParameters`` (usage.Options gathers them along the class tree).
    """

    serviceName = "server"
    defaultPort = 0
    allowUDP = False
    #: Options that may be given more than once (a list in a config file).
    repeatable: tuple[str, ...] = ("listen",)
    defaultIdleTimeout = 300.0

    optParameters: list[list[Any]] = [
        [
            "max-connections",
            None,
            10000,
            "Connections served at once; past it, new ones get a one-line refusal.",
            positiveInt,
        ],
        [
            "max-connections-per-ip",
            None,
            100,
            "Connections one address (an IPv6 /64) may hold at once; past it, a one-line refusal (0: no limit). "
            "UNIX sockets and loopback addresses (local clients, a local proxy) are not counted.",
            nonNegativeInt,
        ],
        [
            "read-timeout",
            None,
            30.0,
            "Seconds a client has to finish a line or frame it has begun (slow senders are cut off; 0: no limit).",
            nonNegativeFloat,
        ],
        [
            "shutdown-timeout",
            None,
            DEFAULT_SHUTDOWN_TIMEOUT,
            "Seconds to finish owed replies and close connections on SIGTERM/SIGINT before cutting them off.",
            nonNegativeFloat,
        ],
        [
            "metrics",
            None,
            None,
            "Endpoint to serve Prometheus metrics on, over HTTP at /metrics (e.g. tcp:9100). [default: none]",
            lambda value: checkEndpoint(value, option="--metrics"),
        ],
        ["log-level", None, "info", LOG_LEVEL_HELP, logLevel],
        ["workers", None, 1, "Worker processes serving the same sockets (auto: one per usable CPU); limits such "
         "as --max-connections are per worker.", workerCount],
    ]

    def __init__(self) -> None:
        super().__init__()
        nameOptionsInErrors(self)
        self.argv: list[str] = []
        self["listen"] = []
        self["idle-timeout"] = self.defaultIdleTimeout
        self.docs["idle-timeout"] += f" [default: {self.defaultIdleTimeout:g}]"
        self.docs["listen"] = self.docs["listen"].replace(
            "<the service's port>", str(self.defaultPort)
        )

    def opt_version(self) -> None:
        """Print the version of sockproto and Twisted, and exit."""
        showVersion(f"sockproto-{self.serviceName}")

    def parseOptions(self, options: Any = None) -> None:
        # Kept to start workers with the very same options.
        self.argv = list(sys.argv[1:] if options is None else options)
        withUsageErrorLast(f"sockproto-{self.serviceName}", lambda: super(ServerOptions, self).parseOptions(options))

    def listeners(self) -> list[tuple[str, list[str]]]:
        """(service name, endpoint strings) of every listening service this service runs."""
        return [(self.serviceName, list(self["listen"]))]

    def workersProblem(self) -> str | None:
        """Why these options cannot be served by several worker processes, or None."""
        return None

    def opt_listen(self, description: str) -> None:
        """Endpoint to listen on: a Twisted server endpoint string (tcp:PORT, unix:PATH, ssl:PORT:privateKey=KEY:certKey=CERT, tls:..., systemd:...). Repeatable. [default: tcp:<the service's port>:interface=127.0.0.1]"""  # noqa: E501
        self["listen"].append(checkEndpoint(description, self.allowUDP))

    opt_l = opt_listen

    def opt_idle_timeout(self, value: str) -> None:
        """Close a connection that sends nothing for this many seconds (0: never)."""
        try:
            self["idle-timeout"] = nonNegativeFloat(value)
        except ValueError as e:
            raise usage.UsageError(f"bad --idle-timeout: {e}") from None

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [
                checkEndpoint(f"tcp:{self.defaultPort}:interface=127.0.0.1")
            ]
        problem = self.workersProblem() if self["workers"] > 1 else None
        if problem:
            raise usage.UsageError(f"--workers above 1 {problem}")

    def limits(self) -> dict[str, Any]:
        """The connection limits, as ServerFactory takes them."""
        return {
            "maxConnections": self["max-connections"],
            "idleTimeout": self["idle-timeout"],
            "readTimeout": self["read-timeout"],
            "maxPerAddress": self["max-connections-per-ip"],
        }

    def listeningService(
        self, factory: Factory, reactor: IServerReactor, datagramProtocol: Callable[[], DatagramProtocol] | None = None
    ) -> ListeningService:
        """The service listening on this service's ``--listen`` endpoints with ``factory``."""
        return ListeningService(
            self.serviceName,
            self["listen"],
            factory,
            reactor,
            datagramProtocol=datagramProtocol,
            shutdownTimeout=self["shutdown-timeout"],
        )

    def getSynopsis(self) -> str:
        return f"Usage: twistd [twistd options] sockproto-{self.serviceName} [options]"
