# -*- test-case-name: tests.test_listen -*-
"""``--workers N``: one parent binds every listening socket, N worker processes serve them.

Why the parent binds and the workers adopt (Twisted's ``adoptStreamPort`` and
``adoptDatagramPort``) rather than each worker binding with SO_REUSEPORT:
every endpoint type keeps working exactly as without workers (``tcp:0``
means one port for all; UNIX sockets, ``systemd:`` sockets handed to the
parent and UDP are shared the same way; TLS is whatever the endpoint string
asks), low ports are bound before privileges are dropped, and the kernel
hands each connection to whichever worker accepts first.

A worker is the same plugin with the same options, started by the parent
with ``SOCKPROTO_WORKER`` in its environment, naming its number and the
file descriptors it inherits.  Each endpoint's protocol factory (wrapped in
TLS where the endpoint says so) is obtained by letting the endpoint listen
on a recording reactor, so no endpoint parsing is written again here.

The parent restarts a worker that exits (waiting longer each time one dies
young), passes SIGHUP on, and on SIGTERM/SIGINT stops every worker (each
drains its connections) and exits after the last.  With ``--metrics`` it
serves the sum of its workers' metrics, which each serves on a private
UNIX socket.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints, protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from sockproto.interfaces import IServerReactor
from sockproto.privateapi import adoptUNIXPort

log = Logger()

ENVIRONMENT = "SOCKPROTO_WORKER"
#: The largest datagram read (Twisted's own default for UDP ports).
UDP_MAX_PACKET = 8192
#: A worker that dies within this many seconds of its start died young.
YOUNG = 10.0
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def usableCPUs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def workerCount(value: str) -> int:
    """A usage.Options coercer: a number of workers, or ``auto`` (one per usable CPU)."""
    if value == "auto":
        return usableCPUs()
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{value!r} is not a number of workers (1 or more, or auto)")
    return int(value)


workerCount.coerceDoc = "1 or more, or auto: one per usable CPU."  # type: ignore[attr-defined]


@dataclass(frozen=True)
class WorkerSettings:
    """
    What the parent of ``--workers`` tells each worker, in its environment
    (``SOCKPROTO_WORKER``, JSON).

    :ivar number: The worker's number, from 1.
    :ivar sockets: Service name -> the listening sockets it inherits, in the
        order of its endpoints: ``[file descriptor, address family, "stream" or "udp"]``.
    :ivar metrics: The UNIX socket path where the worker serves its metrics to the parent.
    :ivar ready: The file descriptor on which the worker says "ready".
    """

    number: int
    sockets: dict[str, list[list[Any]]]
    metrics: str
    ready: int

    def encode(self) -> str:
        return json.dumps(
            {"number": self.number, "sockets": self.sockets, "metrics": self.metrics, "ready": self.ready}
        )

    @classmethod
    def decode(cls, raw: str) -> WorkerSettings:
        fields = json.loads(raw)
        return cls(int(fields["number"]), dict(fields["sockets"]), str(fields["metrics"]), int(fields["ready"]))


@functools.cache
def workerSettings() -> WorkerSettings | None:
    """In a worker: what the parent said, parsed once; else None."""
    raw = os.environ.get(ENVIRONMENT)
    return WorkerSettings.decode(raw) if raw else None


# -- in a worker --------------------------------------------------------------


class _RecordingReactor:
    """Stands in for the reactor while an endpoint "listens": keeps the factory it would have served."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.factory: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        self.factory = factory
        return _NoPort()

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = "") -> Any:
        self.factory = TLSMemoryBIOFactory(contextFactory, False, factory)
        return _NoPort()

    def listenUNIX(self, address: str, factory: Any, *args: Any, **kwargs: Any) -> Any:
        self.factory = factory
        return _NoPort()

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: Any) -> Any:
        self.factory = factory
        return _NoPort()


class _NoPort:
    def getHost(self) -> None:
        return None

    def stopListening(self) -> None:
        pass


def adopt(reactor: IServerReactor, description: str, inherited: list[Any], factory: Any, datagramProtocol: Any) -> Any:
    """Serve ``factory`` on a socket the parent bound for ``description`` (its fd, family and kind)."""
    from sockproto.server.endpointstrings import splitDescription, withSafeDefaults

    fd, family, kind = inherited
    if kind == "udp":
        return reactor.adoptDatagramPort(fd, family, datagramProtocol(), maxPacketSize=UDP_MAX_PACKET)
    description = withSafeDefaults(description)
    recorder = _RecordingReactor(reactor)
    endpoints.serverFromString(recorder, description).listen(factory)
    if recorder.factory is None:
        raise ValueError(f"cannot serve {splitDescription(description)[0]}: endpoints in a worker")
    if family == socket.AF_UNIX:
        mode = int(splitDescription(description)[2].get("mode", "600"), 8)
        return adoptUNIXPort(reactor, fd, recorder.factory, mode)
    return reactor.adoptStreamPort(fd, family, recorder.factory)


class SayReady(service.Service):
    """Started last in a worker: tells the parent it serves (and has its SIGHUP handler)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def startService(self) -> None:
        service.Service.startService(self)
        try:
            os.write(self.fd, b"ready\n")
            os.close(self.fd)
        except OSError:
            pass


# -- in the parent -------------------------------------------------------------


class _Worker(protocol.ProcessProtocol):
    ready = False

    def __init__(self, supervisor: Supervisor, number: int, readyFD: int) -> None:
        self.supervisor = supervisor
        self.number = number
        self.readyFD = readyFD
        self.ended: defer.Deferred[None] = defer.Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == self.readyFD and b"ready" in data and not self.ready:
            # Serving, and its SIGHUP handler installed: signals may be passed on now.
            self.ready = True
            log.info("worker {number} ready", number=self.number)

    def processEnded(self, reason: Any) -> None:
        self.supervisor.ended(self, reason.value)
        self.ended.callback(None)


class Supervisor(service.Service):
    """
    Binds the sockets of ``listening`` (ListeningServices, bound here and not
    served), starts ``count`` workers running ``argv`` and keeps them running.
    """

    def __init__(
        self, reactor: IServerReactor, argv: list[str], listening: list[Any], count: int, stopTimeout: float
    ) -> None:
        self.setName("workers")
        self.reactor = reactor
        self.argv = argv
        self.listening = listening
        self.count = count
        self.stopTimeout = stopTimeout
        self.workers: dict[int, Any] = {}  # number -> IProcessTransport
        self.protocols: dict[int, _Worker] = {}
        self.started: dict[int, float] = {}
        self.deaths: dict[int, int] = {}
        self.restarts = 0
        self.stopping = False
        self.metricsDirectory = tempfile.mkdtemp(prefix="sockproto-workers-")
        self._inherited: dict[str, list[Any]] = {}
        self._previousHangup: Any = None

    def privilegedStartService(self) -> None:
        for listening in self.listening:
            listening.listenAll()  # logs "<service> listening on <address>", or stops the process
            sockets = []
            for description, port in listening.boundPorts():
                port.stopReading()  # the workers accept; this process only holds the socket
                kind = "udp" if description.startswith("udp:") else "stream"
                sockets.append([port.fileno(), port.addressFamily, kind])
            self._inherited[listening.name] = sockets
        service.Service.privilegedStartService(self)

    def startService(self) -> None:
        if not self._inherited:
            self.privilegedStartService()
        service.Service.startService(self)
        for number in range(1, self.count + 1):
            self.spawn(number)
        if threading.current_thread() is threading.main_thread():
            self._previousHangup = signal.signal(signal.SIGHUP, self._hangup)

    def metricsSocket(self, number: int) -> str:
        return os.path.join(self.metricsDirectory, f"worker-{number}.sock")

    def spawn(self, number: int) -> None:
        fds: dict[int, Any] = {0: 0, 1: 1, 2: 2}
        for sockets in self._inherited.values():
            for fd, _, _ in sockets:
                fds[fd] = fd
        readyFD = max(fds) + 1
        fds[readyFD] = "r"  # the worker says "ready" on it
        settings = WorkerSettings(number, self._inherited, self.metricsSocket(number), readyFD)
        environment = dict(os.environ, **{ENVIRONMENT: settings.encode()})
        worker = _Worker(self, number, readyFD)
        self.protocols[number] = worker
        self.workers[number] = self.reactor.spawnProcess(
            worker, sys.executable, self.argv, env=environment, childFDs=fds
        )
        self.started[number] = self.reactor.seconds()
        log.info("worker {number} started (pid {pid})", number=number, pid=self.workers[number].pid)

    def ended(self, worker: _Worker, why: Any) -> None:
        number = worker.number
        self.workers.pop(number, None)
        status = getattr(why, "exitCode", None)
        signalNumber = getattr(why, "signal", None)
        what = f"killed by signal {signalNumber}" if signalNumber else f"exit status {status}"
        if self.stopping:
            log.info("worker {number} stopped ({what})", number=number, what=what)
            return
        lived = self.reactor.seconds() - self.started.get(number, 0.0)
        deaths = self.deaths.get(number, 0) + 1 if lived < YOUNG else 0
        self.deaths[number] = deaths
        delay = RESTART_DELAYS[min(deaths, len(RESTART_DELAYS) - 1)] if deaths else 0.0
        log.error(
            "worker {number} ended ({what}) after {lived:.1f} s; starting it again in {delay:g} s",
            number=number, what=what, lived=lived, delay=delay,
        )
        self.restarts += 1
        self.reactor.callLater(delay, self._restart, number)

    def _restart(self, number: int) -> None:
        if not self.stopping and number not in self.workers:
            self.spawn(number)

    def _hangup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.forward, signal.SIGHUP)

    def forward(self, signum: int, readyOnly: bool = True) -> None:
        """Pass ``signum`` on to the workers (by default only those ready: others would die of a SIGHUP)."""
        for number, process in list(self.workers.items()):
            if readyOnly and not self.protocols[number].ready:
                continue
            try:
                process.signalProcess(signum)
            except Exception as e:  # it just ended
                log.info("worker {number}: {reason}", number=number, reason=e)

    def stopService(self) -> defer.Deferred[Any]:
        """Every worker drains and exits; the sockets close after the last."""
        service.Service.stopService(self)
        self.stopping = True
        if self._previousHangup is not None:
            signal.signal(signal.SIGHUP, self._previousHangup)
        ended = [self.protocols[number].ended for number in self.workers]
        self.forward(signal.SIGTERM, readyOnly=False)
        # A worker that does not finish in time is killed.
        killer = self.reactor.callLater(self.stopTimeout + 5, self.forward, signal.SIGKILL, False)

        def done(_: Any) -> None:
            if killer.active():
                killer.cancel()
            for listening in self.listening:
                for _, port in listening.boundPorts():
                    port.stopListening()
            shutil.rmtree(self.metricsDirectory, ignore_errors=True)

        return defer.DeferredList(ended).addCallback(done)
