"""The SQLite store with a real reactor: commits, fsync grouping, checkpoints, other writers."""

import os
import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from sockproto.binary import sqlitestore as store_module
from sockproto.binary.codec import Code, Op
from sockproto.binary.sqlitestore import SQLiteStore, decodeBatch, encodeBatch
from tests.support import fillDisk, smallDisk


class SQLiteStoreTests(unittest.TestCase):
    def openStore(self, path=None, **kwargs):
        path = path or str(Path(self.mktemp()))
        store = SQLiteStore(path, reactor, **kwargs)
        store.open()
        self.addCleanup(store.close)
        return store, path

    @defer.inlineCallbacks
    def test_writesAreCheckedInOrderAndCommittedInGroups(self):
        store, path = self.openStore(fsync="always")
        results = []
        for i in range(300):
            refused = store.write(Op.CREATE, b"k%d" % i, b"v", results.append)
            self.assertIsNone(refused)
        self.assertEqual(store.write(Op.CREATE, b"k1", b"again", results.append), Code.EXISTS)
        self.assertIsNone(store.write(Op.DELETE, b"k1", b"", results.append))
        self.assertEqual(store.write(Op.UPDATE, b"k1", b"x", results.append), Code.NOT_FOUND)
        self.assertIsNone(store.get(b"k0"))  # not committed yet: not visible
        yield store.whenIdle()
        self.assertEqual(results, [None] * 301)
        self.assertEqual(store.get(b"k0"), b"v")
        self.assertIsNone(store.get(b"k1"))
        self.assertLessEqual(store.commits, 3)
        self.assertGreaterEqual(store.syncs, 1)
        self.assertEqual(store.keys(b"k2")[:3], [b"k2", b"k20", b"k200"])
        self.assertEqual(sqlite3.connect(path).execute("SELECT COUNT(*) FROM log").fetchone()[0], store.commits)
        store.fold()
        rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM kv").fetchone()[0]
        self.assertEqual(rows, 299)
        self.assertEqual(sqlite3.connect(path).execute("SELECT COUNT(*) FROM log").fetchone()[0], 0)

    @defer.inlineCallbacks
    def test_inlineSyncAcknowledgesAfterTheSyncInTheReactorThread(self):
        """syncInline (a process serving only stores): one fsync of the WAL per group, before any acknowledgement."""
        import threading

        import sockproto.binary.sqlitestore as storeModule

        store, path = self.openStore(fsync="always", syncInline=True)
        events = []
        realFsync = os.fsync

        def fsync(fd):  # the real sync, noted with the thread it ran in
            realFsync(fd)
            events.append(("sync", threading.current_thread() is threading.main_thread()))

        self.patch(storeModule.os, "fsync", fsync)
        for i in range(50):
            self.assertIsNone(store.write(Op.CREATE, b"k%d" % i, b"v", lambda code: events.append(("ack", code))))
        yield store.whenIdle()
        self.assertEqual(events[0], ("sync", True))
        self.assertEqual(events[1:], [("ack", None)] * 50)
        self.assertEqual((store.commits, store.syncs), (1, 1))
        self.assertEqual(store.get(b"k49"), b"v")

    @defer.inlineCallbacks
    def failOneSync(self, **kwargs):
        """A store whose first sync fails (a disk error): its group's write gets SERVER_ERROR, once logged."""
        import sockproto.binary.sqlitestore as storeModule

        store, path = self.openStore(fsync="always", **kwargs)
        realFsync = os.fsync

        def failingFsync(fd):
            raise OSError(5, "Input/output error")

        self.patch(storeModule.os, "fsync", failingFsync)
        codes = []
        store.write(Op.CREATE, b"lost", b"v", codes.append)
        yield store.whenIdle()
        self.assertEqual(codes, [Code.SERVER_ERROR])
        self.assertIsNone(store.get(b"lost"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.patch(storeModule.os, "fsync", realFsync)
        return store, path

    @defer.inlineCallbacks
    def test_aFailedInlineSyncFailsItsGroupAndTheStoreGoesOn(self):
        """A failed fsync (a disk error): its group gets SERVER_ERROR, and writes are refused until a restart."""
        store, path = yield self.failOneSync(syncInline=True)
        # What reached the disk is uncertain now: writes are refused until a restart.
        self.assertEqual(store.write(Op.CREATE, b"later", b"v", lambda code: None), Code.SERVER_ERROR)
        self.assertTrue(store.refusingWrites)
        yield store.close()
        again, _ = self.openStore(path, fsync="always", syncInline=True)
        codes = []
        self.assertIsNone(again.write(Op.CREATE, b"later", b"v", codes.append))
        yield again.whenIdle()
        self.assertEqual((codes, again.get(b"later")), ([None], b"v"))

    @defer.inlineCallbacks
    def test_aFailedSyncInTheWorkerThreadRefusesWritesToo(self):
        store, _ = yield self.failOneSync()
        self.assertEqual(store.stats()["refusing_writes"], 1)
        self.assertEqual(store.write(Op.CREATE, b"later", b"v", lambda code: None), Code.SERVER_ERROR)

    def test_whoSyncsInline(self):
        """Standalone binary or crud, or a suite of only them: inline; a suite with others: the worker thread."""
        from sockproto.binary import service as binaryService
        from sockproto.suite import service as suiteService

        db = str(Path(self.mktemp()).resolve())
        options = binaryService.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--db", db, "--fsync", "always"])
        top = binaryService.buildService(options, reactor)
        [registry] = [s for s in top if isinstance(s, binaryService.StoreRegistry)]
        [(store, _)] = registry.stores.values()
        self.addCleanup(store.close)
        self.assertTrue(store.syncInline)

        def onlyStores(text):
            path = Path(self.mktemp())
            path.write_text(text)
            options = suiteService.Options()
            options.parseOptions(["--config", str(path)])
            return suiteService.servesOnlyStores(options["loaded"])

        kv = '[binary]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
        crud = '[crud]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
        echo = '[echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
        self.assertTrue(onlyStores(kv + crud))
        self.assertTrue(onlyStores(kv))
        self.assertFalse(onlyStores(kv + echo))

    @defer.inlineCallbacks
    def test_checkpointKeepsData(self):
        store, path = self.openStore()
        store.checkpointPages = 50
        for i in range(500):
            store.write(Op.CREATE, b"key%d" % i, b"x" * 100, lambda code: None)
            if i % 50 == 0:
                yield task.deferLater(reactor, 0, lambda: None)
        yield store.whenIdle()
        yield store.close()
        again, _ = self.openStore(path)
        self.assertEqual(len(again), 500)

    @defer.inlineCallbacks
    def test_anotherProcessWritingIsSeen(self):
        store, path = self.openStore(pollInterval=0.05)
        store.write(Op.CREATE, b"mine", b"1", lambda code: None)
        yield store.whenIdle()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("INSERT INTO kv VALUES (?, ?)", (b"theirs", b"2"))
        other.close()
        for _ in range(100):
            if store.get(b"theirs") is not None:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(store.get(b"theirs"), b"2")
        self.assertEqual(store.get(b"mine"), b"1")

    @defer.inlineCallbacks
    def test_theLogIsReplayedAfterACrashAndFoldedAtOpen(self):
        store, path = self.openStore()
        store.foldInterval = 3600
        for i in range(50):
            store.write(Op.CREATE, b"k%d" % i, b"v%d" % i, lambda code: None)
        yield store.whenIdle()
        store.write(Op.UPDATE, b"k1", b"new", lambda code: None)
        store.write(Op.DELETE, b"k2", b"", lambda code: None)
        yield store.whenIdle()
        # A copy of the files as a kill -9 would leave them: the groups are
        # in the log (in the WAL), nothing is folded into kv yet.
        crashed = str(Path(self.mktemp()))
        for suffix in ("", "-wal"):
            Path(crashed + suffix).write_bytes(Path(path + suffix).read_bytes())
        raw = sqlite3.connect(crashed)
        self.assertEqual(raw.execute("SELECT COUNT(*) FROM kv").fetchone()[0], 0)
        self.assertEqual(raw.execute("SELECT COUNT(*) FROM log").fetchone()[0], 2)
        raw.close()
        again, _ = self.openStore(crashed)
        self.assertEqual(
            (len(again), again.get(b"k1"), again.get(b"k2"), again.get(b"k49")), (49, b"new", None, b"v49")
        )
        raw = sqlite3.connect(crashed)
        self.assertEqual(raw.execute("SELECT COUNT(*) FROM log").fetchone()[0], 0, "folded at open")
        self.assertEqual(raw.execute("SELECT value FROM kv WHERE key = ?", (b"k1",)).fetchone()[0], b"new")

    @defer.inlineCallbacks
    def test_twoWritersFoldInCommitOrder(self):
        # Two stores on one file stand for two processes: whichever folds,
        # kv ends with the last committed value of each key.
        first, path = self.openStore(pollInterval=0)
        second, _ = self.openStore(path, pollInterval=0)
        for store in (first, second):
            store.foldInterval = 3600
        first.write(Op.CREATE, b"k", b"from first", lambda code: None)
        yield first.whenIdle()
        second._data[b"k"] = b"from first"  # what its reload would have seen
        second.write(Op.UPDATE, b"k", b"from second", lambda code: None)
        yield second.whenIdle()
        second.fold()
        first.write(Op.CREATE, b"other", b"x", lambda code: None)
        yield first.whenIdle()
        first.fold()  # must not put back its own older k: someone else wrote, so it folds from the log
        raw = sqlite3.connect(path)
        self.assertEqual(raw.execute("SELECT value FROM kv WHERE key = ?", (b"k",)).fetchone()[0], b"from second")
        self.assertEqual(raw.execute("SELECT value FROM kv WHERE key = ?", (b"other",)).fetchone()[0], b"x")
        self.assertEqual(raw.execute("SELECT COUNT(*) FROM log").fetchone()[0], 0)


    @defer.inlineCallbacks
    def test_newDatabasesAreOwnerOnly(self):
        from twisted.internet.task import Clock

        from sockproto.chat.history import History

        old = os.umask(0o022)
        try:
            store, path = self.openStore()
            store.write(Op.CREATE, b"k", b"secret", lambda code: None)
            yield store.whenIdle()
            history = History(str(Path(self.mktemp())), Clock())
            history.open()
            self.addCleanup(history.close)
        finally:
            os.umask(old)
        for name in (path, path + "-wal", history.path):
            self.assertEqual(os.stat(name).st_mode & 0o777, 0o600, name)
        existing = Path(self.mktemp())
        existing.touch(mode=0o640)
        existing.chmod(0o640)
        kept, _ = self.openStore(str(existing))
        self.assertEqual(existing.stat().st_mode & 0o777, 0o640, "an existing file keeps its mode")


class PendingStateTests(unittest.TestCase):
    """What writes are checked against while earlier ones are not committed (MemoryStore: the same bookkeeping)."""

    def test_writesAcceptedWhileAcknowledgingAreCheckedAgainstTheGroupBefore(self):
        from sockproto.binary.store import MemoryStore

        clock = task.Clock()
        store = MemoryStore(clock)
        codes = []

        def first(code):
            codes.append(("create a", code))
            # Inside an acknowledgement (a connection's next request, read at once):
            codes.append(("update a", store.write(Op.UPDATE, b"a", b"2", lambda c: codes.append(("updated a", c)))))
            codes.append(("create b again", store.write(Op.CREATE, b"b", b"x", codes.append)))

        self.assertIsNone(store.write(Op.CREATE, b"a", b"1", first))
        self.assertIsNone(store.write(Op.CREATE, b"b", b"1", lambda c: codes.append(("create b", c))))
        self.assertIsNone(store.write(Op.DELETE, b"b", b"", lambda c: codes.append(("delete b", c))))
        for _ in range(4):
            clock.advance(0)
        self.assertEqual(
            codes,
            [
                ("create a", None),
                ("update a", None),
                # b's create and delete were accepted before it, not yet applied: b does not exist.
                ("create b again", None),
                ("create b", None),
                ("delete b", None),
                ("updated a", None),
                None,  # b created again
            ],
        )
        self.assertEqual((store.get(b"a"), store.get(b"b")), (b"2", b"x"))
        self.assertEqual(store._pending, {})
        self.assertEqual(store.write(Op.CREATE, b"b", b"3", codes.append), Code.EXISTS)


class BatchCodecTests(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(st.binary(min_size=1, max_size=50), st.one_of(st.none(), st.binary(max_size=200))))
    def test_roundTrip(self, final):
        """Any batch of puts and deletes decodes to what was encoded."""
        decoded = dict(decodeBatch(encodeBatch(final)))
        self.assertEqual(decoded, final)


class FoldFailureTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_aFailedFoldLosesNothingAndIsRetried(self):
        path = str(Path(self.mktemp()))
        store = SQLiteStore(path, reactor, pollInterval=0)
        store.open()
        self.addCleanup(store.close)
        store.foldInterval = 0.01
        real = store._connection

        class Failing:
            """The connection, except that the next fold cannot take the write lock."""

            def __getattr__(self, name):
                return getattr(real, name)

            def execute(self, sql, *args):
                if sql == "BEGIN IMMEDIATE":
                    store._connection = real
                    raise sqlite3.OperationalError("database is locked")
                return real.execute(sql, *args)

        store.write(Op.CREATE, b"k", b"v", lambda code: None)
        yield store.whenIdle()
        store._connection = Failing()
        store.fold()
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        self.assertEqual(real.execute("SELECT COUNT(*) FROM log").fetchone()[0], 1, "still in the log")
        for _ in range(100):
            if store.folds >= 2:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(real.execute("SELECT value FROM kv").fetchall(), [(b"v",)], "folded on the retry")
        self.assertEqual(real.execute("SELECT COUNT(*) FROM log").fetchone()[0], 0)


def copyImage(source, target):
    """The database files as a kill -9 or a power loss leaves them: the file and its WAL (no -shm)."""
    for suffix in ("", "-wal"):
        if Path(source + suffix).exists():
            Path(target + suffix).write_bytes(Path(source + suffix).read_bytes())


class CrashImageTests(unittest.TestCase):
    """
    Each state a crash can leave a database in opens, recovers and serves
    every committed write with its last committed value.
    """

    def openStore(self, path, **kwargs):
        store = SQLiteStore(path, reactor, pollInterval=0, **kwargs)
        store.open()
        self.addCleanup(store.close)
        return store

    @defer.inlineCallbacks
    def writeMany(self, store, count, expected, tag=b"v"):
        for i in range(count):
            key = b"k%05d" % (i % 4000)
            op = Op.UPDATE if key in expected else Op.CREATE
            self.assertIsNone(store.write(op, key, tag + b"%d" % i, lambda code: self.assertIsNone(code)))
            expected[key] = tag + b"%d" % i
            if i % 500 == 499:
                yield store.whenIdle()
        self.assertIsNone(store.write(Op.DELETE, b"k00003", b"", lambda code: self.assertIsNone(code)))
        del expected[b"k00003"]
        yield store.whenIdle()

    def assertServes(self, path, expected):
        store = self.openStore(path)
        self.assertEqual(len(store), len(expected))
        self.assertEqual({k: store.get(k) for k in expected}, expected)
        raw = sqlite3.connect(path)
        self.addCleanup(raw.close)
        self.assertEqual(raw.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        self.assertEqual(raw.execute("SELECT COUNT(*) FROM log").fetchone()[0], 0, "the log was folded at open")
        return store

    @defer.inlineCallbacks
    def test_unfoldedLogRowsBeyondTheCheckpointThreshold(self):
        """
        A kill -9 before the fold of many keys: opening folds them and must
        checkpoint before the worker thread runs (it used to fail on an
        assertion, so the service could not start again).
        """
        path = str(Path(self.mktemp()))
        store = self.openStore(path)
        store.foldInterval, store.foldKeys = 3600, 10**9
        expected = {}
        yield self.writeMany(store, 6000, expected)
        crashed = str(Path(self.mktemp()))
        copyImage(path, crashed)
        raw = sqlite3.connect(crashed)
        self.assertEqual(raw.execute("SELECT COUNT(*) FROM kv").fetchone()[0], 0)
        self.assertGreater(raw.execute("SELECT COUNT(*) FROM log").fetchone()[0], 1)
        raw.close()
        again = self.assertServes(crashed, expected)
        self.assertEqual(Path(crashed + "-wal").stat().st_size, 0, "checkpointed and truncated at open")
        # ...and it goes on working: a write after the recovery is committed.
        done = []
        again.write(Op.CREATE, b"after", b"recovery", done.append)
        yield again.whenIdle()
        self.assertEqual(done, [None])

    @defer.inlineCallbacks
    def storeWithUnfoldedWrites(self):
        """A store that folds and checkpoints only when told, with 3000 writes in its log."""
        path = str(Path(self.mktemp()))
        store = self.openStore(path)
        store.foldInterval, store.foldKeys, store.checkpointPages = 3600, 10**9, 10**9
        expected = {}
        yield self.writeMany(store, 3000, expected)
        return store, path, expected

    @defer.inlineCallbacks
    def test_aFoldCutShort(self):
        """The fold's transaction is only partly in the WAL: it is rolled back and the log replayed."""
        store, path, expected = yield self.storeWithUnfoldedWrites()
        before = str(Path(self.mktemp()))
        copyImage(path, before)
        self.assertTrue(store.fold())
        walBefore = Path(before + "-wal").read_bytes()
        walAfter = Path(path + "-wal").read_bytes()
        self.assertGreater(len(walAfter), len(walBefore))
        self.assertEqual(walAfter[: len(walBefore)], walBefore, "the fold only appends to the WAL")
        for fraction in (0.1, 0.5, 0.99):
            cut = len(walBefore) + int((len(walAfter) - len(walBefore)) * fraction)
            crashed = str(Path(self.mktemp()))
            copyImage(before, crashed)
            Path(crashed + "-wal").write_bytes(walAfter[:cut])
            self.assertServes(crashed, expected)

    @defer.inlineCallbacks
    def test_aCheckpointCutShort(self):
        """Some pages are copied into the database file, the WAL still whole: SQLite replays it."""
        store, path, expected = yield self.storeWithUnfoldedWrites()
        self.assertTrue(store.fold())
        yield self.writeMany(store, 1000, expected, tag=b"later")  # and some log rows on top
        before = str(Path(self.mktemp()))
        copyImage(path, before)
        other = sqlite3.connect(path)
        self.assertEqual(other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0], 0)
        other.close()
        dbBefore = Path(before).read_bytes()
        dbAfter = Path(path).read_bytes()
        self.assertNotEqual(dbBefore, dbAfter)
        pages = len(dbAfter) // 4096
        for copied in (1, pages // 2, pages - 1):
            crashed = str(Path(self.mktemp()))
            copyImage(before, crashed)
            Path(crashed).write_bytes(dbAfter[: copied * 4096] + dbBefore[copied * 4096 :])
            self.assertServes(crashed, expected)


class OpenErrorTests(unittest.TestCase):
    def test_aDatabaseThatCannotBeOpenedSaysWhyAndWhatToDo(self):
        from sockproto.server.files import explainDatabaseError

        path = Path(self.mktemp())
        path.write_bytes(b"not a database at all" * 100)
        store = SQLiteStore(str(path), reactor, pollInterval=0)
        with self.assertRaises(sqlite3.DatabaseError) as caught:
            store.open()
        text = explainDatabaseError(caught.exception)
        self.assertIn("file is not a database", text)
        self.assertIn("restore it from a backup", text)
        self.assertIsNone(store._connection, "nothing is left open")
        self.assertEqual(explainDatabaseError(AssertionError()), "AssertionError while opening it")


class ClosedStoreTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_aWriteAfterCloseFailsWithoutLosingTheProcess(self):
        """A write that reaches a closed store is answered SERVER_ERROR, with the reason logged."""
        from sockproto.binary.store import StoreError

        store = SQLiteStore(str(Path(self.mktemp())), reactor, pollInterval=0)
        store.open()
        yield store.close()
        done = []
        self.assertIsNone(store.write(Op.CREATE, b"k", b"v", done.append))
        yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(done, [Code.SERVER_ERROR])
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)

    def test_explanationsForTheUsualCauses(self):
        from sockproto.server.files import explainDatabaseError

        self.assertIn("may read and write them", explainDatabaseError(PermissionError(13, "Permission denied")))
        self.assertIn("another process holds it", explainDatabaseError(sqlite3.OperationalError("database is locked")))
        self.assertEqual(explainDatabaseError(ValueError("odd")), "odd")


def diskFullError():
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = sqlite3.SQLITE_FULL
    return error


class FullDiskLogicTests(unittest.TestCase):
    """A full disk, reactor-free: writes refused with a clear reason, said once per episode, retried, recovered."""

    def setUp(self):
        from twisted.internet.testing import MemoryReactorClock
        from twisted.logger import globalLogPublisher

        self.clock = MemoryReactorClock()
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)
        self.free = 0
        self.patch(store_module, "freeBytes", lambda path: self.free)
        self.store = SQLiteStore(str(Path(self.mktemp())), self.clock, pollInterval=0)
        self.store.open()
        self.addCleanup(self.store._closeConnections)
        self.real = self.store._connection

    def said(self, fragment):
        return [e for e in self.logged if fragment in e.get("log_format", "")]

    def fillTheDisk(self):
        real = self.real

        class Full:
            def __getattr__(self, name):
                return getattr(real, name)

            def execute(self, sql, *args):
                if sql.startswith(("INSERT", "DELETE")):
                    raise diskFullError()
                return real.execute(sql, *args)

            def executemany(self, sql, *args):
                raise diskFullError()

        self.store._connection = Full()

    def test_oneLinePerEpisodeAndRecovery(self):
        store, clock = self.store, self.clock
        results = []
        store.write(Op.CREATE, b"kept", b"v", results.append)
        clock.advance(0)
        self.assertEqual(results, [None])
        self.fillTheDisk()
        for episode in range(2):
            for turn in range(50):  # 50 turns of writes, and retries, while the disk is full
                for i in range(3):
                    refused = store.write(Op.CREATE, b"k%d-%d-%d" % (episode, turn, i), b"v", results.append)
                    if refused is not None:
                        results.append(refused)
                clock.advance(0.1)
            self.assertEqual(results[-1], Code.SERVER_ERROR)
            self.assertEqual(set(results[1:]), {Code.SERVER_ERROR})
            self.assertIn("disk is full", store.writeProblem)
            self.assertEqual(store.stats()["disk_full"], 1)
            self.assertEqual(store.get(b"kept"), b"v", "reads go on")
            self.assertEqual(len(self.said("is full")), episode + 1, "said once per episode")
            self.assertEqual(self.flushLoggedErrors(), [], "no tracebacks")
            # Room again: the connection writes, and the free space is past the headroom.
            store._connection = self.real
            clock.advance(store.diskRetryInterval)
            self.assertTrue(store.diskFull, "no headroom yet")
            self.free = store.diskHeadroom
            clock.advance(store.diskRetryInterval)
            self.assertFalse(store.diskFull)
            self.assertIsNone(store.writeProblem)
            self.assertEqual(len(self.said("has room again")), episode + 1)
            del results[1:]
            store.write(Op.CREATE, b"after%d" % episode, b"v", results.append)
            clock.advance(0)
            self.assertEqual(results, [None, None])
            del results[1:]
            self.free = 0
            self.fillTheDisk()
        self.assertEqual(store.diskFullEpisodes, 2)

    def test_aFullDiskWhileFoldingIsTheSameEpisode(self):
        store, clock = self.store, self.clock
        store.write(Op.CREATE, b"a", b"1", lambda code: None)
        clock.advance(0)
        self.fillTheDisk()
        for _ in range(20):
            self.assertFalse(store.fold())
            clock.advance(store.diskRetryInterval)
        self.assertEqual(len(self.said("is full")), 1)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.real.execute("SELECT COUNT(*) FROM log").fetchone()[0], 1, "nothing lost")
        store._connection = self.real
        self.free = store.diskHeadroom
        clock.advance(store.diskRetryInterval)
        self.assertFalse(store.diskFull)
        self.assertEqual(self.real.execute("SELECT value FROM kv").fetchall(), [(b"1",)])


class BoundedFoldTests(unittest.TestCase):
    def test_theLogIsFoldedInStepsOfBoundedSize(self):
        """A log of many rows is folded a step at a time at open, each step's WAL emptied, the result exact."""
        from twisted.internet.testing import MemoryReactorClock

        path = str(Path(self.mktemp()))
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
        raw.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, batch BLOB NOT NULL)")
        raw.execute("INSERT INTO kv VALUES (?, ?)", (b"old", b"gone soon"))
        expected = {b"old": b"gone soon"}
        for row in range(200):  # 200 groups of 10 keys, 1 KB values, keys written again and deleted
            final = {}
            for i in range(10):
                key = b"k%d" % ((row * 7 + i) % 300)
                final[key] = None if (row + i) % 13 == 0 else os.urandom(500).hex().encode()
            if row == 150:
                final[b"old"] = None
            raw.execute("INSERT INTO log (batch) VALUES (?)", (encodeBatch(final),))
            for key, value in final.items():
                if value is None:
                    expected.pop(key, None)
                else:
                    expected[key] = value
        raw.close()
        walSizes = []
        real = sqlite3.Connection.execute

        store = SQLiteStore(path, MemoryReactorClock(), pollInterval=0)
        store.foldStepBytes = 64 << 10
        original = store._foldAtStart

        def watching(worker):
            class Watch:
                def execute(self, sql, *args):
                    walSizes.append(os.path.getsize(path + "-wal"))  # what the step wrote to it
                    return real(worker, sql, *args)

            return original(Watch())

        store._foldAtStart = watching
        store.open()
        self.addCleanup(store._closeConnections)
        self.assertEqual(dict(store._data), expected)
        self.assertGreaterEqual(store.folds, 2 * 1024 * 200 // (64 << 10))  # about 2 MB of log in 64 KB steps
        self.assertEqual(len(walSizes), store.folds + 1)  # before the first step and after each
        # Each step's WAL: about its share of the log, its kv pages and the log pages freed
        # (folded at once, the 2 MB of log took over 4 MB of WAL).
        self.assertLess(max(walSizes), 512 << 10)
        self.assertEqual(os.path.getsize(path + "-wal"), 0)
        check = sqlite3.connect(path)
        self.assertEqual(dict(check.execute("SELECT key, value FROM kv")), expected)
        self.assertEqual(check.execute("SELECT COUNT(*) FROM log").fetchone()[0], 0)


class CloseFoldsEverythingTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_closeFoldsTheWholeLogStepByStep(self):
        path = str(Path(self.mktemp()))
        store = SQLiteStore(path, reactor, pollInterval=0)
        store.open()
        store.foldInterval = 3600
        for i in range(20):
            store.write(Op.CREATE, b"k%d" % i, b"v%d" % i, lambda code: None)
            yield store.whenIdle()  # a log row each
        store.foldStepBytes = 1  # a row a step
        store._foreign = True  # as after a failed fold: from the log itself
        yield store.close()
        raw = sqlite3.connect(path)
        self.assertEqual(raw.execute("SELECT COUNT(*) FROM log").fetchone()[0], 0)
        self.assertEqual(raw.execute("SELECT COUNT(*) FROM kv").fetchone()[0], 20)
        self.assertGreaterEqual(store.folds, 20)


class RealFullDiskTests(unittest.TestCase):
    """A real small file system: a tmpfs of 2 MB (mounting needs root; skipped otherwise)."""

    def smallDisk(self):
        directory = smallDisk(self)
        (directory / "filler").write_bytes(b"\0" * (256 << 10))  # room to give back later
        return directory

    def newStore(self, path):
        store = SQLiteStore(path, reactor, pollInterval=0)
        # The log is not folded while it fills (as when each fold found too little room);
        # the WAL is checkpointed often, so most of it is in the database file.
        store.foldInterval = 3600
        store.foldKeys = 10**9
        store.checkpointPages = 64
        store.foldStepBytes = 32 << 10
        store.diskHeadroom = 128 << 10
        store.diskRetryInterval = 0.01
        return store

    @defer.inlineCallbacks
    def waitFor(self, condition, state=lambda: None):
        for _ in range(1000):
            if condition():
                return
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.fail(f"timed out: {state()}")

    @defer.inlineCallbacks
    def test_fillKillRestartRecover(self):
        from twisted.logger import globalLogPublisher

        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        disk = self.smallDisk()
        store = self.newStore(str(disk / "kv.sqlite3"))
        store.open()
        self.addCleanup(store.close)
        acked = {}
        for i in range(5000):
            results = []
            # (Values that fit in a page of the kv table, as they do in the log: a larger one takes
            # overflow pages there, and a disk full of them could not hold them folded at all.)
            key, value = b"k%d" % i, os.urandom(800)
            refused = store.write(Op.CREATE, key, value, results.append)
            if refused is not None:  # (the disk was found full by a checkpoint)
                results.append(refused)
            yield store.whenIdle()
            if results != [None]:
                break
            acked[key] = value
            if i % 16 == 15:
                # A checkpoint that keeps up (under a steady stream of writes it may not: the WAL
                # then holds most of the data, which cannot be copied into a disk this full).
                try:
                    yield store._inWorker(store._worker.execute, "PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.OperationalError:
                    pass
        self.assertEqual(results, [Code.SERVER_ERROR], "the disk filled")
        self.assertGreater(len(acked), 1000)
        self.assertIn("disk is full", store.writeProblem)
        self.assertEqual(store.write(Op.CREATE, b"more", b"v", results.append), Code.SERVER_ERROR)
        self.assertTrue(all(store.get(key) == value for key, value in acked.items()), "reads go on")

        # Killed: its files as they are, on a disk as full as this one; it starts, serves, refuses writes.
        second = self.smallDisk()
        copyImage(str(disk / "kv.sqlite3"), str(second / "kv.sqlite3"))
        # (A kill leaves the -shm too; without it, SQLite needs 32 KB to make one.)
        Path(second / "kv.sqlite3-shm").write_bytes((disk / "kv.sqlite3-shm").read_bytes())
        fillDisk(second)  # as full as the first
        restarted = self.newStore(str(second / "kv.sqlite3"))
        restarted.open()
        self.addCleanup(restarted.close)
        self.assertEqual(dict(restarted._data), acked, "every acknowledged write, after the start")
        self.assertTrue(restarted.diskFull)
        self.assertEqual(restarted.write(Op.CREATE, b"new", b"v", results.append), Code.SERVER_ERROR)
        # Room comes back: the rest of the log is folded, and writes are accepted again by themselves.
        (second / "fill").unlink()
        (second / "filler").unlink()
        yield self.waitFor(lambda: not restarted.diskFull, lambda: (
            restarted._foreign, restarted._diskRetry, store_module.freeBytes(restarted.path), logged[-3:]))
        results = []
        restarted.write(Op.CREATE, b"new", b"v", results.append)
        yield restarted.whenIdle()
        self.assertEqual(results, [None])
        check = sqlite3.connect(str(second / "kv.sqlite3"))
        self.assertEqual(check.execute("SELECT COUNT(*) FROM log").fetchone()[0], 1, "folded but the new write")
        check.close()
        full = [e for e in logged if "is full" in e.get("log_format", "")]
        self.assertEqual(len(full), 2, "once per store and episode")
        self.assertEqual(len([e for e in logged if "has room again" in e.get("log_format", "")]), 1)
        self.assertEqual(self.flushLoggedErrors(), [], "no tracebacks")
