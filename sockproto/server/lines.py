# -*- test-case-name: tests.test_lines -*-
"""Bounded line framing shared by the text services (echo line modes, chat, joke, crud).

Twisted's ``LineReceiver`` re-splits its whole buffer once per line and, on an
overlong line, throws away everything buffered after it and usually the
connection.  Here a chunk is split once, a too-long line is reported once and
skipped up to its newline, and the lines after it are kept: the connection
stays usable and memory stays bounded by the maximum line length.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from sockproto.server.connections import ServerProtocol

# What a client speaking the wrong protocol sends first: a TLS (or SSLv2)
# ClientHello, or an HTTP request line.
_TLS_HELLO = re.compile(rb"\x16\x03[\x00-\x04]|\x80[\x00-\xff]\x01\x03")
_HTTP_REQUEST = re.compile(rb"(?:GET|HEAD|POST|PUT|DELETE|OPTIONS|CONNECT|PATCH|TRACE) \S+ HTTP/\d")


class _TooLong:
    """Marks, in a batch of lines, the place of a line that was too long."""

    def __repr__(self) -> str:
        return "TOO_LONG"


#: Stands in a batch for a line longer than the limit (reported once per line).
TOO_LONG: Any = _TooLong()


class LineSplitter:
    """
    Turns chunks of bytes into lines ending in ``\\n`` (a ``\\r`` before it is dropped).

    :meth:`feed` returns the complete lines of a chunk, in order, with
    :data:`TOO_LONG` where a line exceeded ``maxLength`` bytes.  At most
    ``maxLength + 1`` bytes of a partial line are kept.
    """

    __slots__ = ("maxLength", "_buffer", "_discarding", "errors")

    def __init__(self, maxLength: int, errors: Counter[str] | None = None) -> None:
        self.maxLength = maxLength
        self._buffer = b""
        self._discarding = False
        #: Where overlong lines are counted (as ``line_too_long``), if given.
        self.errors: Counter[str] = Counter() if errors is None else errors

    def feed(self, data: bytes) -> list[Any]:
        if self._buffer:
            data = self._buffer + data
        lines = data.split(b"\n")
        rest = lines.pop()
        if self._discarding and lines:
            # The first "line" is the tail of one already reported as too long.
            del lines[0]
            self._discarding = False
        limit = self.maxLength
        if lines:
            lines = [line[:-1] if line[-1:] == b"\r" else line for line in lines]
            if max(map(len, lines)) > limit:
                lines = [TOO_LONG if len(line) > limit else line for line in lines]
                self.errors["line_too_long"] += lines.count(TOO_LONG)
        if self._discarding:
            rest = b""
        elif len(rest) > limit + 1:
            lines.append(TOO_LONG)
            self.errors["line_too_long"] += 1
            self._discarding = True
            rest = b""
        self._buffer = rest
        return lines

    @property
    def pending(self) -> bytes:
        """The partial line waiting for its newline."""
        return self._buffer


class LineServerProtocol(ServerProtocol):
    """
    A server protocol that speaks lines.

    Subclasses implement :meth:`lineReceived` and :meth:`lineTooLong`, or
    :meth:`linesReceived` to handle a whole batch at once (the chat fan-out
    does, to write once per batch).
    """

    maxLineLength = 65536
    splitter: LineSplitter
    firstData = True

    def connectionMade(self) -> None:
        self.splitter = LineSplitter(self.maxLineLength, self.factory.errors)
        ServerProtocol.connectionMade(self)

    def dataReceived(self, data: bytes) -> None:
        self.heard = True
        self.traffic.bytesIn += len(data)
        if self.firstData:
            self.firstData = False
            if _TLS_HELLO.match(data):
                return self.wrongProtocol("TLS")
            if _HTTP_REQUEST.match(data):
                return self.wrongProtocol("HTTP")
        splitter = self.splitter
        lines = splitter.feed(data)
        self.noteUnfinished(bool(splitter._buffer or splitter._discarding), bool(lines))
        if lines:
            self.linesReceived(lines)

    #: Lines read but not handled yet because the output was blocked.
    linesWhileBlocked: list[Any] | None = None

    def linesReceived(self, lines: list[Any]) -> None:
        if self.linesWhileBlocked is not None:
            self.linesWhileBlocked.extend(lines)
            return
        for index, line in enumerate(lines):
            if self.transport.disconnecting:
                return
            if self.outputBlocked:
                self.linesWhileBlocked = lines[index:]
                return
            if line is TOO_LONG:
                self.lineTooLong()
            else:
                self.lineReceived(line)

    def releaseHeldLines(self) -> None:
        """Handle the lines held back while the output was blocked."""
        held, self.linesWhileBlocked = self.linesWhileBlocked, None
        if held:
            self.linesReceived(held)

    def lineReceived(self, line: bytes) -> None:
        raise NotImplementedError

    def lineTooLong(self) -> None:
        raise NotImplementedError

    def wrongProtocol(self, name: str) -> None:
        """A client spoke TLS or HTTP to this plain-text port: say so (in clear text) and close."""
        self.factory.errors["wrong_protocol"] += 1
        self.transport.write(f"{self.errorPrefix}this port speaks plain text lines, not {name}\r\n".encode())
        self.closeConnection()

    errorPrefix = "ERROR "
