"""The durable key-value store behind SPB/1 and the CRUD text service.

:class:`KeyValueStore` is the interface the protocols use; :class:`SQLiteStore`
implements it.  Reads are answered from an in-memory copy of the committed
data (like Redis, the data set lives in memory), so they never wait for the
disk or behind a commit.  Writes are checked at once against committed and
accepted-but-uncommitted state, in arrival order, then committed by one
writer thread in groups: every write that arrives while a commit runs goes
into the next transaction.  A write is acknowledged only after its
transaction has committed (``--fsync always``: and been synced to disk).
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from sockproto.binary.codec import Code, Op

log = Logger()

MEMORY = ":memory:"
FSYNC_MODES = ("normal", "always")

#: ``done(code)``: ``None`` when the write is committed, else an error Code.
Done = Callable[[int | None], None]


class KeyValueStore(Protocol):
    """What the protocols need of a store; another backend implements this."""

    def get(self, key: bytes) -> bytes | None:
        """The committed value, without I/O."""

    def keys(self, prefix: bytes) -> list[bytes]:
        """Committed keys starting with ``prefix``, in byte order."""

    def __len__(self) -> int: ...

    def write(self, op: int, key: bytes, value: bytes, done: Done) -> int | None:
        """
        Accept CREATE, UPDATE or DELETE: return an error Code at once if it
        cannot apply (EXISTS, NOT_FOUND), else None and call ``done`` once it
        is durable.
        """


_DELETED = object()


class GroupCommitStore:
    """
    The in-memory copy, write checking and group commit; subclasses persist.

    A subclass implements :meth:`_persist` and calls :meth:`_committed` (in
    the reactor thread) when a group is durable or has failed.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._data: dict[bytes, bytes] = {}
        self._sorted: list[bytes] = []
        # key -> [latest accepted state (value or _DELETED), writes not yet committed]
        self._pending: dict[bytes, list[Any]] = {}
        self._queue: list[tuple[int, bytes, bytes, Done]] = []
        self._committing = False
        self._idle: list[defer.Deferred[None]] = []
        self.commits = 0
        self.committedWrites = 0

    def _load(self, rows: list[tuple[bytes, bytes]]) -> None:
        self._data = {bytes(k): bytes(v) for k, v in rows}
        self._sorted = sorted(self._data)

    def whenIdle(self) -> defer.Deferred[None]:
        """Fires when every accepted write has been committed."""
        if not (self._committing or self._queue):
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._idle.append(waiter)
        return waiter

    # -- reads --------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def keys(self, prefix: bytes) -> list[bytes]:
        keys = self._sorted
        start = bisect.bisect_left(keys, prefix)
        if not prefix:
            return keys[:]
        end = start
        while end < len(keys) and keys[end].startswith(prefix):
            end += 1
        return keys[start:end]

    def __len__(self) -> int:
        return len(self._data)

    # -- writes -------------------------------------------------------------------

    def _exists(self, key: bytes) -> bool:
        pending = self._pending.get(key)
        if pending is not None:
            return pending[0] is not _DELETED
        return key in self._data

    def write(self, op: int, key: bytes, value: bytes, done: Done) -> int | None:
        exists = self._exists(key)
        if op == Op.CREATE:
            if exists:
                return Code.EXISTS
        elif not exists:
            return Code.NOT_FOUND
        state = _DELETED if op == Op.DELETE else value
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = [state, 1]
        else:
            pending[0] = state
            pending[1] += 1
        self._queue.append((op, key, value, done))
        if not self._committing:
            self._startCommit()
        return None

    def _startCommit(self) -> None:
        batch, self._queue = self._queue, []
        self._committing = True
        # Only the last state of each key matters inside one transaction.
        final: dict[bytes, Any] = {}
        for op, key, value, _ in batch:
            final[key] = None if op == Op.DELETE else value
        upserts = [(k, v) for k, v in final.items() if v is not None]
        deletes = [(k,) for k, v in final.items() if v is None]
        self._persist(batch, upserts, deletes)

    def _persist(self, batch: list[Any], upserts: list[tuple[bytes, bytes]], deletes: list[tuple[bytes]]) -> None:
        raise NotImplementedError

    def _committed(self, batch: list[tuple[int, bytes, bytes, Done]], ok: bool, result: Any) -> None:
        self._committing = False
        pending = self._pending
        if ok:
            self.commits += 1
            self.committedWrites += len(batch)
            self._afterCommit(result)
        else:
            log.failure("kv store: a commit of {count} writes failed", result, count=len(batch))
        data, keys = self._data, self._sorted
        # Apply and acknowledge one write at a time, in order, so what a
        # connection asks after each write sees exactly the writes before it.
        for op, key, value, done in batch:
            if ok:
                if op == Op.DELETE:
                    if data.pop(key, None) is not None:
                        index = bisect.bisect_left(keys, key)
                        if index < len(keys) and keys[index] == key:
                            del keys[index]
                else:
                    if key not in data:
                        bisect.insort(keys, key)
                    data[key] = value
            entry = pending.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del pending[key]
            try:
                done(None if ok else Code.SERVER_ERROR)
            except Exception:
                log.failure("kv store: a write's completion failed")
        if self._queue:
            self._startCommit()
        elif self._idle:
            idle, self._idle = self._idle, []
            for waiter in idle:
                waiter.callback(None)

    def _afterCommit(self, result: Any) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {"keys": len(self._data), "commits": self.commits, "committed_writes": self.committedWrites}



class SQLiteStore(GroupCommitStore):
    """An SQLite database with an in-memory copy, written with group commit by one thread."""

    def __init__(self, path: str, reactor: Any, fsync: str = "normal", pollInterval: float = 0.1) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {FSYNC_MODES}")
        GroupCommitStore.__init__(self, reactor)
        self.path = path
        self.fsync = fsync
        self.pollInterval = pollInterval
        self._connection: sqlite3.Connection | None = None
        self._pool: ThreadPool | None = None
        self._poller: task.LoopingCall | None = None
        self._dataVersion = 0

    # -- life -------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating) the database and load it; at startup, before serving."""
        connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={'FULL' if self.fsync == 'always' else 'NORMAL'}")
        connection.execute("CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
        self._connection = connection
        self._load(self._readAll())
        self._pool = ThreadPool(1, 1, name="sockproto-kv-writer")
        self._pool.start()
        if self.path != MEMORY and self.pollInterval:
            # Another process writing the same file (e.g. a separate crud
            # service) is noticed through SQLite's data_version.
            self._poller = task.LoopingCall(self._pollOthers)
            self._poller.clock = self.reactor
            self._poller.start(self.pollInterval, now=False)

    def _readAll(self) -> list[tuple[bytes, bytes]]:
        assert self._connection is not None
        rows = self._connection.execute("SELECT key, value FROM kv").fetchall()
        self._dataVersion = self._connection.execute("PRAGMA data_version").fetchone()[0]
        return rows

    @defer.inlineCallbacks
    def close(self) -> Any:
        """Commit what was accepted, then close."""
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        yield self.whenIdle()
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _persist(self, batch: list[Any], upserts: list[tuple[bytes, bytes]], deletes: list[tuple[bytes]]) -> None:
        assert self._pool is not None
        self._pool.callInThreadWithCallback(
            lambda ok, result: self.reactor.callFromThread(self._committed, batch, ok, result),
            self._commitInThread,
            upserts,
            deletes,
        )

    def _afterCommit(self, version: Any) -> None:
        if version != self._dataVersion:
            self._dataVersion = version
            self._scheduleReload()

    # -- other writers --------------------------------------------------------------

    def _pollOthers(self) -> None:
        if self._pool is None or self._committing:
            return
        self._pool.callInThreadWithCallback(
            lambda ok, result: self.reactor.callFromThread(self._polled, ok, result),
            lambda: self._connection.execute("PRAGMA data_version").fetchone()[0],  # type: ignore[union-attr]
        )

    def _polled(self, ok: bool, version: Any) -> None:
        if ok and version != self._dataVersion:
            self._dataVersion = version
            self._scheduleReload()

    def _scheduleReload(self) -> None:
        assert self._pool is not None
        log.info("kv store: {path} was changed by another process; reloading", path=self.path)
        self._pool.callInThreadWithCallback(
            lambda ok, rows: self.reactor.callFromThread(self._reloaded, ok, rows), self._readAll
        )

    def _reloaded(self, ok: bool, rows: Any) -> None:
        if ok:
            self._load(rows)
        else:
            log.failure("kv store: reload failed", rows)

    def _commitInThread(self, upserts: list[tuple[bytes, bytes]], deletes: list[tuple[bytes]]) -> int:
        connection = self._connection
        assert connection is not None
        try:
            connection.execute("BEGIN")
            if upserts:
                connection.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", upserts)
            if deletes:
                connection.executemany("DELETE FROM kv WHERE key = ?", deletes)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        # Our own commits do not change data_version; another process's do.
        return connection.execute("PRAGMA data_version").fetchone()[0]


class MemoryStore(GroupCommitStore):
    """Keeps nothing across restarts; each group "commits" on the next reactor turn."""

    def open(self) -> None:
        pass

    def close(self) -> defer.Deferred[None]:
        return self.whenIdle()

    def _persist(self, batch: list[Any], upserts: list[tuple[bytes, bytes]], deletes: list[tuple[bytes]]) -> None:
        self.reactor.callLater(0, self._committed, batch, True, None)
