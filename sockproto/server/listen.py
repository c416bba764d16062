# -*- test-case-name: tests.test_listen -*-
"""
The service that listens, and the service tree's ordered stop.

A :class:`ListeningService` binds every endpoint of one service all at once
or not at all (its strings were checked and given safer defaults by
:mod:`sockproto.server.endpointstrings`), adopts the parent's sockets in a
worker, and stops gracefully; :class:`StopInOrder` stops listening
everywhere before anything else stops.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints, interfaces
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from sockproto.interfaces import IDrainable, IServerReactor
from sockproto.privateapi import (
    flushBeforeTLSClose,
    refuseAtDescriptorLimit,
    serveClientsOfferingALPN,
)
from sockproto.server.endpointstrings import (
    describeAddress,
    endpointErrorText,
    parseUDP,
    splitDescription,
    withSafeDefaults,
)
from sockproto.server.workers import UDP_MAX_PACKET, adopt, workerSettings

log = Logger()

#: Seconds a graceful shutdown may take before connections are cut off.
DEFAULT_SHUTDOWN_TIMEOUT = 10.0


class ListenError(SystemExit, Exception):
    """
    Binding failed: twistd exits non-zero with this message, no traceback.

    Also an Exception because twistd's daemon mode reports only Exceptions
    raised while starting to the parent process (which otherwise waits for
    the daemon forever) and removes the pidfile only for them.
    """


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

    def __init__(self, reactor: IServerReactor, serviceName: str, refusal: bytes | None, errors: Any = None) -> None:
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
        reactor: IServerReactor,
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
        self.listenAll()
        service.Service.privilegedStartService(self)

    def startService(self) -> None:
        if not self.ports:
            self.listenAll()
        service.Service.startService(self)

    def boundPorts(self) -> list[tuple[str, Any]]:
        """(endpoint string, listening port) of each endpoint bound (or adopted in a worker), in order."""
        return list(self.ports)

    def listenAll(self) -> None:
        """
        Bind every endpoint (in a worker: adopt the parent's sockets), or
        none: :class:`ListenError` names the one that failed.  Logs
        ``<service> listening on <address>`` for each.
        """
        # Before any TLS context is made: browsers and curl offer ALPN.
        serveClientsOfferingALPN()
        # A reply to a request that came with the client's close is sent before ours.
        flushBeforeTLSClose()
        worker = workerSettings()
        inherited = worker.sockets.get(self.name) if worker is not None and self.name else None
        for index, description in enumerate(self.descriptions):
            try:
                if inherited:
                    port = adopt(self.reactor, description, inherited[index], self.factory, self.datagramProtocol)
                    self.ports.append((description, port))
                    self._refuseAtDescriptorLimit(description, port)
                    log.info("{service} serving {endpoint} in worker {number}", service=self.name,
                             endpoint=description, number=worker.number if worker is not None else None)
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
                portNumber, self.datagramProtocol(), interface=interface, maxPacketSize=UDP_MAX_PACKET
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
