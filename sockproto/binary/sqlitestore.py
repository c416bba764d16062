# -*- test-case-name: tests.test_binary_store,tests.test_binary_crash_e2e -*-
"""The durable key-value store behind SPB/1 and the CRUD text service: SQLite under the group-commit core.

:class:`SQLiteStore` is a :class:`sockproto.binary.store.GroupCommitStore`.
Reads are answered from an in-memory copy of the committed data (like Redis,
the data set lives in memory), so they never wait for the disk or behind a
commit.  Writes are checked at once against committed and
accepted-but-uncommitted state, in arrival order, and committed in groups:
all writes of one reactor turn are one transaction.  A write is acknowledged
only after its transaction has committed: written to SQLite's WAL (it then
survives a crash of the server), and with ``--fsync always`` also synced to
disk.  Syncs run on a worker thread, one for all the transactions committed
since the last one (group commit for fsync, as Redis's ``appendfsync``), and
so do checkpoints and reloads; the reactor thread only hands SQLite bytes
for the page cache, the way Redis writes its append-only file.

A group is committed as one row appended to the ``log`` table (an encoded
batch), which touches a few pages at the end of the table, instead of one
B-tree page per key.  The log is folded into the ``kv`` table from time to
time, each key once however often it was written; loading reads ``kv`` and
replays ``log`` in order, so a crash at any point loses nothing committed.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import struct
from typing import Any

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from sockproto.binary.store import _DELETE_OP, FSYNC_MODES, MEMORY, GroupCommitStore, StoreError
from sockproto.interfaces import IServerReactor
from sockproto.server.files import createOwnerOnly

log = Logger()


def isDiskFull(error: BaseException) -> bool:
    """Whether an error from SQLite or the OS means the disk (or a quota) is full."""
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(error)
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def freeBytes(path: str) -> int:
    """Bytes an unprivileged process may still write on the file system holding ``path``."""
    stat = os.statvfs(os.path.dirname(os.path.abspath(path)))
    return stat.f_bavail * stat.f_frsize


_RECORD = struct.Struct(">BHI")  # op (0 put, 1 delete), key length, value length
_PUT, _DELETE = 0, 1


def encodeBatch(final: dict[bytes, bytes | None]) -> bytes:
    """One log row: the final state of each key written in a group (None: deleted)."""
    pack = _RECORD.pack
    parts: list[bytes] = []
    for key, value in final.items():
        if value is None:
            parts += (pack(_DELETE, len(key), 0), key)
        else:
            parts += (pack(_PUT, len(key), len(value)), key, value)
    return b"".join(parts)


def decodeBatch(blob: bytes) -> list[tuple[bytes, bytes | None]]:
    """(key, value or None for a delete) of a log row, in order."""
    records: list[tuple[bytes, bytes | None]] = []
    offset, end, unpack, size = 0, len(blob), _RECORD.unpack_from, _RECORD.size
    while offset < end:
        op, keyLength, valueLength = unpack(blob, offset)
        offset += size
        key = blob[offset : offset + keyLength]
        offset += keyLength
        if op == _DELETE:
            records.append((key, None))
        else:
            records.append((key, blob[offset : offset + valueLength]))
            offset += valueLength
    return records


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    # Committed groups not yet folded into kv, in commit order.
    "CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, batch BLOB NOT NULL)",
)


def readSnapshot(connection: sqlite3.Connection) -> dict[bytes, bytes]:
    """kv with the log replayed over it, from one read transaction."""
    connection.execute("BEGIN")
    try:
        data = {bytes(k): bytes(v) for k, v in connection.execute("SELECT key, value FROM kv")}
        for (blob,) in connection.execute("SELECT batch FROM log ORDER BY seq"):
            for key, value in decodeBatch(bytes(blob)):
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
    finally:
        connection.execute("COMMIT")
    return data


class SQLiteStore(GroupCommitStore):
    """An SQLite database (WAL) with an in-memory copy."""

    #: Checkpoint (copy the WAL into the database) past this many WAL pages.
    checkpointPages = 4096
    #: Fold the log into kv this many seconds after the first unfolded group...
    foldInterval = 1.0
    #: ...or once this many keys wait to be folded, whichever comes first.
    foldKeys = 20000
    #: A fold from the log table itself (at start, after a failure, or
    #: when another process writes) takes about this many bytes of it per
    #: transaction: each step needs little room, and the log pages one step
    #: frees are reused by the next, so a full disk can still be folded.
    foldStepBytes = 1 << 20
    #: While the disk is full: seconds between tries to fold and to see
    #: whether it has room again, and the free bytes that count as room.
    diskRetryInterval = 1.0
    diskHeadroom = 2 << 20

    def __init__(
        self,
        path: str,
        reactor: IServerReactor,
        fsync: str = "normal",
        pollInterval: float = 0.1,
        syncInline: bool = False,
    ) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {FSYNC_MODES}")
        GroupCommitStore.__init__(self, reactor)
        self.path = path
        self.fsync = fsync
        #: With ``--fsync always``: sync each group in the reactor thread, at
        #: the end of the turn that read its writes, as Redis's ``appendfsync
        #: always`` does.  Only for a process that serves nothing but this
        #: store (binary, crud): there the reactor has nothing better to do
        #: while the disk syncs, and handing the sync to a thread and back
        #: cost a third of the throughput.  Where chat or echo share the
        #: process, the worker thread syncs, so that they never stall.
        self.syncInline = syncInline
        self.pollInterval = pollInterval
        self._connection: sqlite3.Connection | None = None  # the reactor thread's, for writes
        self._worker: sqlite3.Connection | None = None  # the worker thread's: checkpoints, reloads
        self._pool: ThreadPool | None = None
        self._poller: task.LoopingCall | None = None
        self._walFD: int | None = None
        self._unsynced: list[list[Any]] = []
        self._syncing = False
        self._walPages = 0
        self._checkpointing = False
        self._dataVersion = 0
        self._sinceReload: list[tuple[bytes, bytes | None]] | None = None
        # The final state of each key committed to the log since the last fold.
        self._unfolded: dict[bytes, bytes | None] = {}
        self._foldCall: Any = None
        # Another process has committed since the last fold: fold from the log itself.
        self._foreign = False
        self._diskRetry: Any = None
        self.syncs = 0
        self.folds = 0

    def open(self) -> None:
        """
        Open (creating) the database and load it; at startup, before serving.

        Whatever a crash left (log rows not yet folded, a fold or a checkpoint
        cut short) is recovered here: SQLite rolls back an unfinished
        transaction and replays its WAL, the log is replayed over kv in
        memory, folded into kv and checkpointed, all before the first request.
        Blocking is fine here: nothing is served yet.
        """
        try:
            self._open()
        except BaseException:
            self._closeConnections()
            raise

    def _open(self) -> None:
        if self.path != MEMORY:
            createOwnerOnly(self.path)
        connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._connection = connection
        # (For a new file.)  A group's log row fits in one page, with no
        # overflow chain to write now and walk when the row is deleted.
        connection.execute("PRAGMA page_size=4096")
        connection.execute("PRAGMA journal_mode=WAL")
        # This connection never syncs and never checkpoints: the worker
        # thread does both, with a connection that syncs fully, so the WAL is
        # only ever reused after the database file itself is on disk.
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA wal_autocheckpoint=0")
        for statement in _SCHEMA:
            connection.execute(statement)
        worker = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        worker.execute("PRAGMA synchronous=FULL")
        self._worker = worker
        self._load(list(readSnapshot(connection).items()))
        # What a crashed run left in the log goes into kv now, and the WAL
        # into the database file (synced), in this thread: the worker thread
        # does not run yet.  On a full disk the store serves what it loaded
        # and refuses writes until there is room (see _diskIsFull).
        self._foldAtStart(worker)
        self._walPages = 0
        self._dataVersion = self._version()
        if self.path != MEMORY:
            self._walFD = os.open(self.path + "-wal", os.O_RDONLY | os.O_CREAT, 0o600)
        # The worker thread starts with the reactor, not here: a process that
        # fails before it runs (a port already in use) must be able to exit,
        # and a running thread would keep it alive.  Work queued before then waits.
        self._pool = ThreadPool(1, 1, name="sockproto-kv-worker")
        self.reactor.callWhenRunning(self._startPool)
        if self.path != MEMORY and self.pollInterval:
            # Another process writing the same file (e.g. a separate crud
            # service) is noticed through SQLite's data_version.
            self._poller = task.LoopingCall(self._pollOthers)
            self._poller.clock = self.reactor
            self._poller.start(self.pollInterval, now=False)

    def _foldAtStart(self, worker: sqlite3.Connection) -> None:
        """
        Fold the whole log, a step at a time, the WAL copied into the
        database and emptied before the first step and after each: what a
        crash left in the WAL gives its room back first, and each step needs
        little more than its own size.
        """
        self._foreign = True
        while True:
            try:
                worker.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:
                if not isDiskFull(e):
                    raise
                # Folding now would only grow the WAL: serve, and fold once there is room.
                self._diskIsFull("checkpointing at start", e)
                return
            if not self._foreign:  # nothing left in the log
                return
            if not self.fold():
                self._cancelFold()
                if self.diskFull:
                    return
                raise StoreError("folding the log table into the kv table failed (see the log above)")

    def _startPool(self) -> None:
        # Not if the store was closed before the reactor ran: the thread would never be stopped.
        if self._pool is not None and not self._pool.started:
            self._pool.start()

    def _closeConnections(self) -> None:
        for connection in (self._connection, self._worker):
            if connection is not None:
                connection.close()
        self._connection = self._worker = None
        if self._walFD is not None:
            os.close(self._walFD)
            self._walFD = None

    def _version(self) -> int:
        if self._connection is None:
            raise StoreError("the store is closed")
        return self._connection.execute("PRAGMA data_version").fetchone()[0]

    @defer.inlineCallbacks
    def close(self) -> Any:
        """Commit (and sync) what was accepted, checkpoint, then close."""
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        yield self.whenIdle()
        self._stopDiskRetry()
        while self.fold() and self._foreign:  # the whole log, step by step (what is left waits for the next start)
            pass
        self._cancelFold()
        self._stopDiskRetry()
        # The worker is one thread: this runs after any checkpoint already queued.
        pool, worker = self._pool, self._worker
        if pool is not None and worker is not None:
            try:
                if pool.started:
                    yield self._inWorker(worker.execute, "PRAGMA wal_checkpoint(TRUNCATE)")
                else:  # the reactor never ran: nothing else is going on
                    worker.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:
                if not isDiskFull(e):
                    raise
                # Everything committed is in the WAL, which the next start reads.
                self._diskIsFull("checkpointing at shutdown", e)
        self._stopDiskRetry()
        if pool is not None:
            if pool.started:
                pool.stop()
            self._pool = None
        self._closeConnections()

    def _inWorker(self, function: Any, *args: Any) -> defer.Deferred[Any]:
        if self._pool is None:
            return defer.fail(StoreError("the store's worker thread is not running"))
        return threads.deferToThreadPool(self.reactor, self._pool, function, *args)

    def _persist(self, batch: list[Any], final: dict[bytes, bytes | None]) -> None:
        connection = self._connection
        if connection is None:
            self._committed(batch, False, Failure(StoreError("the store is closed")))
            return
        blob = encodeBatch(final)
        try:
            # One statement, its own transaction: a row at the end of the log.
            connection.execute("INSERT INTO log (batch) VALUES (?)", (blob,))
        except Exception as e:
            if isDiskFull(e):
                self._diskIsFull("a write", e)
                self._committed(batch, False)
            else:
                self._committed(batch, False, Failure())
            return
        unfolded = self._unfolded
        unfolded.update(final)
        self._walPages += len(blob) // 4000 + 2
        if len(unfolded) >= self.foldKeys:
            self._scheduleFold(0)
        elif self._foldCall is None:
            self._scheduleFold(self.foldInterval)
        if self.fsync == "always" and self._walFD is not None:
            if self.syncInline:
                try:
                    os.fsync(self._walFD)
                except OSError:
                    failure = Failure()
                    self._syncFailed(failure)
                    self._committed(batch, False, failure)
                else:
                    self.syncs += 1
                    self._committed(batch, True)
            else:
                self._unsynced.append(batch)
                if not self._syncing:
                    self._sync()
        else:
            self._committed(batch, True)
        self._maybeCheckpoint()

    def _scheduleFold(self, delay: float) -> None:
        if self._foldCall is not None:
            if delay or not self._foldCall.active():
                return
            self._foldCall.cancel()
        self._foldCall = self.reactor.callLater(delay, self.fold)

    def _cancelFold(self) -> None:
        if self._foldCall is not None and self._foldCall.active():
            self._foldCall.cancel()
        self._foldCall = None

    def fold(self) -> bool:
        """
        Move the log into kv in one transaction: each key written since the
        last fold once, with its final state, and the log rows deleted.

        Usually from memory (the keys this process committed); when another
        process may have appended to the log too, from the log itself, in
        order, so their writes and ours end up in kv as they were committed.
        Returns whether it succeeded; a failed fold is retried later.
        """
        self._cancelFold()
        connection = self._connection
        if connection is None:
            return False
        unfolded, self._unfolded = self._unfolded, {}
        more = False
        stepBytes = 0
        try:
            connection.execute("BEGIN IMMEDIATE")
            version = self._version()
            if version != self._dataVersion:
                self._foreign = True
            if self._foreign:
                unfolded, last, more, stepBytes = self._logStep(connection)
            else:
                (last,) = connection.execute("SELECT max(seq) FROM log").fetchone()
            if last is not None:
                # In key order: each B-tree page is visited once, in order.
                upserts = sorted((k, v) for k, v in unfolded.items() if v is not None)
                deletes = sorted((k,) for k, v in unfolded.items() if v is None)
                if upserts:
                    connection.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", upserts)
                if deletes:
                    connection.executemany("DELETE FROM kv WHERE key = ?", deletes)
                if more:
                    connection.execute("DELETE FROM log WHERE seq <= ?", (last,))
                else:
                    # The write lock is held, so nothing was appended after last:
                    # the whole table goes (SQLite drops its pages without reading rows).
                    connection.execute("DELETE FROM log")
            connection.execute("COMMIT")
        except Exception as e:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            # Nothing is lost: the log still holds every group.  Fold from it next time.
            self._foreign = True
            if isDiskFull(e):
                self._diskIsFull("folding the log", e)  # retried while the disk is full
            else:
                log.failure("kv store: folding the log into kv failed; will retry")
                self._scheduleFold(self.foldInterval)
            return False
        # With more of the log left, the next step folds from it too.
        self._foreign = more
        self.folds += 1
        self._walPages += len(unfolded) + 2 + 2 * stepBytes // 4000
        if more and self._pool is not None:  # (at start, open() folds step after step itself)
            self._scheduleFold(0)
        self._maybeCheckpoint()
        return True

    def _logStep(self, connection: sqlite3.Connection) -> tuple[dict[bytes, bytes | None], int | None, bool, int]:
        """
        The final state of each key written in the first rows of the log,
        about ``foldStepBytes`` of them (at least one row); the last seq
        read (None: the log is empty); whether rows are left after it; and
        the bytes read.
        """
        states: dict[bytes, bytes | None] = {}
        size, last, more = 0, None, False
        cursor = connection.execute("SELECT seq, batch FROM log ORDER BY seq")
        try:
            for seq, blob in cursor:
                if last is not None and size >= self.foldStepBytes:
                    more = True
                    break
                states.update(decodeBatch(bytes(blob)))
                size += len(blob)
                last = seq
        finally:
            cursor.close()
        return states, last, more, size

    # -- a full disk ------------------------------------------------------------------

    def _diskIsFull(self, what: str, error: BaseException) -> None:
        """The disk refused a write: refuse writes, say so once, and try again until it has room."""
        self.refusingWrites = True
        if not self.diskFull:
            self.diskFull = True
            self.diskFullEpisodes += 1
            log.error(
                "kv store: the disk holding {path} is full ({what}: {error}); writes are refused until "
                "{headroom} bytes are free, reads go on",
                path=self.path,
                what=what,
                error=str(error),
                headroom=self.diskHeadroom,
            )
        self._retryDiskLater(self.diskRetryInterval)

    def _retryDisk(self) -> None:
        """
        While the disk is full, again and again: copy the WAL into the
        database and empty it (TRUNCATE: its room goes back to the disk),
        fold one step of the log, and accept writes again once the disk has
        room.  A step made is followed at once by the next.
        """
        self._diskRetry = None
        if self._connection is None:
            return
        worker, pool = self._worker, self._pool
        if worker is None or pool is None or not pool.started:
            self._foldWhileFull()
            return
        self._diskRetry = self._inWorker(worker.execute, "PRAGMA wal_checkpoint(TRUNCATE)")
        self._diskRetry.addCallbacks(lambda _: self._foldWhileFull(), self._checkpointFailedWhileFull)

    def _checkpointFailedWhileFull(self, failure: Failure) -> None:
        # Folding now would only grow the WAL: try again later.
        self._diskRetry = None
        if not isDiskFull(failure.value):
            log.failure("kv store: checkpoint failed", failure)
        self._retryDiskLater(self.diskRetryInterval)

    def _foldWhileFull(self) -> None:
        self._diskRetry = None
        if self._connection is None:
            return
        if self._foreign or self._unfolded:
            if not self.fold():
                self._retryDiskLater(self.diskRetryInterval)
                return
            self._cancelFold()
            if self._foreign:  # more of the log to fold: the next step after the next checkpoint
                self._retryDiskLater(0)
                return
        try:
            room = self.path == MEMORY or freeBytes(self.path) >= self.diskHeadroom
        except OSError:
            room = False
        if not room:
            self._retryDiskLater(self.diskRetryInterval)
            return
        self.refusingWrites = self.syncFailed
        if self.diskFull:
            self.diskFull = False
            log.info("kv store: the disk holding {path} has room again; writes are accepted", path=self.path)

    def _retryDiskLater(self, delay: float) -> None:
        if self._diskRetry is None and self._connection is not None and self.diskFull:
            self._diskRetry = self.reactor.callLater(delay, self._retryDisk)

    def _stopDiskRetry(self) -> None:
        retry, self._diskRetry = self._diskRetry, None
        if retry is not None and hasattr(retry, "active") and retry.active():
            retry.cancel()

    def _maybeCheckpoint(self) -> None:
        # Not while opening: open() checkpoints in its own thread before the worker starts.
        if self._walPages > self.checkpointPages and not self._checkpointing and self._pool is not None:
            self._checkpoint()

    def _sync(self) -> None:
        """One fsync of the WAL for every transaction committed since the last one."""
        batches, self._unsynced = self._unsynced, []
        self._syncing = True

        def synced(result: Any) -> None:
            self.syncs += 1
            self._syncing = False
            for batch in batches:
                self._committed(batch, True)
            if self._unsynced:
                self._sync()

        def failed(failure: Any) -> None:
            self._syncing = False
            self._syncFailed(failure)
            for batch in batches + self._unsynced:  # those waiting for the next sync too
                self._committed(batch, False, failure)
            self._unsynced = []

        self._inWorker(os.fsync, self._walFD).addCallbacks(synced, failed)

    def _syncFailed(self, failure: Any) -> None:
        self.refusingWrites = True
        if not self.syncFailed:
            self.syncFailed = True
            log.critical(
                "kv store: syncing {path} failed ({error}); refusing writes until the server is restarted",
                path=self.path,
                error=failure.getErrorMessage(),
            )

    def _checkpoint(self) -> None:
        if self._worker is None:
            return
        self._checkpointing = True
        self._walPages = 0

        def done(result: Any) -> None:
            self._checkpointing = False
            if isinstance(result, Failure):
                if isDiskFull(result.value):
                    self._diskIsFull("checkpointing", result.value)
                else:
                    log.failure("kv store: checkpoint failed", result)

        self._inWorker(self._worker.execute, "PRAGMA wal_checkpoint(PASSIVE)").addBoth(done)

    # -- other writers ----------------------------------------------------------------

    def _afterCommit(self, batch: list[Any]) -> None:
        if self._sinceReload is not None:
            for op, key, value, _ in batch:
                self._sinceReload.append((key, None if op == _DELETE_OP else value))

    def _pollOthers(self) -> None:
        if self._connection is None:
            return
        version = self._version()  # our own commits do not change it; other processes' do
        if version != self._dataVersion:
            self._dataVersion = version
            self._foreign = True
            self._reload()

    def _reload(self) -> None:
        worker = self._worker
        if worker is None:
            return
        log.info("kv store: {path} was changed by another process; reloading", path=self.path)
        self._sinceReload = []

        def readAll() -> list[tuple[bytes, bytes]]:
            return list(readSnapshot(worker).items())

        def loaded(rows: Any) -> None:
            replay, self._sinceReload = self._sinceReload or [], None
            self._load(rows)
            # Our commits since the reload began may be missing from its snapshot.
            for key, value in replay:
                self._apply(self._data, self._sorted, key, value)

        def failed(failure: Any) -> None:
            self._sinceReload = None
            log.failure("kv store: reload failed", failure)

        self._inWorker(readAll).addCallbacks(loaded, failed)

    def stats(self) -> dict[str, int]:
        return dict(GroupCommitStore.stats(self), syncs=self.syncs, folds=self.folds)

