# -*- test-case-name: tests.test_chat,tests.test_chat_cluster,tests.test_chat_crowd -*-
"""Chat history: recent messages per room in memory, persisted to SQLite in batches.

Replay (joining a room, ``/history``) is served from memory.  Writes are
collected and committed together from one database thread, so a burst of
messages is a handful of transactions, and the reactor never waits on disk.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import deque
from typing import Any, NamedTuple, Protocol

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sockproto.chat.text import counted
from sockproto.server.files import createOwnerOnly

log = Logger()

MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    room TEXT NOT NULL,
    time REAL NOT NULL,
    nick TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_room ON messages (room, id);
CREATE TABLE IF NOT EXISTS room_states (
    room TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
"""


#: A guest's name (any case), with a number a server could have given (not the 19 digits a nick can hold).
_GUEST = re.compile(r"guest([0-9]{1,9})")


def highestGuestNumber(nicks: Any) -> int:
    """The highest N of the ``guestN`` names among ``nicks`` (0 if none)."""
    highest = 0
    for nick in nicks:
        match = _GUEST.fullmatch(nick.lower())
        if match:
            highest = max(highest, int(match[1]))
    return highest


class Entry(NamedTuple):
    """One message of a room's history: when, who, what, and whether it was an action (/me)."""

    time: float
    nick: str
    kind: str  # "say" or "me"
    text: str


class History:
    """
    Recent messages of every room.

    ``path`` is an SQLite file, or ``:memory:`` to keep nothing across
    restarts.  ``keep`` messages per room are held in memory.
    """

    def __init__(self, path: str, clock: IReactorTime, keep: int = 500, writeDelay: float = 0.05) -> None:
        self.path = path
        self.clock = clock
        self.keep = keep
        self.writeDelay = writeDelay
        self._rooms: dict[str, deque[Entry]] = {}
        self._pending: list[tuple[str, float, str, str, str]] = []
        #: Rooms' states to write (JSON), or None to forget one.
        self._pendingRooms: dict[str, str | None] = {}
        #: The rooms' states read at startup (room -> the JSON object stored).
        self.roomStates: dict[str, Any] = {}
        self._writeCall: Any = None
        self._writing: defer.Deferred[Any] | None = None
        self._pool: adbapi.ConnectionPool | None = None
        self.batchesWritten = 0

    @property
    def persistent(self) -> bool:
        return self.path != MEMORY

    def open(self) -> None:
        """Create the schema and load recent messages (at startup, before serving)."""
        if not self.persistent:
            return
        createOwnerOnly(self.path)
        connection = sqlite3.connect(self.path)
        try:
            connection.executescript(_SCHEMA)
            connection.execute("PRAGMA journal_mode=WAL")
            rooms = [row[0] for row in connection.execute("SELECT DISTINCT room FROM messages")]
            for room in rooms:
                rows = connection.execute(
                    "SELECT time, nick, kind, text FROM messages WHERE room = ? ORDER BY id DESC LIMIT ?",
                    (room, self.keep),
                ).fetchall()
                self._rooms[room] = deque((Entry(*row) for row in reversed(rows)), maxlen=self.keep)
            for room, state in connection.execute("SELECT room, state FROM room_states"):
                try:
                    self.roomStates[room] = json.loads(state)
                except ValueError:
                    log.warn("chat history: the stored state of {room} is not JSON: ignored", room=room)
        finally:
            connection.close()
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,  # one writer: SQLite allows no more
            cp_openfun=_tune,
        )

    def record(self, room: str, when: float, nick: str, kind: str, text: str) -> None:
        entries = self._rooms.get(room)
        if entries is None:
            entries = self._rooms[room] = deque(maxlen=self.keep)
        entries.append(Entry(when, nick, kind, text))
        if self._pool is not None:
            self._pending.append((room, when, nick, kind, text))
            if self._writeCall is None and self._writing is None:
                self._writeCall = self.clock.callLater(self.writeDelay, self._write)

    def storeRoom(self, room: str, state: Any) -> None:
        """Keep ``state`` (JSON-ready) as ``room``'s for after a restart; ``None`` forgets the room's."""
        if self._pool is None:
            return
        self._pendingRooms[room] = None if state is None else json.dumps(state, separators=(",", ":"))
        if self._writeCall is None and self._writing is None:
            self._writeCall = self.clock.callLater(self.writeDelay, self._write)

    def highestGuest(self) -> int:
        """The highest guest number among the messages that can be replayed."""
        return highestGuestNumber(entry.nick for entries in self._rooms.values() for entry in entries)

    def recent(self, room: str, count: int) -> list[Entry]:
        entries = self._rooms.get(room)
        if not entries or count <= 0:
            return []
        if count >= len(entries):
            return list(entries)
        return list(entries)[-count:]

    def _write(self) -> None:
        self._writeCall = None
        rows, self._pending = self._pending, []
        rooms, self._pendingRooms = self._pendingRooms, {}
        if not (rows or rooms) or self._pool is None:
            return
        self._writing = self._pool.runInteraction(_insert, rows, rooms)

        def written(result: Any) -> None:
            self.batchesWritten += 1

        def failed(failure: Any) -> None:
            log.failure("chat history: could not store {messages}", failure, messages=counted(len(rows), "message"))

        def next(_: Any) -> None:
            self._writing = None
            if self._pending or self._pendingRooms:
                # Messages that came during this commit go in the next one at once.
                self._write()

        self._writing.addCallbacks(written, failed).addBoth(next)

    @defer.inlineCallbacks
    def close(self) -> Any:
        """Write what is pending and close the database."""
        if self._writeCall is not None and self._writeCall.active():
            self._writeCall.cancel()
            self._writeCall = None
        while self._writing is not None or self._pending or self._pendingRooms:
            if self._writing is not None:
                yield self._writing
            else:
                self._write()
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _tune(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def _insert(cursor: Any, rows: list[tuple[str, float, str, str, str]], rooms: dict[str, str | None]) -> None:
    cursor.executemany("INSERT INTO messages (room, time, nick, kind, text) VALUES (?, ?, ?, ?, ?)", rows)
    forgotten = [(room,) for room, state in rooms.items() if state is None]
    cursor.executemany("DELETE FROM room_states WHERE room = ?", forgotten)
    cursor.executemany(
        "INSERT OR REPLACE INTO room_states (room, state) VALUES (?, ?)",
        [(room, state) for room, state in rooms.items() if state is not None],
    )


# -- a cluster's history -------------------------------------------------------------

#: Messages a room's history may replay (``/history N``, and what a cluster keeps per room).
HISTORY_MAX = 500
#: Rooms whose recent messages a cluster's server keeps; past it, the room heard of longest ago is forgotten.
MAX_HISTORY_ROOMS = 5000


class _Linked(Protocol):
    linked: bool


def streamOrder(streamId: str) -> tuple[int, int]:
    ms, _, seq = streamId.partition("-")
    return int(ms), int(seq or 0)


class ClusterHistory:
    """
    Recent messages of every room, in the order of the rooms' Redis streams.

    The bus fills it: at start (and after a lost link) from the streams, then
    with every message published, this server's included, as it comes back
    from Redis.  A message said while the link is down is kept here only.
    """

    #: The cluster's bus, once it has attached itself (what it says of the link decides what is recorded here).
    bus: _Linked | None = None

    def __init__(self, keep: int = HISTORY_MAX) -> None:
        self.keep = keep
        self._rooms: dict[str, deque[tuple[str, Entry]]] = {}
        self._loading: list[tuple[str, str, Entry]] | None = None

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def record(self, room: str, when: float, nick: str, kind: str, text: str) -> None:
        if self.bus is not None and self.bus.linked:
            return  # it is kept when it comes back from Redis, in the stream's order
        self._append(room, "", Entry(when, nick, kind, text))

    def arrived(self, room: str, streamId: str, entry: Entry) -> None:
        if self._loading is not None:
            self._loading.append((room, streamId, entry))
        self._append(room, streamId, entry)

    def _append(self, room: str, streamId: str, entry: Entry) -> None:
        entries = self._rooms.get(room)
        if entries is None:
            if len(self._rooms) >= MAX_HISTORY_ROOMS:  # room names are many: memory is not
                del self._rooms[next(iter(self._rooms))]
            entries = self._rooms[room] = deque(maxlen=self.keep)
        entries.append((streamId, entry))

    def highestGuest(self) -> int:
        """0: in a cluster, guest numbers come from a counter in Redis."""
        return 0

    def recent(self, room: str, count: int) -> list[Entry]:
        entries = self._rooms.get(room)
        if not entries or count <= 0:
            return []
        return [entry for _, entry in list(entries)[-count:]]

    def startLoading(self) -> None:
        """Messages that arrive while the streams are read are kept aside, to go after them."""
        self._loading = []

    def stopLoading(self) -> None:
        self._loading = None

    def loaded(self, rooms: dict[str, list[tuple[str, Entry]]]) -> None:
        """The streams' recent messages (oldest first), and after them what arrived while they were read."""
        arrivedMeanwhile, self._loading = self._loading or [], None
        self._rooms = {room: deque(entries, maxlen=self.keep) for room, entries in rooms.items()}
        for room, streamId, entry in arrivedMeanwhile:
            entries = self._rooms.get(room)
            if entries and entries[-1][0] and streamOrder(entries[-1][0]) >= streamOrder(streamId):
                continue  # the stream had it
            self._append(room, streamId, entry)
