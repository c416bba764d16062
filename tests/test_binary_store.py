"""The SQLite store with a real reactor: commits, fsync grouping, checkpoints, other writers."""

import sqlite3
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from sockproto.binary.codec import Code, Op
from sockproto.binary.store import SQLiteStore


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
        rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM kv").fetchone()[0]
        self.assertEqual(rows, 299)

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
