"""Bounded line framing shared by the text services (echo line modes, chat, joke, crud).

Twisted's ``LineReceiver`` re-splits its whole buffer once per line and, on an
overlong line, throws away everything buffered after it and usually the
connection.  Here a chunk is split once, a too-long line is reported once and
skipped up to its newline, and the lines after it are kept: the connection
stays usable and memory stays bounded by the maximum line length.
"""

from __future__ import annotations

from typing import Any

from sockproto.connections import ServerProtocol


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

    __slots__ = ("maxLength", "_buffer", "_discarding")

    def __init__(self, maxLength: int) -> None:
        self.maxLength = maxLength
        self._buffer = b""
        self._discarding = False

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
        if self._discarding:
            rest = b""
        elif len(rest) > limit + 1:
            lines.append(TOO_LONG)
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

    def connectionMade(self) -> None:
        self.splitter = LineSplitter(self.maxLineLength)
        ServerProtocol.connectionMade(self)

    def dataReceived(self, data: bytes) -> None:
        self.heard = True
        lines = self.splitter.feed(data)
        if lines:
            self.linesReceived(lines)

    def linesReceived(self, lines: list[Any]) -> None:
        for line in lines:
            if self.transport.disconnecting:
                return
            if line is TOO_LONG:
                self.lineTooLong()
            else:
                self.lineReceived(line)

    def lineReceived(self, line: bytes) -> None:
        raise NotImplementedError

    def lineTooLong(self) -> None:
        raise NotImplementedError
