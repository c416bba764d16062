"""Endpoint strings, the options every service shares, and the service that listens.

Every sockproto service takes ``--listen ENDPOINT`` (repeatable) with any
Twisted server endpoint string.  Strings are checked when the options are
parsed, hardened with safer defaults (a listen backlog of 1024, UNIX sockets
0600) and, in :class:`ListeningService`, bound all at once or not at all.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints, interfaces
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from sockproto.interfaces import IDrainable
from sockproto.privateapi import (
    flushBeforeTLSClose,
    leanDispatch,
    nameOptionsInErrors,
    parseEndpointDescription,
    refuseAtDescriptorLimit,
    serveClientsOfferingALPN,
)
from sockproto.server.workers import adopt, workerCount, workerSettings

log = Logger()

#: Twisted's own default of 50 drops connection bursts.
DEFAULT_BACKLOG = 1024
#: Owner-only, whatever the umask says.
DEFAULT_UNIX_MODE = "600"
#: Seconds a graceful shutdown may take before connections are cut off.
DEFAULT_SHUTDOWN_TIMEOUT = 10.0

# Endpoint types whose parsers take ``backlog=``.
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "ssl", "tls", "unix", "mtls"})
# Loopback for each network endpoint type, used when the string names no
# interface (Twisted's own default is every interface).  tls: listens on an
# IPv6 socket, where the v4-mapped loopback also takes 127.0.0.1 clients.
_LOOPBACK = {
    "tcp": "127.0.0.1",
    "ssl": "127.0.0.1",
    "mtls": "127.0.0.1",
    "tcp6": r"\:\:1",
    "tls": r"\:\:ffff\:127.0.0.1",
}


class ListenError(SystemExit, Exception):
    """
    Binding failed: twistd exits non-zero with this message, no traceback.

    Also an Exception because twistd's daemon mode reports only Exceptions
    raised while starting to the parent process (which otherwise waits for
    the daemon forever) and removes the pidfile only for them.
    """


def splitDescription(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    Split an endpoint string the way Twisted does: (type, args, kwargs).

    Raises ValueError for an empty string.
    """
    args, kwargs = parseEndpointDescription(description)
    if not args or not args[0]:
        raise ValueError("no endpoint type")
    return args[0].lower(), list(args[1:]), kwargs


def withSafeDefaults(description: str) -> str:
    """
    Add sockproto's defaults to an endpoint string, unless it sets them.

    A listen backlog of :data:`DEFAULT_BACKLOG` where the type takes one,
    mode 0600 for UNIX sockets, and the loopback interface for network
    endpoints that name none: listening on every interface must be asked for
    (``interface=0.0.0.0`` or ``interface=\\:\\:``).
    """
    kind, _, kwargs = splitDescription(description)
    if kind in _LOOPBACK and "interface" not in kwargs:
        description += f":interface={_LOOPBACK[kind]}"
    if kind in _BACKLOG_TYPES and "backlog" not in kwargs:
        description += f":backlog={DEFAULT_BACKLOG}"
    if kind == "unix" and "mode" not in kwargs:
        description += f":mode={DEFAULT_UNIX_MODE}"
    return description


def parseUDP(description: str) -> tuple[int, str]:
    """
    Parse ``udp:PORT[:interface=ADDR]`` into (port, interface).

    The interface defaults to loopback, as every sockproto default does.
    """
    kind, args, kwargs = splitDescription(description)
    if kind != "udp":
        raise ValueError("not a udp: endpoint")
    unknown = set(kwargs) - {"port", "interface"}
    if unknown:
        raise ValueError(f"unknown parameter {sorted(unknown)[0]!r}")
    portText = args[0] if args else kwargs.get("port")
    if portText is None or len(args) > 1:
        raise ValueError("expected udp:PORT[:interface=ADDRESS]")
    port = int(portText)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return port, kwargs.get("interface", "127.0.0.1")


def _checkingReactor() -> Any:
    # Endpoint parsers only store the reactor; a memory reactor lets options be
    # checked without touching the global one.
    from twisted.internet.testing import MemoryReactor

    return MemoryReactor()


def checkEndpoint(description: str, allowUDP: bool = False, option: str = "--listen") -> str:
    """
    Check a ``--listen`` string (with sockproto's defaults added) and return it as given.

    Raises UsageError naming the string for an unknown endpoint type, a bad
    parameter or a missing file (Twisted raises TypeError, ValueError or
    OSError for those).
    """
    try:
        kind, args, kwargs = splitDescription(description)
        if kind == "udp":
            if not allowUDP:
                raise ValueError("this service does not speak UDP")
            parseUDP(description)
            return description
        _checkCommonMistakes(kind, args, kwargs)
        try:
            endpoints.serverFromString(_checkingReactor(), withSafeDefaults(description))
        except (IndexError, KeyError):
            if kind != "systemd":
                raise
            which = f"named {kwargs['name']!r}" if "name" in kwargs else f"at index {kwargs.get('index')}"
            raise ValueError(f"systemd passed no socket {which} (see LISTEN_FDS and LISTEN_FDNAMES)") from None
    except Exception as e:
        # TypeError/ValueError for bad parameters, OSError or an SSL error for
        # a certificate that cannot be loaded.
        raise usage.UsageError(f"bad {option} {description!r}: {endpointErrorText(e, description)}") from None
    return description


def _checkCommonMistakes(kind: str, args: list[str], kwargs: dict[str, str]) -> None:
    # Twisted accepts these and fails only when binding; say so up front.
    if kind == "unix":
        path = args[0] if args else kwargs.get("address")
        if not path:
            raise ValueError("the socket path is empty")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ValueError(f"the folder {folder} does not exist")
    if kind in ("tcp", "tcp6", "ssl", "mtls"):
        port = args[0] if args else kwargs.get("port", "")
        if not port.isdigit():
            raise ValueError(f"the port must be a number from 0 to 65535 (e.g. {kind}:8124), not {port!r}")
        if int(port) > 65535:
            raise ValueError(f"port {port} is out of range")
    if kind == "tls":
        path = args[0] if args else kwargs.get("path", "")
        if not os.path.isdir(path):
            raise ValueError(f"{path!r} is not a directory of PEM files")


#: What each endpoint type's string looks like, for errors.
_SHAPES = {
    "tcp": "tcp:HOST:PORT (client) or tcp:PORT (server)",
    "tcp6": "tcp6:HOST:PORT (client) or tcp6:PORT (server)",
    "unix": "unix:PATH",
    "ssl": "ssl:HOST:PORT (client) or ssl:PORT:privateKey=KEY:certKey=CERT (server)",
    "tls": "tls:HOST:PORT (client) or tls:DIRECTORY (server)",
    "mtls": "mtls:PORT:privateKey=KEY:certKey=CERT:caCerts=CA",
}


def endpointErrorText(error: BaseException, description: str = "") -> str:
    """
    What was wrong with an endpoint string, in the user's terms rather than
    Python's: Twisted's parsers fail with the TypeError or ValueError of the
    function they call.
    """
    text = str(error) or type(error).__name__
    kind = description.split(":", 1)[0].lower()
    shape = _SHAPES.get(kind)
    missing = re.search(r"missing \d+ required (?:positional |keyword-only )?arguments?: (.+)", text)
    if missing:
        names = missing.group(1).replace("'", "")
        text = f"missing {names}" + (f"; expected {shape}" if shape else "")
    elif "invalid literal for int()" in text:
        text = "a port or number is not a number" + (f"; expected {shape}" if shape else "")
    elif isinstance(error, TypeError) and "argument" in text:
        # "_parseTCP() got an unexpected keyword argument 'prot'" -> the useful part
        text = text.split(") ", 1)[-1]
    return text



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


def nonNegativeFloat(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("expected a number of seconds, 0 or more") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"{value} is not a number of seconds, 0 or more")
    return number


nonNegativeFloat.coerceDoc = "Seconds, 0 or more."  # type: ignore[attr-defined]


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
        self, factory: Factory, reactor: Any, datagramProtocol: Callable[[], DatagramProtocol] | None = None
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


def describeAddress(kind: str, address: object) -> str:
    """Render a listening or peer address: ``tcp:127.0.0.1:8124``, ``unix:/run/x.sock``."""
    if isinstance(address, (IPv4Address, IPv6Address)):
        host = f"[{address.host}]" if isinstance(address, IPv6Address) else address.host
        return f"{kind}:{host}:{address.port}"
    if isinstance(address, UNIXAddress):
        raw = address.name
        name = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
        return f"{kind}:{name or '(unnamed)'}"
    return f"{kind}:{address}"


#: Endpoint kinds whose clients read a service's plain-text refusal line (not TLS, not HTTP-only faces).
_PLAIN_KINDS = frozenset({"tcp", "tcp6", "unix"})


class DescriptorLimitReport:
    """
    What one service's listening ports could not take at the process's
    file-descriptor limit: each such client gets the service's refusal
    line (plain-text ports) and is closed, is counted in the metrics
    (``refused_descriptor_limit``), and the log has one summary line a
    second at most, not Twisted's three lines per connection.
    """

    interval = 1.0

    def __init__(self, reactor: Any, serviceName: str, refusal: bytes | None, errors: Any = None) -> None:
        self.reactor = reactor
        self.serviceName = serviceName
        self.refusal = refusal
        self.errors = errors
        self.refusedCount = 0
        self.failures: dict[str, int] = {}
        self._call: Any = None

    def refused(self, count: int) -> None:
        self.refusedCount += count
        if self.errors is not None:
            self.errors["refused_descriptor_limit"] += count
        self._schedule()

    def couldNotAccept(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None:
            self._call = self.reactor.callLater(self.interval, self.report)

    def report(self) -> None:
        """Log what happened since the last line, in one line."""
        self._call = None
        refused, self.refusedCount = self.refusedCount, 0
        failures, self.failures = self.failures, {}
        failed = ", ".join(f"{count} {reason}" for reason, count in sorted(failures.items()))
        log.warn(
            "{service} is at the file-descriptor limit: {refused} connections refused{how}{failed} "
            "(raise the limit, ulimit -n / LimitNOFILE, or lower --max-connections)",
            service=self.serviceName,
            refused=refused,
            how=" with the refusal line" if self.refusal else "",
            failed=f"; accept failed {failed}, those clients wait" if failed else "",
        )

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class ListeningService(service.Service):
    """
    Listens on every endpoint of a service, all or nothing.

    If one endpoint cannot be bound, the ones already bound are released and
    :class:`ListenError` stops twistd with a message naming the endpoint.
    """

    def __init__(
        self,
        serviceName: str,
        descriptions: Sequence[str],
        factory: interfaces.IProtocolFactory,
        reactor: Any,
        datagramProtocol: Callable[[], DatagramProtocol] | None = None,
        shutdownTimeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> None:
        self.setName(serviceName)
        self.descriptions = list(descriptions)
        self.factory = factory
        self.reactor = reactor
        self.datagramProtocol = datagramProtocol
        self.shutdownTimeout = shutdownTimeout
        self.ports: list[tuple[str, Any]] = []
        #: refusal line (None on TLS ports) -> the report its ports share.
        self.descriptorReports: dict[bytes | None, DescriptorLimitReport] = {}

    def privilegedStartService(self) -> None:
        # Bind before twistd drops privileges, so low ports work.
        leanDispatch(self.reactor)
        self._listenAll()
        service.Service.privilegedStartService(self)

    def startService(self) -> None:
        if not self.ports:
            leanDispatch(self.reactor)
            self._listenAll()
        service.Service.startService(self)

    def _listenAll(self) -> None:
        # Before any TLS context is made: browsers and curl offer ALPN.
        serveClientsOfferingALPN()
        # A reply to a request that came with the client's close is sent before ours.
        flushBeforeTLSClose()
        inherited = (workerSettings() or {}).get("sockets", {}).get(self.name)
        for index, description in enumerate(self.descriptions):
            try:
                if inherited:
                    port = adopt(self.reactor, description, inherited[index], self.factory, self.datagramProtocol)
                    self.ports.append((description, port))
                    self._refuseAtDescriptorLimit(description, port)
                    log.info("{service} serving {endpoint} in worker {number}", service=self.name,
                             endpoint=description, number=(workerSettings() or {}).get("number"))
                    continue
                port = self._listen(description)
            except Exception as e:
                for _, bound in self.ports:
                    bound.stopListening()
                self.ports = []
                log.error(
                    "{service} cannot listen on {endpoint}: {reason}",
                    service=self.name,
                    endpoint=description,
                    reason=endpointErrorText(e, description),
                )
                raise ListenError(
                    f"sockproto-{self.name}: cannot listen on {description}: {endpointErrorText(e, description)}"
                ) from None
            kind = splitDescription(description)[0]
            self.ports.append((description, port))
            self._refuseAtDescriptorLimit(description, port)
            log.info(
                "{service} listening on {address}",
                service=self.name,
                address=describeAddress(kind, port.getHost()),
            )

    def _refuseAtDescriptorLimit(self, description: str, port: Any) -> None:
        kind = splitDescription(description)[0]
        if kind == "udp":
            return
        refusal = getattr(self.factory, "refusal", None) if kind in _PLAIN_KINDS else None
        report = self.descriptorReports.get(refusal)
        if report is None:
            errors = getattr(self.factory, "errors", None)
            report = DescriptorLimitReport(self.reactor, self.name or "server", refusal, errors)
            self.descriptorReports[refusal] = report
        refuseAtDescriptorLimit(port, report)

    def _listen(self, description: str) -> Any:
        kind = splitDescription(description)[0]
        if kind == "udp":
            if self.datagramProtocol is None:
                raise ValueError("this service does not speak UDP")
            portNumber, interface = parseUDP(description)
            return self.reactor.listenUDP(
                portNumber, self.datagramProtocol(), interface=interface
            )
        endpoint = endpoints.serverFromString(self.reactor, withSafeDefaults(description))
        if kind == "unix":
            # Close the window between bind() and chmod() in which the socket
            # would carry the umask's mode.
            oldMask = os.umask(0o077)
            try:
                return _resultNow(endpoint.listen(self.factory))
            finally:
                os.umask(oldMask)
        return _resultNow(endpoint.listen(self.factory))

    def stopService(self) -> defer.Deferred[Any]:
        """Stop accepting, then let the connections finish (see ``ServerFactory.stopServing``)."""
        service.Service.stopService(self)
        ports, self.ports = self.ports, []
        for report in self.descriptorReports.values():
            report.stop()
        stopped = [defer.maybeDeferred(port.stopListening) for _, port in ports]
        if IDrainable.providedBy(self.factory):
            stopped.append(defer.maybeDeferred(self.factory.stopServing, self.shutdownTimeout))
        return defer.gatherResults(stopped, consumeErrors=True)

    @property
    def addresses(self) -> list[Any]:
        """The bound addresses, in the order of the descriptions."""
        return [port.getHost() for _, port in self.ports]


def _resultNow(deferred: defer.Deferred[Any]) -> Any:
    """The result of a listen() that has fired; raise its failure if it failed."""
    results: list[Any] = []
    deferred.addBoth(results.append)
    if not results:
        deferred.cancel()
        raise RuntimeError("the endpoint did not start listening at once")
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    if not interfaces.IListeningPort.providedBy(result):
        raise RuntimeError(f"listen() gave {result!r}, not a listening port")
    return result


class CloseOnStop(service.Service):
    """Closes something (a store, a history) when the service stops; its ``close()`` may return a Deferred."""

    def __init__(self, resource: Any) -> None:
        self.resource = resource

    def stopService(self) -> Any:
        service.Service.stopService(self)
        return self.resource.close()


class StopInOrder(service.MultiService):
    """
    A MultiService that stops its children one after another, last added
    first, each once the one before it has finished stopping.

    (MultiService stops them all at once.)  A service's connections are
    drained before the store or history under them is closed.
    """

    def stopService(self) -> defer.Deferred[Any]:
        service.Service.stopService(self)
        children = list(self)[::-1]

        @defer.inlineCallbacks
        def stopAll() -> Any:
            for child in children:
                try:
                    yield defer.maybeDeferred(child.stopService)
                except Exception:
                    log.failure("{service} did not stop cleanly", service=child.name or child)

        return stopAll()


def listeningServices(root: service.IService) -> Iterator[ListeningService]:
    """Every ListeningService in a service tree, depth first."""
    if isinstance(root, ListeningService):
        yield root
    elif isinstance(root, service.MultiService):
        for child in root:
            yield from listeningServices(child)
