# -*- test-case-name: tests.test_binary,tests.test_listen,tests.test_shutdown -*-
"""The text twin of SPB/1: ``twistd -n sockproto-crud``, the seeds' CRUD server over the same store.

Lines ``create KEY VALUE``, ``read KEY``, ``update KEY VALUE``, ``delete KEY``,
``list [PREFIX]``, ``help``, ``quit``; replies ``OK ...`` or ``ERR <reason>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet.interfaces import IReactorTime

from sockproto.binary.codec import MAX_KEY, Code, Op
from sockproto.binary.replies import OrderedReplies, StoreFactory
from sockproto.binary.service import StoreRegistry, StoreServerOptions, makeStoreService
from sockproto.interfaces import IKeyValueStore, ILocalKeyValueStore, IServerReactor
from sockproto.server.connections import RequestReplyProtocol
from sockproto.server.lifecycle import standalone
from sockproto.server.lines import LineServerProtocol
from sockproto.server.options import positiveInt

HELP = (
    "OK commands: create KEY VALUE | read KEY | update KEY VALUE | delete KEY | "
    "list [PREFIX] | help | quit\n"
)
_REASONS: dict[int, str] = {
    Code.NOT_FOUND: "not found",
    Code.EXISTS: "exists",
    Code.SERVER_ERROR: "could not be stored",
}
_WRITE_OPS = {"create": Op.CREATE, "update": Op.UPDATE, "delete": Op.DELETE}


def showValue(value: bytes) -> str:
    """A stored value on one line: UTF-8 text as is, anything else escaped."""
    text = value.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


class CrudProtocol(RequestReplyProtocol, LineServerProtocol):
    """One crud client: create, read, update, delete and list lines over the SPB/1 store, answered in order."""

    factory: CrudFactory
    quitting = False

    def connectionMade(self) -> None:
        self.maxLineLength = self.factory.maxLineLength
        LineServerProtocol.connectionMade(self)
        self.produceReplies(self.factory.maxOutputBuffer, self.factory.sendTimeout)
        self.replies = OrderedReplies(self.transmit)
        self.replies.send(b"OK sockproto crud ready; type help\n")

    def holdInput(self) -> None:
        self.replies.blocked = True  # and linesReceived holds the lines left

    def releaseInput(self) -> None:
        self.replies.blocked = False
        self.replies.flush()
        if not self.outputBlocked:
            self.releaseHeldLines()

    def lineTooLong(self) -> None:
        self.replies.ready(f"ERR line too long (at most {self.maxLineLength} bytes)\n".encode())

    def lineReceived(self, line: bytes) -> None:
        if self.quitting:
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.replies.ready(b"ERR not UTF-8 text\n")
            return
        command, _, rest = text.strip().partition(" ")
        command = command.lower()
        rest = rest.strip()
        store = self.factory.store
        if command in _WRITE_OPS:
            op = _WRITE_OPS[command]
            key, _, value = rest.partition(" ")
            if op == Op.DELETE and value:
                return self.replies.ready(b"ERR usage: delete KEY\n")
            if op != Op.DELETE and not value:
                return self.replies.ready(f"ERR usage: {command} KEY VALUE\n".encode())
            error = checkKey(key)
            if error:
                return self.replies.ready(f"ERR {error}\n".encode())
            self.storeWrite(op, key.encode(), value.encode())
        elif command == "read":
            error = checkKey(rest)
            if error:
                return self.replies.ready(f"ERR {error}\n".encode())
            local = self.factory.localStore
            if local is not None:
                self.replies.answer(lambda: self.readReply(local, rest.encode()))
            else:
                entry = self.replies.slot()
                store.fetch(rest.encode(), lambda value, failure: self.replies.fill(
                    entry, self.valueReply(value) if failure is None else self.cannotAnswer(failure)
                ))
        elif command == "list":
            if " " in rest:
                return self.replies.ready(b"ERR usage: list [PREFIX]\n")
            local = self.factory.localStore
            if local is not None:
                self.replies.answer(lambda: self.listReply(local, rest.encode()))
            else:
                self.answerLater(store.listKeys(rest.encode()), self.keysReply)
        elif command == "help":
            self.replies.ready(HELP.encode())
        elif command == "quit":
            self.replies.ready(b"OK bye\n")
            self.closeWhenAnswered()
        elif not command:
            self.replies.ready(b"ERR empty line; type help\n")
        else:
            self.replies.ready(f"ERR unknown command {command[:40]!r}; type help\n".encode())

    def closeWhenAnswered(self) -> None:
        """Act on nothing more; close once every reply owed is written."""
        self.quitting = True
        self.replies.whenAnswered(self.closeConnection)

    def serverStopping(self) -> None:
        # Writes already accepted are committed by the store before it closes.
        self.closeWhenAnswered()

    def storeWrite(self, op: int, key: bytes, value: bytes) -> None:
        """Hand a write to the store; its reply takes its place in the order of replies."""
        replies = self.replies
        entry = replies.slot()

        def done(code: int | None) -> None:
            if code is None:
                replies.fill(entry, b"OK\n")
                return
            reason = _REASONS[code]
            if code == Code.SERVER_ERROR:
                reason = self.factory.store.writeProblem or reason  # e.g. the disk is full
            replies.fill(entry, f"ERR {reason}\n".encode())

        refused = self.factory.store.write(op, key, value, done)
        if refused is not None:
            done(refused)

    def answerLater(self, answer: Any, reply: Callable[[Any], bytes]) -> None:
        """A read the store answers later (Redis): its reply keeps its place in the order."""
        replies = self.replies
        entry = replies.slot()
        answer.addCallbacks(reply, self.cannotAnswer).addCallback(lambda data: replies.fill(entry, data))

    @staticmethod
    def cannotAnswer(failure: Any) -> bytes:
        return f"ERR the store cannot answer: {failure.getErrorMessage()}\n".encode()

    @classmethod
    def readReply(cls, store: ILocalKeyValueStore, key: bytes) -> bytes:
        return cls.valueReply(store.get(key))

    @staticmethod
    def valueReply(value: bytes | None) -> bytes:
        if value is None:
            return b"ERR not found\n"
        return f"OK {showValue(value)}\n".encode()

    @classmethod
    def listReply(cls, store: ILocalKeyValueStore, prefix: bytes) -> bytes:
        return cls.keysReply(store.keys(prefix))

    @staticmethod
    def keysReply(keys: list[bytes]) -> bytes:
        lines = [f"OK {len(keys)}\n"]
        lines.extend(showValue(k) + "\n" for k in keys)
        return "".join(lines).encode()


def checkKey(key: str) -> str | None:
    if not key:
        return "a key is needed"
    if len(key.encode()) > MAX_KEY:
        return f"key longer than {MAX_KEY} bytes"
    return None


class CrudFactory(StoreFactory):
    """The crud service's connections, on the same store as the binary service."""

    serviceName = "crud"
    protocol = CrudProtocol
    refusal = b"ERR server busy: too many connections\n"

    def __init__(
        self, clock: IReactorTime, store: IKeyValueStore, maxLineLength: int = 65536, **settings: Any
    ) -> None:
        StoreFactory.__init__(self, clock, store, **settings)
        self.maxLineLength = maxLineLength


class Options(StoreServerOptions):
    """``sockproto-crud``'s options: the store's (``--db``, ``--fsync``) and the longest line."""

    serviceName = "crud"
    defaultPort = 9001
    longdesc = "The seeds' CRUD database server: create/read/update/delete/list lines over the SPB/1 store."
    optParameters = [
        ["max-line-length", None, 65536, "Longest line accepted, in bytes.", positiveInt],
    ]


def buildService(
    options: Options, reactor: IServerReactor | None = None, stores: StoreRegistry | None = None
) -> service.IService:
    return makeStoreService(options, reactor, CrudFactory, stores, maxLineLength=options["max-line-length"])


makeService = standalone(buildService)
