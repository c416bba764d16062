# -*- test-case-name: tests.test_chat_web,tests.test_chat_crowd,tests.test_chat_events -*-
"""The chat in a web browser: a page at ``/`` and a WebSocket at ``/ws`` (``--web ENDPOINT``).

A browser user is a chat client like any other: each WebSocket runs a
:class:`sockproto.chat.protocol.ChatProtocol` of the chat's own factory
(same hub, commands, flood control, limits, logins, clean-up, count of
clients), whose face (:class:`WebFace`) renders the hub's events
(:mod:`sockproto.chat.events`) as small JSON objects in WebSocket frames
(docs/web-chat.rst), and whose input is what the page sends.

WebSocket framing, the handshake, ping/pong and message size limits are
autobahn's, on twisted.web, which also serves the page: one HTML file, its
CSS and JS, package data, with a strict Content-Security-Policy.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import error, interfaces
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import NoResource, Resource
from twisted.web.server import Request, Site
from zope.interface import directlyProvides, implementer, implementer_only

from sockproto.chat.events import (
    Action,
    BanList,
    ChatEvent,
    Help,
    History,
    IChatFace,
    MemberList,
    Message,
    Notice,
    PrivateMessage,
    PrivateNotice,
    Recipient,
    Refusal,
    RoomInfo,
    RoomList,
    TopicChanged,
    TopicIs,
)
from sockproto.chat.lineface import helpLine, noticeText
from sockproto.chat.protocol import ChatFactory, ChatProtocol
from sockproto.server.connections import peerName
from sockproto.server.ratelimit import Episodes
from sockproto.server.tls import logHandshakeFailure

log = Logger()

#: Seconds between pings, and how long a pong may take before the browser is taken for gone.
PING_INTERVAL = 30.0
PING_TIMEOUT = 15.0
#: Nicks (or rooms) in one ``members`` (or ``rooms``) event: a longer list comes in pieces (docs/web-chat.rst).
LIST_PIECE = 200
#: Seconds a member list waits for more joins and leaves (one's own arrival: no longer than this) ...
REFRESH_DELAY = 0.05
#: ... and at most, in a big room: its list, as big as the room, goes out less often, to every browser there.
REFRESH_MAX_DELAY = 3.0


#: The least a browser's WebSocket message may hold (autobahn's limit, which drops the connection):
#: above all the page's input can send (2,000 characters, 12,000 bytes as JSON escapes at worst),
#: so a line too long for --max-line-length gets the chat's own ``error``.
MIN_MESSAGE_LIMIT = 16 * 1024


def messageLimit(maxLineLength: int) -> int:
    """
    Bytes a browser's message may hold: twice what a line of ``maxLineLength``
    bytes can take in JSON (each byte of UTF-8 at most 6, ``\\u0001``, and the
    message's other fields), at least MIN_MESSAGE_LIMIT.
    """
    return max(MIN_MESSAGE_LIMIT, 2 * (maxLineLength * 6 + 256))


def refreshDelay(members: int) -> float:
    """How long a member list waits after a join or leave in a room of ``members``: 1 s for a thousand."""
    return min(REFRESH_DELAY * (1 + members // 50), REFRESH_MAX_DELAY)

SECURITY_HEADERS = {
    b"Content-Security-Policy": (
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"X-Frame-Options": b"DENY",
    b"Cache-Control": b"no-store",
}

def inPieces(event: dict[str, Any]) -> list[dict[str, Any]]:
    """
    A ``members`` or ``rooms`` event whose list is longer than LIST_PIECE as
    several events, numbered by ``part`` (from 1) of ``parts``: a big room's
    members make messages of bounded size, which any client can take.
    """
    key = "nicks" if event["type"] == "members" else "rooms"
    items = event[key]
    if len(items) <= LIST_PIECE:
        return [event]
    parts = -(-len(items) // LIST_PIECE)
    return [
        {**event, key: items[start : start + LIST_PIECE], "part": number, "parts": parts}
        for number, start in enumerate(range(0, len(items), LIST_PIECE), 1)
    ]


def said(event: Message | Action) -> dict[str, Any]:
    kind = "me" if isinstance(event, Action) else "message"
    return {"type": kind, "time": event.time, "nick": event.sender.nick, "text": event.text}


def private(event: PrivateMessage) -> dict[str, Any]:
    if event.echo:
        return {"type": "private", "time": event.time, "to": event.recipient, "text": event.text}
    return {"type": "private", "time": event.time, "from": event.sender.nick, "text": event.text}


def history(event: History) -> list[dict[str, Any]]:
    if not event.entries:
        return [{"type": "notice", "kind": "history", "text": f"no messages in {event.room} yet"}]
    return [{"type": "history", "room": event.room, "entries": [said(entry) for entry in event.entries]}]


def rooms(event: RoomList) -> list[dict[str, Any]]:
    listed = [
        {"name": room.name, "count": room.count, "topic": room.topic} if room.topic else
        {"name": room.name, "count": room.count}
        for room in event.rooms
    ]
    return inPieces({"type": "rooms", "rooms": listed})


def members(event: MemberList) -> list[dict[str, Any]]:
    """
    A member list, in pieces; ``operators`` and ``voiced`` (when any) name
    the members of each piece with that status (IRC's @ and +).
    """
    pieces = inPieces({"type": "members", "room": event.room, "nicks": [member.nick for member in event.members]})
    statuses = {member.nick: member for member in event.members if member.operator or member.voiced}
    if statuses:
        for piece in pieces:
            listed = [statuses[nick] for nick in piece["nicks"] if nick in statuses]
            operators = [member.nick for member in listed if member.operator]
            voiced = [member.nick for member in listed if member.voiced and not member.operator]
            if operators:
                piece["operators"] = operators
            if voiced:
                piece["voiced"] = voiced
    return pieces


def topic(event: TopicIs | TopicChanged) -> list[dict[str, Any]]:
    """The topic of a room, for the page to show above the messages (with the notice a line client reads)."""
    setter = event.setter if isinstance(event, TopicIs) else event.who.nick
    shown = {"type": "topic", "room": event.room, "topic": event.topic, "nick": setter, "time": event.time}
    return [{"type": "notice", "kind": event.kind, "text": noticeText(event)}, shown]


def bans(event: BanList) -> list[dict[str, Any]]:
    listed = [{"mask": ban.mask, "nick": ban.setter, "time": ban.time} for ban in event.bans]
    return [{"type": "bans", "room": event.room, "bans": listed}]


_OBJECTS: dict[type, Callable[[Any], list[dict[str, Any]]]] = {
    TopicIs: topic,
    TopicChanged: topic,
    BanList: bans,
    Message: lambda event: [said(event)],
    Action: lambda event: [said(event)],
    PrivateMessage: lambda event: [private(event)],
    Notice: lambda event: [said(event)],  # the page has no notices between members
    PrivateNotice: lambda event: [private(event)],
    History: history,
    MemberList: members,
    RoomList: rooms,
    Refusal: lambda event: [{"type": "error", "text": event.reason, "code": event.code.value} if event.code else
                            {"type": "error", "text": event.reason}],
    Help: lambda event: [{"type": "notice", "kind": "help", "text": "Commands:"}] + [
        {"type": "notice", "kind": "help", "text": helpLine(usage, what)} for usage, what in event.commands
    ],
}


def jsonEvents(event: ChatEvent) -> list[dict[str, Any]]:
    """
    ``event`` as the page's JSON objects (docs/web-chat.rst): usually one,
    several for a long list; joins, leaves, server notices and the like are
    ``notice`` objects with the words a line client reads, and their ``kind``.
    """
    objects = _OBJECTS.get(type(event))
    if objects is not None:
        return objects(event)
    return [{"type": "notice", "kind": event.kind, "text": noticeText(event)}]


@implementer(IChatFace)
class WebFace:
    """The chat's events as JSON objects, each in a WebSocket text frame ready to write."""

    name = "web"

    def __init__(self, frame: Callable[[dict[str, Any]], bytes]) -> None:
        self.frame = frame

    def render(self, event: ChatEvent, recipient: Recipient | None) -> bytes:
        objects = jsonEvents(event)
        if len(objects) == 1:
            return self.frame(objects[0])
        return b"".join(self.frame(each) for each in objects)

    def membersChanged(self, room: str, members: Iterable[Recipient]) -> None:
        for member in members:
            transport: Any = member.transport  # type: ignore[attr-defined]
            transport.socket.membershipChanged()


_HOST_HEADER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?")
NOT_A_MESSAGE = 'not a chat message: send JSON like {"type": "say", "text": "hi"}'
NOT_UNICODE = "not valid Unicode: the text holds a lone surrogate (a \\ud800-\\udfff escape without its pair)"


def hostName(header: bytes | None) -> str | None:
    """
    The host name of a ``Host`` header, lower case, without port, brackets or
    trailing dot (``Chat.Example.:8000`` -> ``chat.example``, ``[::1]:80``
    -> ``::1``); None if the header is not a host name and optional port.
    """
    if header is None:
        return None
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError:
        return None
    match = _HOST_HEADER.fullmatch(text)
    if match is None:
        return None
    return match[1].strip("[]").rstrip(".").lower()


def isAddress(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def readMessage(payload: bytes) -> dict[str, Any]:
    """A browser's message: a JSON object whose ``type`` is a string; ValueError for anything else."""
    try:
        message = json.loads(payload.decode("utf-8"))
    except RecursionError:
        # Nested deeper than the parser's stack ([[[[...): not a chat message either.
        raise ValueError("nested too deeply") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError("not an object with a type")
    return message


class WebSocketLog:
    """
    autobahn's logger for the chat's WebSockets.  Its warnings and errors (a
    message over the limit, a protocol violation, the dropped connection that
    follows) are one line a minute, with how many went unsaid: any browser or
    script can cause them at will.  Its debug lines are dropped, as txaio's
    default level drops them.
    """

    def __init__(self, clock: interfaces.IReactorTime) -> None:
        self.clock = clock
        self.episodes = Episodes()

    def debug(self, message: str, **kwargs: Any) -> None:
        pass

    trace = debug

    def warn(self, message: str, **kwargs: Any) -> None:
        unsaid = self.episodes.due("websocket", self.clock.seconds())
        if unsaid is None:
            return
        try:
            what = message.format(**kwargs)
        except (KeyError, IndexError, ValueError, AttributeError):
            what = message
        log.info("chat-web: {what}" + Episodes.unsaidNote(unsaid), what=what[:300], unsaid=unsaid)

    info = error = critical = warn


@implementer(interfaces.ITransport, interfaces.IConsumer, interfaces.IPushProducer)
class WebTransport:
    """The transport of a browser user's ChatProtocol: output becomes events on the WebSocket."""

    disconnecting = False

    def __init__(self, socket: WebChatProtocol) -> None:
        self.socket = socket
        self.real: Any = socket.transport
        if interfaces.ISSLTransport.providedBy(self.real):
            directlyProvides(self, interfaces.ISSLTransport)

    def write(self, data: bytes) -> None:
        if not self.disconnecting:
            self.socket.fromChat(data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self.socket.sendClose(1000)

    def abortConnection(self) -> None:
        self.disconnecting = True
        self.real.abortConnection()

    def getPeer(self) -> Any:
        return self.real.getPeer()

    def getHost(self) -> Any:
        return self.real.getHost()

    def getPeerCertificate(self) -> Any:
        return self.real.getPeerCertificate()

    def setTcpNoDelay(self, enabled: int) -> None:
        getattr(self.real, "setTcpNoDelay", lambda value: None)(enabled)

    def setTcpKeepAlive(self, enabled: int) -> None:
        getattr(self.real, "setTcpKeepAlive", lambda value: None)(enabled)

    # The chat watches the real socket's send buffer to drop a browser that does not read.
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if getattr(self.real, "producer", None) is not None:
            # twisted.web's channel, which handed this connection over to the WebSocket.
            self.real.unregisterProducer()
        self.real.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if getattr(self.real, "producer", None) is not None:
            self.real.unregisterProducer()

    def pauseProducing(self) -> None:
        self.real.pauseProducing()

    def resumeProducing(self) -> None:
        self.real.resumeProducing()

    def stopProducing(self) -> None:
        self.real.stopProducing()


class WebChatProtocol(WebSocketServerProtocol):
    """One browser: JSON in (``say``, ``login``, ``members``, ``rooms``), chat events out."""

    factory: WebChatFactory
    chat: ChatProtocol | None = None
    _refresh: Any = None
    _state: tuple[str, str] = ("", "")
    #: Messages received whole so far, and the --read-timeout deadline of the one begun.
    messagesIn = 0
    readDeadline: Any = None

    @property
    def log(self) -> WebSocketLog:  # autobahn's own lines: through the factory's limit of one a minute
        return self.factory.webSocketLog

    def onConnect(self, request: Any) -> None:
        host = request.headers.get("host", "")  # request.host has no port
        if not self.factory.originAllowed(request.origin, host, self.isSecure()):
            log.info("web chat refused a WebSocket from origin {origin}", origin=request.origin)
            raise ConnectionDeny(403, "origin not allowed")

    def isSecure(self) -> bool:
        return interfaces.ISSLTransport.providedBy(self.transport)

    def onOpen(self) -> None:
        # The handshake's bytes are not needed again; an idle browser should cost little.
        self.http_request_data = b""
        self.http_response_data = ""
        self.http_headers = {}
        chatFactory = self.factory.chatFactory
        # The page checks a line's length before sending it (a longer one gets the chat's error).
        self.event({"type": "limits", "line": chatFactory.maxLineLength})
        transport: Any = self.transport
        chat = chatFactory.buildProtocol(transport.getPeer())
        chat.face = self.factory.face
        self.chat = chat
        chat.makeConnection(WebTransport(self))
        if interfaces.ISSLTransport.providedBy(self.transport):
            chat.handshakeCompleted()  # the page came over this TLS connection: it is done

    def dataReceived(self, data: bytes) -> None:
        finishedBefore = self.messagesIn
        WebSocketServerProtocol.dataReceived(self, data)
        if self.state != self.STATE_OPEN:
            self.stopReadDeadline()
            return
        # A message (a fragmented one too) or a frame begun and not finished
        # must finish within --read-timeout of its first byte, as a line must;
        # pongs and pings between its fragments do not count as progress.
        if self.data or self.inside_message or self.current_frame is not None:
            site = self.factory.site
            if self.readDeadline is None:
                if site is not None and site.readTimeout:
                    self.readDeadline = site.clock.callLater(site.readTimeout, self.readTooSlow)
            elif self.messagesIn != finishedBefore and site is not None:  # one finished, the next begun
                self.readDeadline.reset(site.readTimeout)
        elif self.readDeadline is not None:
            self.stopReadDeadline()

    def stopReadDeadline(self) -> None:
        if self.readDeadline is not None and self.readDeadline.active():
            self.readDeadline.cancel()
        self.readDeadline = None

    def readTooSlow(self) -> None:
        self.readDeadline = None
        if self.factory.site is not None:
            self.factory.site.readTimedOut(self.transport, "a WebSocket message")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messagesIn += 1
        chat = self.chat
        if chat is None or self.closedByUs():
            return
        if isBinary:
            self.event({"type": "error", "text": "send text messages (JSON), not binary ones"})
            return
        try:
            message = readMessage(payload)
        except ValueError:
            self.event({"type": "error", "text": NOT_A_MESSAGE})
            return
        kind = message["type"]
        if kind == "say" and isinstance(message.get("text"), str):
            # One message is one line, whatever it holds.
            line = message["text"].replace("\r", " ").replace("\n", " ")
            self.toChat(chat, line + "\n")
        elif kind == "login" and isinstance(message.get("name"), str) and isinstance(message.get("password"), str):
            name = message["name"].replace(" ", "")
            password = message["password"].replace("\r", "").replace("\n", "")
            self.toChat(chat, f"/login {name} {password}\n")
        elif kind == "members":
            self.refreshMembers()
        elif kind == "rooms":
            self.refreshRooms()
        else:
            # (repr escapes a lone surrogate, which the event could not carry.)
            self.event({"type": "error", "text": f"unknown message type {kind[:32]!r}"})

    def toChat(self, chat: ChatProtocol, line: str) -> None:
        """A line from the browser's JSON to the chat, unless it is not Unicode the chat can take."""
        try:
            data = line.encode("utf-8")
        except UnicodeEncodeError:
            # JSON's "\ud800" is a lone surrogate: valid JSON, but no text UTF-8 (or a line client) can hold.
            self.event({"type": "error", "text": NOT_UNICODE})
            return
        chat.dataReceived(data)

    def onPing(self, payload: bytes) -> None:
        # A pong is output too: a browser that pings and never reads is a slow consumer.
        if self.owe(len(payload) + 2):
            WebSocketServerProtocol.onPing(self, payload)

    def owe(self, size: int) -> bool:
        """
        ``size`` more bytes for this browser, written beside the chat's own
        output: counted as it counts its own.  False once the browser is
        dropped as a slow consumer.
        """
        chat = self.chat
        if chat is not None and chat.dropped:
            return False  # dropped already: counted once
        if chat is not None and chat.congested:
            chat.backlog += size
            if chat.backlog > chat.factory.maxOutputBuffer:
                chat.dropSlowConsumer()
                return False
        return chat is None or not chat.dropped

    def closedByUs(self) -> bool:
        return self.chat is not None and self.chat.transport.disconnecting

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.stopReadDeadline()
        chat, self.chat = self.chat, None
        if self._refresh is not None and self._refresh.active():
            self._refresh.cancel()
        if chat is not None:
            chat.connectionLost(Failure(error.ConnectionDone()))

    # -- output -----------------------------------------------------------------

    def event(self, event: dict[str, Any]) -> None:
        if self.state == self.STATE_OPEN:  # not once closing: autobahn refuses to send then
            # Framed here, as fromChat does: autobahn's sendMessage would hold
            # it to maxMessagePayloadSize, a limit meant for what browsers send.
            frame = self.factory.frame(event)
            if self.owe(len(frame)):  # a big room's member lists are output too
                self.sendData(frame)

    def fromChat(self, data: bytes) -> None:
        """Frames the web face rendered (once for a whole room), written whole."""
        if data and self.state == self.STATE_OPEN:
            # The factory offers no compression, so a prepared frame is what goes on the wire.
            self.sendData(data)
        chat = self.chat
        if chat is None:
            return
        state = (chat.nick, chat.room.name if chat.room is not None else "")
        if state != self._state:
            self._state = state
            self.event({"type": "state", "nick": state[0], "room": state[1]})
            if chat.room is not None:
                # (Not "entered": the history replayed on entering comes before the hub says so.)
                if self._refresh is None:
                    self._refresh = chat.factory.clock.callLater(REFRESH_DELAY, self.refreshMembers)
                else:  # one's own room's list does not wait for a big room's
                    self._refresh.reset(REFRESH_DELAY)

    def membershipChanged(self) -> None:
        """Someone joined or left this user's room: its member list follows, many changes at once in one list."""
        chat = self.chat
        if chat is not None and not chat.dropped and chat.room is not None and self._refresh is None:
            delay = refreshDelay(len(chat.room.members))
            self._refresh = chat.factory.clock.callLater(delay, self.refreshMembers)

    def refreshMembers(self) -> None:
        """Send the member list of this user's room (and the room list, whose counts changed too)."""
        self._refresh = None
        chat = self.chat
        if chat is None or chat.room is None:
            return
        self.refreshRooms()
        room = chat.room.name

        def show(nicks: list[str]) -> None:
            if self.chat is not None:
                memberships = self.chat.factory.moderator.memberships(room, nicks)
                for piece in jsonEvents(MemberList(room, memberships)):
                    self.event(piece)

        chat.factory.hub.whenNames(chat).addCallback(show).addErrback(
            lambda failure: log.failure("web chat: member list failed", failure)
        )

    def refreshRooms(self) -> None:
        chat = self.chat
        if chat is None or not chat.entered:
            return
        def show(listed: list[tuple[str, int]]) -> None:
            if self.chat is not None:
                topicOf = self.chat.factory.moderator.topicOf
                rooms = tuple(RoomInfo(name, count, topicOf(name)) for name, count in listed)
                for piece in jsonEvents(RoomList(rooms)):
                    self.event(piece)

        chat.factory.hub.whenRooms().addCallback(show).addErrback(
            lambda failure: log.failure("web chat: room list failed", failure)
        )


class WebChatFactory(WebSocketServerFactory):
    """The chat's WebSockets: each a chat client of the chat's factory; the origin and host checks."""

    protocol = WebChatProtocol  # type: ignore[assignment]
    #: The site whose /ws this is: its read deadline and its log of slow senders (None: no deadline).
    site: WebSite | None = None

    def __init__(self, chatFactory: ChatFactory, origins: list[str]) -> None:
        WebSocketServerFactory.__init__(self, server="sockproto")
        self.chatFactory = chatFactory
        #: How the hub's events are shown to this factory's browsers.
        self.face = WebFace(self.frame)
        self.origins = {origin.rstrip("/").lower() for origin in origins}
        #: What autobahn says about these WebSockets: one line a minute.
        self.webSocketLog = WebSocketLog(chatFactory.clock)
        # A message holds one line: room for far more than the chat's longest line, which
        # refuses a longer one with an error event; a bigger message drops the connection.
        self.setProtocolOptions(
            maxMessagePayloadSize=messageLimit(chatFactory.maxLineLength),
            maxFramePayloadSize=messageLimit(chatFactory.maxLineLength),
            autoPingInterval=PING_INTERVAL,
            autoPingTimeout=PING_TIMEOUT,
        )

    def frame(self, event: dict[str, Any]) -> bytes:
        """``event`` as a WebSocket text frame, ready to write (no compression is offered)."""
        return self.prepareMessage(json.dumps(event, ensure_ascii=False).encode("utf-8")).payloadHybi

    def originAllowed(self, origin: str | None, host: str, secure: bool) -> bool:
        """The page's own origin (or those of ``--web-origin``); a browser always sends one."""
        if not origin or origin == "null":
            return False
        origin = origin.rstrip("/").lower()
        if self.origins:
            return origin in self.origins
        parts = urlsplit(origin)
        return parts.scheme == ("https" if secure else "http") and parts.netloc == host.lower()


class SecureRequest(Request):
    """
    Every response of the web chat carries the security headers, and only
    requests for the server's own host names are served (DNS rebinding).
    """

    def process(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.setHeader(name, value)
        site: WebSite = self.channel.site  # type: ignore[attr-defined]  # Site.buildProtocol sets it
        if not site.servesHost(self.getHeader(b"host")):
            site.refuseHost(self)
            return
        Request.process(self)


@implementer(interfaces.IHandshakeListener)
class WebChannel(HTTPChannel):
    """
    twisted.web's HTTP connection, which says when a TLS handshake fails, with a read deadline: a request, head and
    body, must come whole within ``--read-timeout`` of its first byte
    (twisted.web's own timeout starts again on every byte: a request
    trickled a byte at a time would never end).
    """

    site: WebSite  # set by Site.buildProtocol
    #: No request is being read or handled: the next byte begins one.
    awaitingRequest = True
    requestDeadline: Any = None
    _handshaking = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._handshaking = interfaces.ISSLTransport.providedBy(self.transport)

    def handshakeCompleted(self) -> None:
        self._handshaking = False

    def dataReceived(self, data: bytes) -> None:
        if self.awaitingRequest and self.requestDeadline is None and data and self.site.readTimeout:
            self.requestDeadline = self.site.clock.callLater(self.site.readTimeout, self.requestTooSlow)
        HTTPChannel.dataReceived(self, data)

    def allContentReceived(self) -> None:
        self.awaitingRequest = False
        self.stopRequestDeadline()
        HTTPChannel.allContentReceived(self)

    def requestDone(self, request: Any) -> None:
        # Before twisted.web reads what came meanwhile (a pipelined request).
        self.awaitingRequest = True
        HTTPChannel.requestDone(self, request)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.stopRequestDeadline()
        if self._handshaking:  # the TLS handshake failed: say so
            self._handshaking = False
            site = self.site
            logHandshakeFailure(site.handshakeFailures, site.reactor.seconds(), "chat-web",
                                peerName(self.transport), reason)
        HTTPChannel.connectionLost(self, reason)

    def stopRequestDeadline(self) -> None:
        if self.requestDeadline is not None and self.requestDeadline.active():
            self.requestDeadline.cancel()
        self.requestDeadline = None

    def requestTooSlow(self) -> None:
        self.requestDeadline = None
        self.site.readTimedOut(self.transport, "an HTTP request")


class StaticFile(Resource):
    """One file of the page (HTML, JS, CSS, icon), served with the security headers."""

    isLeaf = True

    def __init__(self, body: bytes, contentType: bytes) -> None:
        Resource.__init__(self)
        self.body = body
        self.contentType = contentType

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", self.contentType)
        return self.body

    def render_HEAD(self, request: Any) -> bytes:
        return self.render_GET(request)


class _WebSocketOnly(WebSocketResource):
    """``/ws`` takes WebSocket handshakes only: nothing under it, no status page."""

    def render(self, request: Any) -> bytes:
        if request.postpath and request.postpath != [b""]:
            return NoResource().render(request)
        if (request.getHeader(b"upgrade") or b"").lower() != b"websocket":
            request.setResponseCode(426, b"Upgrade Required")
            request.setHeader(b"Upgrade", b"websocket")
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"This is the chat's WebSocket; open the page at / instead.\n"
        channel = request.channel
        result = super().render(request)
        # The HTTP connection is the WebSocket's now: its HTTP idle timer would
        # keep the channel and this request alive (and fire on nothing).
        channel.setTimeout(None)
        channel.requests = []
        return result


class _Root(Resource):
    """``/``, ``/chat.js``, ``/chat.css``, ``/favicon.svg`` and ``/ws``; nothing else exists."""

    def getChild(self, path: bytes, request: Any) -> Resource:
        return NoResource()


@implementer_only(interfaces.IProtocolFactory)
class WebSite(Site):
    """
    twisted.web's Site for the chat: the host names it serves, the read
    deadline of requests and WebSocket messages (``--read-timeout``), and
    one log line a minute about each kind of refusal.

    Without ALPN: the WebSocket needs HTTP/1.1 (autobahn does not speak it
    over HTTP/2), and Twisted before 25 sets ALPN on a TLS context already
    in use, which newer pyOpenSSL refuses.  Browsers offer ``h2`` and
    ``http/1.1``; without a protocol of ours the handshake goes on without
    ALPN (:func:`sockproto.privateapi.serveClientsOfferingALPN`), which
    every browser takes as HTTP/1.1.
    """

    # Plain HTTP/1.1 (no HTTP/2 negotiation: see above), with the read deadline.
    protocol = WebChannel  # type: ignore[assignment]

    def __init__(self, root: Resource, chatFactory: ChatFactory, hosts: set[str]) -> None:
        # An HTTP connection that sends no complete request in 30 s is closed (twisted.web waits 12 hours).
        Site.__init__(self, root, timeout=30, reactor=chatFactory.clock)
        self.clock = chatFactory.clock
        #: Seconds a request or a WebSocket message may take from its first byte (0: no limit).
        self.readTimeout: float = chatFactory.readTimeout
        #: Where the chat counts its errors (the metrics' sockproto_errors_total).
        self.errors = chatFactory.errors
        #: Host names served besides IP addresses (which DNS rebinding cannot use).
        self.hosts = {"localhost", *hosts}
        #: When failed TLS handshakes were last logged, by cause.
        self.handshakeFailures = Episodes()
        #: When slow senders and requests for foreign host names were last logged.
        self.refusals = Episodes()
        #: The WebSocket factory of /ws.
        self.webSockets: WebChatFactory | None = None

    def servesHost(self, header: bytes | None) -> bool:
        """
        Whether a request's ``Host`` is this server's: localhost, an IP
        address, a name given by ``--web-host`` or ``--web-origin``.  A page
        of another name that DNS rebinding pointed here is not served.
        (No ``Host`` at all, from an HTTP/1.0 client, names nothing to rebind.)
        """
        if header is None:
            return True
        name = hostName(header)
        return name is not None and (name in self.hosts or isAddress(name))

    def refuseHost(self, request: Request) -> None:
        self.errors["unknown_host"] += 1
        unsaid = self.refusals.due("unknown_host", self.clock.seconds())
        if unsaid is not None:
            log.info(
                "chat-web refused a request for a host name it does not serve, {host!r}, from {peer} "
                "(421; see --web-host)" + Episodes.unsaidNote(unsaid),
                host=(request.getHeader(b"host") or b"")[:100].decode("ascii", "backslashreplace"),
                peer=peerName(request.transport),
                unsaid=unsaid,
            )
        body = b"421 Misdirected Request: this server does not serve that host name (see --web-host).\n"
        request.setResponseCode(421, b"Misdirected Request")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body)
        request.finish()

    def readTimedOut(self, transport: Any, what: str) -> None:
        """A request or message took over --read-timeout: cut the connection off."""
        self.errors["read_timeout"] += 1
        unsaid = self.refusals.due("read_timeout", self.clock.seconds())
        if unsaid is not None:
            log.info(
                "chat-web cut off {peer}: {what} took over {seconds} s (--read-timeout)"
                + Episodes.unsaidNote(unsaid),
                peer=peerName(transport),
                what=what,
                seconds=self.readTimeout,
                unsaid=unsaid,
            )
        transport.abortConnection()


def pageFile(name: str) -> bytes:
    return resources.files("sockproto.chat").joinpath("static", name).read_bytes()


def webSite(chatFactory: ChatFactory, origins: list[str], hosts: Sequence[str] = ()) -> WebSite:
    """The page and the WebSocket; ``hosts`` (``--web-host``) and the names of ``origins`` are served."""
    root = _Root()
    root.putChild(b"", StaticFile(pageFile("index.html"), b"text/html; charset=utf-8"))
    root.putChild(b"chat.js", StaticFile(pageFile("chat.js"), b"text/javascript; charset=utf-8"))
    root.putChild(b"chat.css", StaticFile(pageFile("chat.css"), b"text/css; charset=utf-8"))
    root.putChild(b"favicon.svg", StaticFile(pageFile("favicon.svg"), b"image/svg+xml"))
    webSockets = WebChatFactory(chatFactory, origins)
    root.putChild(b"ws", _WebSocketOnly(webSockets))
    names = {name.rstrip(".").lower() for name in hosts}
    names.update(urlsplit(origin).hostname or "" for origin in origins)
    names.discard("")
    site = webSockets.site = WebSite(root, chatFactory, names)
    site.webSockets = webSockets
    site.requestFactory = SecureRequest
    site.noisy = False
    site.displayTracebacks = False
    return site
