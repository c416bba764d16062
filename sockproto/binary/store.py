# -*- test-case-name: tests.test_binary_store,tests.test_binary -*-
"""
The key-value store's core, whatever keeps it: an in-memory copy of the
committed data, writes checked at once in arrival order and committed in
groups, one a reactor turn (:class:`GroupCommitStore`); and
:class:`MemoryStore`, which keeps nothing.  :mod:`sockproto.binary.sqlitestore`
makes it durable; :mod:`sockproto.binary.redisstore` is the store shared
through Redis.

:class:`sockproto.interfaces.ILocalKeyValueStore` is what the protocols use
of these stores: reads are answered from the in-memory copy (like Redis, the
data set lives in memory), so they never wait for the disk or behind a
commit, and a write is acknowledged only once its group is committed.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from sockproto.binary.codec import Code, Op
from sockproto.interfaces import ILocalKeyValueStore, IServerReactor

log = Logger()

MEMORY = ":memory:"
#: What --fsync takes (sockproto.binary.sqlitestore says what each does).
FSYNC_MODES = ("normal", "always")

#: ``done(code)``: ``None`` when the write is committed, else an error Code.
Done = Callable[[int | None], None]


class StoreError(Exception):
    """The store cannot do what was asked; the message says why."""


_DELETED = object()
# Plain ints: an enum member lookup costs a tenth of a microsecond on the write path.
_CREATE, _DELETE_OP = int(Op.CREATE), int(Op.DELETE)


@implementer(ILocalKeyValueStore)
class GroupCommitStore:
    """
    The in-memory copy, write checking and grouping; subclasses persist.

    A subclass implements :meth:`_persist`, called at the end of a reactor
    turn with that turn's writes, and calls :meth:`_committed` (in the
    reactor thread) once a group is durable or has failed.
    """

    def __init__(self, reactor: IServerReactor) -> None:
        self.reactor = reactor
        self._data: dict[bytes, bytes] = {}
        # Reads are the hot path: get is the dict's own method, no Python call.
        self.get = self._data.get  # type: ignore[method-assign,assignment]
        self._sorted: list[bytes] = []
        # key -> [latest accepted state (value or _DELETED), writes not yet committed]
        self._pending: dict[bytes, list[Any]] = {}
        self._queue: list[tuple[int, bytes, bytes, Done]] = []
        self._scheduled = False
        self._inflight = 0  # groups handed to _persist and not yet committed
        self._idle: list[defer.Deferred[None]] = []
        self.commits = 0
        self.committedWrites = 0
        #: Writes are refused (SERVER_ERROR) now, for one of the reasons below.
        self.refusingWrites = False
        #: Set when the disk failed a sync: what reached it is uncertain, so
        #: writes are refused until a restart recovers from the files, as
        #: Redis stops on a failed ``appendfsync always``.
        self.syncFailed = False
        #: The disk is full: writes are refused until it has room again (reads go on).
        self.diskFull = False
        #: Times the disk was found full (each time said once in the log).
        self.diskFullEpisodes = 0

    @property
    def writeProblem(self) -> str | None:
        """Why writes are refused now, for the clients (None: they are not)."""
        if self.diskFull:
            return "the server's disk is full: writes are refused until it has room again"
        if self.syncFailed:
            return "the server's disk failed a sync: writes are refused until the server is restarted"
        return None

    def _load(self, rows: list[tuple[bytes, bytes]]) -> None:
        # In place: the bound ``get`` (and protocols holding it) stay valid.
        self._data.clear()
        self._data.update((bytes(k), bytes(v)) for k, v in rows)
        self._sorted = sorted(self._data)

    def whenIdle(self) -> defer.Deferred[None]:
        """Fires when every accepted write has been committed."""
        if not (self._scheduled or self._queue or self._inflight):
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._idle.append(waiter)
        return waiter

    # -- reads --------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:  # replaced by the dict's get in __init__
        return self._data.get(key)

    def keys(self, prefix: bytes) -> list[bytes]:
        keys = self._sorted
        if not prefix:
            return keys[:]
        start = bisect.bisect_left(keys, prefix)
        end = start
        while end < len(keys) and keys[end].startswith(prefix):
            end += 1
        return keys[start:end]

    def __len__(self) -> int:
        return len(self._data)

    # The same reads as Deferreds, as a store shared through Redis answers them.
    def fetch(self, key: bytes, then: Callable[[bytes | None, Any], None]) -> None:
        then(self._data.get(key), None)

    def listKeys(self, prefix: bytes) -> defer.Deferred[list[bytes]]:
        return defer.succeed(self.keys(prefix))

    def count(self) -> defer.Deferred[int]:
        return defer.succeed(len(self._data))

    # -- writes -------------------------------------------------------------------

    def write(self, op: int, key: bytes, value: bytes, done: Done) -> int | None:
        if self.refusingWrites:
            return Code.SERVER_ERROR
        pending = self._pending.get(key)
        # The latest accepted state: a pending write's, else the committed data's.
        exists = key in self._data if pending is None else pending[0] is not _DELETED
        if op == _CREATE:
            if exists:
                return Code.EXISTS
        elif not exists:
            return Code.NOT_FOUND
        state = _DELETED if op == _DELETE_OP else value
        if pending is None:
            self._pending[key] = [state, 1]
        else:
            pending[0] = state
            pending[1] += 1
        self._queue.append((op, key, value, done))
        if not self._scheduled:
            # At the end of this reactor turn, with every write read in it.
            self._scheduled = True
            self.reactor.callLater(0, self._group)
        return None

    def _group(self) -> None:
        self._scheduled = False
        batch, self._queue = self._queue, []
        if not batch:
            return
        # Only the last state of each key matters inside one transaction.
        final: dict[bytes, Any] = {}
        for op, key, value, _ in batch:
            final[key] = None if op == _DELETE_OP else value
        self._inflight += 1
        self._persist(batch, final)

    def _persist(self, batch: list[Any], final: dict[bytes, bytes | None]) -> None:
        """Make ``final`` (each key's last state in the group, None: deleted) durable, then call _committed."""
        raise NotImplementedError

    def _committed(self, batch: list[tuple[int, bytes, bytes, Done]], ok: bool, failure: Any = None) -> None:
        self._inflight -= 1
        pending = self._pending
        if ok:
            self.commits += 1
            self.committedWrites += len(batch)
        elif failure is not None:  # (a full disk is logged once, by the store)
            log.failure("kv store: a commit of {count} writes failed", failure, count=len(batch))
        data, keys = self._data, self._sorted
        code = None if ok else Code.SERVER_ERROR
        # Apply and acknowledge one write at a time, in order, so what a
        # connection asks after each write sees exactly the writes before it.
        for op, key, value, done in batch:
            if ok:
                if op != _DELETE_OP and key in data:
                    data[key] = value  # an update: _apply's common case, inline
                else:
                    self._apply(data, keys, key, None if op == _DELETE_OP else value)
            try:
                done(code)
            except Exception:
                log.failure("kv store: a write's completion failed")
        if not self._inflight and not self._queue:
            # Nothing else accepted and not committed: nothing is pending
            # (one clear instead of a count down per write).
            pending.clear()
        else:
            for _, key, _, _ in batch:
                entry = pending.get(key)
                if entry is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        del pending[key]
        if ok:
            self._afterCommit(batch)
        if self._idle and not (self._scheduled or self._queue or self._inflight):
            idle, self._idle = self._idle, []
            for waiter in idle:
                waiter.callback(None)

    @staticmethod
    def _apply(data: dict[bytes, bytes], keys: list[bytes], key: bytes, value: bytes | None) -> None:
        if value is None:
            if data.pop(key, None) is not None:
                index = bisect.bisect_left(keys, key)
                if index < len(keys) and keys[index] == key:
                    del keys[index]
        else:
            if key not in data:
                bisect.insort(keys, key)
            data[key] = value

    def _afterCommit(self, batch: list[Any]) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {
            "keys": len(self._data),
            "commits": self.commits,
            "committed_writes": self.committedWrites,
            "refusing_writes": int(self.refusingWrites),
            "disk_full": int(self.diskFull),
        }


class MemoryStore(GroupCommitStore):
    """Keeps nothing across restarts; each group "commits" on the next reactor turn."""

    def open(self) -> None:
        pass

    def close(self) -> defer.Deferred[None]:
        return self.whenIdle()

    def _persist(self, batch: list[Any], final: dict[bytes, bytes | None]) -> None:
        self.reactor.callLater(0, self._committed, batch, True)
