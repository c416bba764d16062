"""Options and services of ``twistd -n sockproto-binary`` and the shared store plumbing."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.python import usage

from sockproto.binary.codec import DEFAULT_MAX_FRAME, MIN_LENGTH
from sockproto.binary.protocol import SPBFactory
from sockproto.binary.store import FSYNC_MODES, MEMORY, GroupCommitStore, MemoryStore, SQLiteStore
from sockproto.listen import ListeningService, ServerOptions, positiveInt


class StoreServerOptions(ServerOptions):
    """Options of a service over the store: ``--db`` and ``--fsync`` (binary and crud)."""

    optParameters = [
        ["db", None, "sockproto-kv.sqlite3", "SQLite database file (:memory: keeps nothing)."],
        ["fsync", None, "normal",
         "normal: acknowledged writes survive a crash of the server; always: also a power loss (slower)."],
    ]

    def postOptions(self) -> None:
        ServerOptions.postOptions(self)
        if self["fsync"] not in FSYNC_MODES:
            raise usage.UsageError(f"bad --fsync {self['fsync']!r}: choose normal or always")


class StoreService(service.Service):
    """Commits what was accepted and closes the store on the way down."""

    def __init__(self, store: GroupCommitStore) -> None:
        self.store = store

    def stopService(self) -> Any:
        service.Service.stopService(self)
        return self.store.close()


def openStore(serviceName: str, options: Any, reactor: Any) -> GroupCommitStore:
    store: GroupCommitStore
    if options["db"] == MEMORY:
        store = MemoryStore(reactor)
    else:
        store = SQLiteStore(options["db"], reactor, fsync=options["fsync"])
    try:
        store.open()
    except Exception as e:
        raise SystemExit(f"sockproto-{serviceName}: cannot open database {options['db']!r}: {e}") from None
    return store


def makeStoreService(options: StoreServerOptions, reactor: Any, factoryClass: Any, **settings: Any) -> Any:
    """Open the store, build the factory over it, listen; close the store last on the way down."""
    if reactor is None:
        from twisted.internet import reactor
    name = options.serviceName
    store = openStore(name, options, reactor)
    factory = factoryClass(reactor, store, **settings, **options.limits())
    top = service.MultiService()
    StoreService(store).setServiceParent(top)
    # Added last, stopped first: no new requests while the last writes commit.
    ListeningService(name, options["listen"], factory, reactor).setServiceParent(top)
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


def makeService(options: Options, reactor: Any = None) -> service.IService:
    return makeStoreService(options, reactor, SPBFactory, maxFrame=options["max-frame"])
