"""Options and services of ``twistd -n sockproto-binary`` and the shared store plumbing."""

from __future__ import annotations

import os
from typing import Any

from twisted.application import service
from twisted.python import usage

from sockproto.binary.codec import DEFAULT_MAX_FRAME, MIN_LENGTH
from sockproto.binary.protocol import SPBFactory
from sockproto.binary.store import FSYNC_MODES, MEMORY, GroupCommitStore, MemoryStore, SQLiteStore
from sockproto.server.connections import MAX_OUTPUT_BUFFER, SEND_TIMEOUT
from sockproto.server.files import explainDatabaseError
from sockproto.server.lifecycle import defaultReactor, standalone
from sockproto.server.listen import CloseOnStop, ServerOptions, StopInOrder, nonNegativeFloat, positiveInt


class StoreServerOptions(ServerOptions):
    """Options of a service over the store: ``--db`` and ``--fsync`` (binary and crud)."""

    optParameters = [
        ["db", None, "sockproto-kv.sqlite3", "SQLite database file (:memory: keeps nothing)."],
        ["fsync", None, "normal",
         "normal: acknowledged writes survive a crash of the server; always: also a power loss (slower)."],
        ["max-output-buffer", None, MAX_OUTPUT_BUFFER,
         "Unsent reply bytes a connection may owe; past it nothing more is read from it until it drains.",
         positiveInt],
        ["send-timeout", None, SEND_TIMEOUT,
         "Seconds a connection may owe over --max-output-buffer without taking any of it before it is "
         "closed (0: no limit).", nonNegativeFloat],
    ]

    def postOptions(self) -> None:
        ServerOptions.postOptions(self)
        if self["fsync"] not in FSYNC_MODES:
            raise usage.UsageError(f"bad --fsync {self['fsync']!r}: choose normal or always")


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

    def __init__(self, reactor: Any) -> None:
        service.MultiService.__init__(self)
        self.reactor = reactor
        self.stores: dict[str, tuple[GroupCommitStore, str]] = {}

    def open(self, serviceName: str, db: str, fsync: str) -> GroupCommitStore:
        key = databaseKey(db)
        if key in self.stores:
            store, firstFsync = self.stores[key]
            if fsync != firstFsync:
                raise SystemExit(
                    f"sockproto-{serviceName}: --fsync {fsync} differs from --fsync {firstFsync} "
                    f"given for the same database {db!r}"
                )
            return store
        store = MemoryStore(self.reactor) if db == MEMORY else SQLiteStore(db, self.reactor, fsync=fsync)
        try:
            store.open()
        except Exception as e:
            why = explainDatabaseError(e)
            raise SystemExit(f"sockproto-{serviceName}: cannot open database {db!r}: {why}") from None
        self.stores[key] = (store, fsync)
        # On the way down the store commits what it accepted, then closes.
        CloseOnStop(store).setServiceParent(self)
        return store


def makeStoreService(
    options: StoreServerOptions,
    reactor: Any,
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
        stores = StoreRegistry(reactor)
        stores.setServiceParent(top)
    store = stores.open(options.serviceName, options["db"], options["fsync"])
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
    serviceName = "binary"
    defaultPort = 9000
    longdesc = "SPB/1, a framed binary request/response protocol over a durable key-value store."
    optParameters = [
        ["max-frame", None, DEFAULT_MAX_FRAME, "Largest frame accepted, in bytes after the length.", maxFrame],
    ]


def buildService(options: Options, reactor: Any = None, stores: StoreRegistry | None = None) -> service.IService:
    return makeStoreService(options, reactor, SPBFactory, stores, maxFrame=options["max-frame"])


makeService = standalone(buildService)
