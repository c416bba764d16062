# -*- test-case-name: tests.test_binary_store,tests.test_config,tests.test_listen -*-
"""Options and services of ``twistd -n sockproto-binary`` and the shared store plumbing."""

from __future__ import annotations

import os
from typing import Any

from twisted.application import service
from twisted.python import usage

from sockproto.binary.codec import DEFAULT_MAX_FRAME, MIN_LENGTH
from sockproto.binary.protocol import SPBFactory
from sockproto.binary.sqlitestore import SQLiteStore
from sockproto.binary.store import FSYNC_MODES, MEMORY, MemoryStore
from sockproto.interfaces import IServerReactor
from sockproto.server.connections import MAX_OUTPUT_BUFFER, SEND_TIMEOUT
from sockproto.server.files import explainDatabaseError
from sockproto.server.lifecycle import defaultReactor, standalone
from sockproto.server.listen import CloseOnStop, StopInOrder
from sockproto.server.options import ServerOptions, nonNegativeFloat, positiveInt
from sockproto.server.redis import parseRedisURL, waitForRedis


class StoreServerOptions(ServerOptions):
    """Options of a service over the store: ``--db`` and ``--fsync`` (binary and crud)."""

    optParameters = [
        ["db", None, "sockproto-kv.sqlite3", "SQLite database file (:memory: keeps nothing), or a Redis "
         "shared by every process that names it: redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS, "
         "?ca=FILE), redis+unix:PATH (docs/scaling.rst)."],
        ["fsync", None, "normal",
         "normal: acknowledged writes survive a crash of the server; always: also a power loss (slower). "
         "SQLite only: over Redis, Redis's appendfsync decides."],
        ["db-prefix", None, "sockproto:kv:", "With --db redis://: the prefix of the store's Redis keys."],
        ["db-wait", None, 0.0, "With --db redis://: seconds to keep trying to reach Redis at start "
         "(0: exit at once).", nonNegativeFloat],
        ["max-output-buffer", None, MAX_OUTPUT_BUFFER,
         "Unsent reply bytes a connection may owe; past it nothing more is read from it until it drains.",
         positiveInt],
        ["send-timeout", None, SEND_TIMEOUT,
         "Seconds a connection may owe over --max-output-buffer without taking any of it before it is "
         "closed (0: no limit).", nonNegativeFloat],
    ]

    def workersProblem(self) -> str | None:
        if isRedis(self["db"]):
            return None
        return (
            "needs --db redis://...: the SQLite store answers reads from one process's memory, so workers "
            "would not see each other's writes (docs/scaling.rst)"
        )

    def postOptions(self) -> None:
        ServerOptions.postOptions(self)
        if self["fsync"] not in FSYNC_MODES:
            raise usage.UsageError(f"bad --fsync {self['fsync']!r}: choose normal or always")
        if isRedis(self["db"]):
            try:
                parseRedisURL(redisURLOf(self["db"]))
            except ValueError as e:
                raise usage.UsageError(f"bad --db: {e}") from None
            if self["fsync"] != "normal":
                raise usage.UsageError(
                    "--fsync is for the SQLite store; over Redis, durability is Redis's appendfsync setting "
                    "(docs/binary-protocol.rst)"
                )


def isRedis(db: str) -> bool:
    return db.startswith(("redis://", "rediss://", "redis+unix:"))


def redisURLOf(db: str) -> str:
    return db.removeprefix("redis+") if db.startswith("redis+unix:") else db


def databaseKey(db: str) -> str:
    """What identifies a database: its real path (``:memory:`` as is)."""
    return db if db == MEMORY else os.path.realpath(db)


class StoreRegistry(service.MultiService):
    """
    The stores of one process, one per database: services naming the same
    database (binary and crud) share one store object, so each sees the
    other's writes at once and commits go in one group.  Each store is
    closed, its accepted writes committed, when this service stops.
    """

    def __init__(self, reactor: IServerReactor, storesOnly: bool = False) -> None:
        service.MultiService.__init__(self)
        self.reactor = reactor
        #: The process serves these stores and nothing else (no chat, no
        #: echo): ``--fsync always`` may then sync in the reactor thread.
        self.storesOnly = storesOnly
        self.stores: dict[str, tuple[Any, str]] = {}

    def open(self, serviceName: str, db: str, fsync: str, prefix: str = "", wait: float = 0.0) -> Any:
        if isRedis(db):
            return self._openRedis(serviceName, db, prefix, wait)
        key = databaseKey(db)
        if key in self.stores:
            store, firstFsync = self.stores[key]
            if fsync != firstFsync:
                raise SystemExit(
                    f"sockproto-{serviceName}: --fsync {fsync} differs from --fsync {firstFsync} "
                    f"given for the same database {db!r}"
                )
            return store
        store = (
            MemoryStore(self.reactor)
            if db == MEMORY
            else SQLiteStore(db, self.reactor, fsync=fsync, syncInline=self.storesOnly)
        )
        try:
            store.open()
        except Exception as e:
            why = explainDatabaseError(e)
            raise SystemExit(f"sockproto-{serviceName}: cannot open database {db!r}: {why}") from None
        self.stores[key] = (store, fsync)
        # On the way down the store commits what it accepted, then closes.
        CloseOnStop(store).setServiceParent(self)
        return store

    def _openRedis(self, serviceName: str, db: str, prefix: str, wait: float) -> Any:
        from sockproto.binary.redisstore import RedisStore

        address = parseRedisURL(redisURLOf(db))
        key = f"{address.display} {prefix}"
        if key in self.stores:
            return self.stores[key][0]
        waitForRedis(address, wait, f"sockproto-{serviceName}", "--db-wait")
        store = RedisStore(self.reactor, address, prefix)
        store.open()
        self.stores[key] = (store, "redis")
        CloseOnStop(store).setServiceParent(self)
        return store


def makeStoreService(
    options: StoreServerOptions,
    reactor: IServerReactor | None,
    factoryClass: Any,
    stores: StoreRegistry | None = None,
    **settings: Any,
) -> Any:
    """
    Open the store (or take it from ``stores``), build the factory over it and listen.

    Without ``stores`` the result owns its store and closes it after the
    connections are drained; with it, the caller stops ``stores`` last.
    """
    reactor = defaultReactor(reactor)
    top = StopInOrder()
    if stores is None:
        stores = StoreRegistry(reactor, storesOnly=True)
        stores.setServiceParent(top)
    store = stores.open(
        options.serviceName, options["db"], options["fsync"], options["db-prefix"], options["db-wait"]
    )
    factory = factoryClass(
        reactor,
        store,
        maxOutputBuffer=options["max-output-buffer"],
        sendTimeout=options["send-timeout"],
        **settings,
        **options.limits(),
    )
    # Added last, stopped first: requests already read are answered and the
    # connections closed before the store commits its last writes and closes.
    options.listeningService(factory, reactor).setServiceParent(top)
    return top


def maxFrame(value: str) -> int:
    number = positiveInt(value)
    if number < MIN_LENGTH + 2 + 1:
        raise ValueError(f"{value} is too small for any request")
    return number


maxFrame.coerceDoc = "Bytes, at least 8."  # type: ignore[attr-defined]


class Options(StoreServerOptions):
    """``sockproto-binary``'s options: the store's (``--db``, ``--fsync``) and ``--max-frame``."""

    serviceName = "binary"
    defaultPort = 9000
    longdesc = "SPB/1, a framed binary request/response protocol over a durable key-value store."
    optParameters = [
        ["max-frame", None, DEFAULT_MAX_FRAME, "Largest frame accepted, in bytes after the length.", maxFrame],
    ]


def buildService(
    options: Options, reactor: IServerReactor | None = None, stores: StoreRegistry | None = None
) -> service.IService:
    return makeStoreService(options, reactor, SPBFactory, stores, maxFrame=options["max-frame"])


makeService = standalone(buildService)
