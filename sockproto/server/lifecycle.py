# -*- test-case-name: tests.test_config -*-
"""What a running sockproto process does besides serving: metrics, reloading on SIGHUP.

:func:`operate` puts a service tree (one service or the whole suite) under
a parent that serves ``--metrics``, reloads on SIGHUP and stops in order:
the services drain first, the metrics endpoint goes last.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, cast

from twisted.application import service
from twisted.logger import Logger, LogLevel

from sockproto.interfaces import IReloadable, IServerReactor
from sockproto.privateapi import filterLogs, leanDispatch
from sockproto.server.listen import StopInOrder, listeningServices
from sockproto.server.workers import workerSettings

log = Logger()

#: Seconds after a reload in which further SIGHUPs are gathered into one more reload, at its end.
RELOAD_SETTLE = 1.0


class ReloadOnHangup(service.Service):
    """
    On SIGHUP, every service under ``root`` whose factory provides
    :class:`sockproto.interfaces.IReloadable` reloads (the joke book, chat
    password files), without dropping connections, and the log says what was
    reloaded.  A reload that fails keeps what was there and logs why.

    A storm of SIGHUPs is one reload, not one each: signals that come within
    :data:`RELOAD_SETTLE` seconds of a reload are gathered into a single
    further reload at the end of that time (so the last edit is still read).
    """

    _previous: Any = None
    _settling: Any = None
    #: SIGHUPs received since the last reload.
    _signals = 0

    def __init__(self, root: service.IService, reactor: IServerReactor) -> None:
        self.setName("reload")
        self.root = root
        self.reactor = reactor

    def startService(self) -> None:
        service.Service.startService(self)
        if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> None:
        service.Service.stopService(self)
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
        if self._settling is not None and self._settling.active():
            self._settling.cancel()
        self._settling = None

    def _hangup(self, signum: int, frame: Any) -> None:
        # In a signal handler: hand the work to the reactor.
        self.reactor.callFromThread(self.hangup)

    def hangup(self) -> None:
        """A SIGHUP: reload now, or, right after a reload, once when the storm has settled."""
        self._signals += 1
        if self._settling is None:
            self._reloadNow()

    def _reloadNow(self) -> None:
        signals, self._signals = self._signals, 0
        self.reloadAll(signals)
        self._settling = self.reactor.callLater(RELOAD_SETTLE, self._settled)

    def _settled(self) -> None:
        self._settling = None
        if self._signals:
            self._reloadNow()

    def reloadAll(self, signals: int = 1) -> list[str]:
        """Reload what can be; returns and logs what was reloaded (``signals``: the SIGHUPs it answers)."""
        reloaded = []
        reloadable = False
        for listening in listeningServices(self.root):
            if not IReloadable.providedBy(listening.factory):
                continue
            reloadable = True
            try:
                done = listening.factory.reload()
            except Exception as e:
                log.error(
                    "{service} could not reload, keeping what it had: {reason}", service=listening.name, reason=e
                )
                continue
            for what in done:
                log.info("{service} reloaded {what}", service=listening.name, what=what)
                reloaded.append(f"{listening.name}: {what}")
        if not reloadable:  # (a reload that failed has said so)
            if signals > 1:
                log.info("SIGHUP: nothing to reload ({signals} signals, one reload)", signals=signals)
            else:
                log.info("SIGHUP: nothing to reload")
        elif signals > 1:
            log.info("SIGHUP: {signals} signals, one reload", signals=signals)
        return reloaded


def operate(
    root: service.IService, reactor: IServerReactor, metrics: str | None = None, logLevel: str = "info"
) -> service.MultiService:
    """
    ``root`` with SIGHUP reloading and, given an endpoint, a metrics
    endpoint; the process logs at ``logLevel`` and above.
    """
    filterLogs(LogLevel.levelWithName(logLevel))
    # The reactor is chosen by now (twistd and twist install it before building the service).
    leanDispatch(reactor)
    worker = workerSettings()
    if worker is not None:
        # A worker of --workers: the parent serves the sum of what each serves on its private socket.
        metrics = f"unix:{worker.metrics}:mode=600"
    top = StopInOrder()
    if metrics:
        from sockproto.server.metrics import metricsService

        metricsService(metrics, root, reactor).setServiceParent(top)
    root.setServiceParent(top)
    ReloadOnHangup(root, reactor).setServiceParent(top)
    if worker is not None:
        from sockproto.server.workers import SayReady

        SayReady(worker.ready).setServiceParent(top)
    return top


def standalone(build: Callable[[Any, Any], service.IService]) -> Callable[..., service.IService]:
    """The ``makeService`` of a single-service plugin: its ``buildService`` under :func:`operate`."""

    def makeService(options: Any, reactor: IServerReactor | None = None) -> service.IService:
        reactor = defaultReactor(reactor)
        if workerSettings() is None and options["workers"] > 1:
            return supervise(
                reactor, f"sockproto-{options.serviceName}", options.argv, options.listeners(), options["workers"],
                options["shutdown-timeout"], options["metrics"], options["log-level"],
            )
        return operate(build(options, reactor), reactor, options["metrics"], options["log-level"])

    makeService.__doc__ = f"``{build.__module__}.buildService`` with metrics and SIGHUP reloading."
    return makeService


def supervise(
    reactor: IServerReactor,
    plugin: str,
    argv: list[str],
    listeners: list[tuple[str, list[str]]],
    workers: int,
    shutdownTimeout: float,
    metrics: str | None,
    logLevel: str,
) -> service.MultiService:
    """
    The parent of ``--workers N``: binds every socket of ``listeners``
    ((service name, endpoint strings)), runs N workers of ``plugin`` with
    the same ``argv`` over them, and, given ``metrics``, serves the sum of theirs.
    """
    from twisted.internet.protocol import DatagramProtocol, Factory

    from sockproto.server.listen import ListeningService
    from sockproto.server.workers import Supervisor

    filterLogs(LogLevel.levelWithName(logLevel))
    leanDispatch(reactor)  # the parent serves the summed metrics
    holders = [
        ListeningService(name, descriptions, Factory(), reactor, datagramProtocol=DatagramProtocol)
        for name, descriptions in listeners
        if descriptions
    ]
    command = [sys.executable, "-m", "twisted", "--log-format", "text", plugin, *argv]
    supervisor = Supervisor(reactor, command, holders, workers, shutdownTimeout)
    top = StopInOrder()
    if metrics:
        from sockproto.server.metrics import workerMetricsService

        workerMetricsService(metrics, supervisor, reactor).setServiceParent(top)
    supervisor.setServiceParent(top)
    return top


def defaultReactor(reactor: IServerReactor | None = None) -> IServerReactor:
    """
    ``reactor`` if one was injected (tests pass a ``MemoryReactorClock``),
    else the global reactor, imported only now: importing it at module level
    would install one in every test that imports a service.
    """
    if reactor is None:
        from twisted.internet import reactor as installed

        return cast(IServerReactor, installed)
    return reactor
