# -*- test-case-name: tests.test_binary_store,tests.test_config,tests.test_listen -*-
"""``twistd -n sockproto``: several services in one process.

With ``--config FILE``, the services of the file's tables (see
:mod:`sockproto.suite.config`; ``sockproto example-config`` prints an
example).  Without it, the seed services (what ``make run`` starts in a
checkout): echo 8124, chat 5000 (web 8000), joke 6789, binary 9000 and crud
9001 on loopback, with their databases in ``--var`` (default ``var/``).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.python import usage

from sockproto.binary.service import StoreRegistry
from sockproto.interfaces import IServerReactor
from sockproto.server.endpointstrings import checkEndpoint
from sockproto.server.lifecycle import defaultReactor, operate, supervise
from sockproto.server.listen import StopInOrder
from sockproto.server.options import LOG_LEVEL_HELP, logLevel, nonNegativeFloat, showVersion, withUsageErrorLast
from sockproto.server.workers import workerCount, workerSettings
from sockproto.suite.config import Config, ServiceConfig, checkEndpointsAreDistinct, loadConfig

#: (name, module, options) of the services started without a config file.
SEEDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("echo", "sockproto.echo", ()),
    ("chat", "sockproto.chat.service", ("--history", "{var}/chat.sqlite3", "--web", "tcp:8000")),
    ("joke", "sockproto.joke.service", ()),
    ("binary", "sockproto.binary.service", ("--db", "{var}/kv.sqlite3")),
    # The seeds' text twin, on the same store as binary: one process, one store object.
    ("crud", "sockproto.binary.crud", ("--db", "{var}/kv.sqlite3")),
)

#: Services that take a store: given the process's StoreRegistry, so one database is one store.
_STORE_SERVICES = frozenset({"binary", "crud"})


class Options(usage.Options):
    """The ``sockproto`` plugin's options: ``--config``, or the seed services with their databases in ``--var``."""

    synopsis = "[--config FILE] [--metrics ENDPOINT] [--shutdown-timeout SECONDS] [--var DIR]"

    def opt_version(self) -> None:
        """Print the version of sockproto and Twisted, and exit."""
        showVersion("sockproto")
    longdesc = (
        "Runs several sockproto services in one process. With --config, the services of "
        "a TOML file (one table per service: [echo], [chat], [joke], [binary], [crud], [proxy]; "
        "'sockproto example-config' prints an example that explains every key). Without it, the seed services "
        "on loopback: echo 8124, chat 5000 (its web page on 8000), joke 6789, binary 9000, crud 9001 (on binary's "
        "store), with their databases in --var. "
        "SIGTERM or SIGINT shut down gracefully; SIGHUP reloads joke books and password files."
    )
    optParameters = [
        ["config", "c", None, "TOML config file naming the services to run and their options "
         "('sockproto example-config' prints an example)."],
        ["var", None, "var", "Without --config: folder for the databases (created owner-only)."],
        [
            "metrics",
            None,
            None,
            "Endpoint to serve Prometheus metrics on, over HTTP at /metrics (e.g. tcp:9100); "
            "overrides the file's metrics key. [default: none]",
            lambda value: checkEndpoint(value),
        ],
        [
            "shutdown-timeout",
            None,
            None,
            "Seconds to finish owed replies and close connections on SIGTERM/SIGINT before cutting "
            "them off; overrides the file's. [default: 10]",
            nonNegativeFloat,
        ],
        ["log-level", None, None, LOG_LEVEL_HELP + " Overrides the file's. [default: info]", logLevel],
        ["workers", None, None, "Worker processes serving every service's sockets (auto: one per usable CPU); "
         "overrides the file's. [default: 1]", workerCount],
    ]

    def parseOptions(self, options: Any = None) -> None:
        # Kept to start workers with the very same options.
        self.argv = list(sys.argv[1:] if options is None else options)
        withUsageErrorLast("sockproto", lambda: super(Options, self).parseOptions(options))

    def postOptions(self) -> None:
        if self["config"]:
            config = loadConfig(self["config"])
        else:
            config = seedConfig(Path(self["var"]))
        if self["log-level"]:
            config.logLevel = self["log-level"]
        if self["metrics"]:
            config.metrics = self["metrics"]
            checkEndpointsAreDistinct(config)
        if self["workers"] is not None:
            config.workers = self["workers"]
        if config.workers > 1:
            for entry in config.services:
                serviceOptions: Any = entry.options  # every service's Options is a ServerOptions
                problem = serviceOptions.workersProblem()
                if problem:
                    raise usage.UsageError(f"[{entry.name}]: --workers above 1 {problem}")
        timeout = self["shutdown-timeout"] if self["shutdown-timeout"] is not None else config.shutdownTimeout
        if timeout is not None:
            for entry in config.services:
                if "shutdown-timeout" not in entry.explicit:
                    entry.options["shutdown-timeout"] = timeout
        self["loaded"] = config


def seedConfig(var: Path) -> Config:
    """The seed services on their default ports, databases in ``var``."""
    config = Config("(the seed services)")
    for name, moduleName, args in SEEDS:
        module = importlib.import_module(moduleName)
        options = module.Options()
        options.parseOptions([arg.format(var=var) for arg in args])
        config.services.append(ServiceConfig(name, module, options))
    config.var = var
    return config


def servesOnlyStores(config: Config) -> bool:
    """Only binary and crud in this process: ``--fsync always`` may sync in the reactor thread."""
    return all(entry.name in _STORE_SERVICES for entry in config.services)


def makeService(options: Options, reactor: IServerReactor | None = None) -> service.IService:
    reactor = defaultReactor(reactor)
    config: Config = options["loaded"]
    if config.workers > 1 and workerSettings() is None:
        listeners = [listener for entry in config.services for listener in entry.options.listeners()]  # type: ignore[attr-defined]
        timeout = max((entry.options["shutdown-timeout"] for entry in config.services), default=10.0)
        return supervise(
            reactor, "sockproto", options.argv, listeners, config.workers, timeout, config.metrics, config.logLevel
        )
    if config.var is not None:
        try:
            config.var.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise SystemExit(f"sockproto: cannot create {config.var}: {e.strerror}") from None
    stores = StoreRegistry(reactor, storesOnly=servesOnlyStores(config))
    services = service.MultiService()  # stopped all at once: they drain side by side
    for entry in config.services:
        shared = {"stores": stores} if entry.name in _STORE_SERVICES else {}
        child = entry.module.buildService(entry.options, reactor, **shared)
        child.setName(entry.name)
        child.setServiceParent(services)
    root = StopInOrder()
    stores.setServiceParent(root)
    # Added last, stopped first: every connection is finished before the stores close.
    services.setServiceParent(root)
    return operate(root, reactor, config.metrics, config.logLevel)

