# -*- test-case-name: tests.test_chat_cluster,tests.test_chat_moderation_cluster,tests.test_chat_cluster_e2e -*-
"""Chat servers joined through one Redis (``--cluster redis://...``).

Every server publishes what its members say, once per reactor turn, on one
Redis channel, and hears what the others publish there.  Names, rooms and
members are Redis hashes changed only by Lua scripts, so a decision (is
this nick free? may a new room open?) is atomic across servers.  Room
history is one capped stream per room; the script that appends a message to
its stream publishes it in the same step, so every server sees messages in
the stream's order.  Keys (under ``--cluster-prefix``, default
``sockproto:``) and failure handling: ``docs/scaling.rst``.

While Redis is out of reach the server goes on alone: its members keep
chatting among themselves (told their lines reach only this server), and
when the link returns their names are claimed again.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import re
import socket
from collections import deque
from importlib import resources
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from sockproto.chat.bus import IChatBus
from sockproto.chat.events import (
    Action,
    Joined,
    Kicked,
    Message,
    ModeChanged,
    NickChanged,
    Parted,
    Quit,
    RefusalCode,
    ServerNotice,
    TopicChanged,
    Who,
)
from sockproto.chat.history import ClusterHistory, Entry
from sockproto.chat.hub import LOBBY, ChatError, faceOf
from sockproto.chat.moderation import MAX_MASK, MAX_MODE_ARGUMENTS, MAX_TOPIC
from sockproto.chat.text import clean, validNick, validRoom
from sockproto.interfaces import IServerReactor
from sockproto.server.latency import LatencyHistogram
from sockproto.server.redis import FirstLink, RedisAddress, RedisLink, Script

if TYPE_CHECKING:
    from sockproto.chat.bus import ChatHub
    from sockproto.chat.model import Member

log = Logger()

#: A server not heard from for this long is gone: its members leave, its names are freed.
NODE_TTL = 10.0
#: How often a server says it is alive, and looks for servers that are not.
HEARTBEAT_INTERVAL = 3.0
#: Messages kept per room in Redis (approximately: ``XADD MAXLEN ~``).
STREAM_LENGTH = 10000
#: Seconds a new server waits for its first link before deciding names alone.
JOIN_WAIT = 5.0
#: Events sent to Redis and not yet acknowledged, beyond which new ones are dropped (and counted).
MAX_IN_FLIGHT = 100_000

#: Longest text (a line) taken from another server; longer events are dropped.
MAX_EVENT_TEXT = 65536
#: Longest reason (of a part, a quit, a nick change) taken from another server.
MAX_REASON = 400
#: Times in events must lie between 0 and the end of the year 9999 (what a time stamp can show).
LATEST_TIME = 253402300799.0
#: Messages held per server while Redis is asked whether it is one of the cluster's, or its notices' members
#: are its own (and servers so checked at once).
MAX_UNVERIFIED = 1000
#: Seconds between log lines about junk on the channel (the rest are counted).
COMPLAINT_INTERVAL = 10.0

NOT_SHARED = "not delivered to other servers: the link to them is down"
LINK_LOST = "link to the other servers lost; messages reach this server only"
LINK_RESTORED = "link restored"


def lua(name: str) -> str:
    """The Lua script ``name`` of the cluster, kept as package data (``sockproto/chat/lua/NAME.lua``)."""
    return resources.files("sockproto.chat").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def defaultNodeName() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# The scripts that decide what spans the servers are Lua, kept as package data
# in sockproto/chat/lua/ (each file says what it takes and returns), loaded
# once; every one begins with the helpers of library.lua.
_LIBRARY = lua("library").replace("LOBBY_NAME", LOBBY)
_DEADLINE = lua("deadline")
_ENTER = Script(_LIBRARY + lua("enter"))
_RENAME = Script(_LIBRARY + lua("rename"))
_MOVE = Script(_LIBRARY + lua("move"))
_RELEASE = Script(_LIBRARY + lua("release"))
_PUBLISH = Script(_LIBRARY + _DEADLINE + lua("publish"))
_PRIVATE = Script(_LIBRARY + _DEADLINE + lua("private"))
_HEARTBEAT = Script(_LIBRARY + lua("heartbeat"))
_REAP = Script(_LIBRARY + lua("reap"))
_REGISTER = Script(_LIBRARY + lua("register"))
_ROOMS = Script(_LIBRARY + lua("rooms"))
_ROOMSTATE = Script(_LIBRARY + lua("roomstate"))

SCRIPTS = (_ENTER, _RENAME, _MOVE, _RELEASE, _PUBLISH, _PRIVATE, _HEARTBEAT, _REAP, _REGISTER, _ROOMS, _ROOMSTATE)


# -- checking what comes from the channel ----------------------------------------

_NODE_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")  # as --node-name allows
_STREAM_ID = re.compile(rb"[0-9]{1,20}-[0-9]{1,20}")
#: Events only Redis's own scripts publish, unsigned even with a secret: each is checked in Redis instead.
_CHECKED_IN_REDIS = frozenset({"g", "x", "r"})
#: The changes of a room a server announces (topic, modes, kick): their actor must be that server's member.
_ROOM_CHANGES = frozenset({"t", "o", "k"})
_MODES = re.compile(r"[+-][+-biklmnotv]{1,40}")
#: Highest version of a room's state believed (Lua numbers are exact up to 2^53).
MAX_VERSION = 2**53


class BadEvent(ValueError):
    """A message on the channel that is not what a server of this cluster would send."""


def _noConstants(name: str) -> float:
    raise BadEvent(f"{name} is not a number")


def _node(value: Any) -> str:
    if not isinstance(value, str) or not _NODE_NAME.fullmatch(value):
        raise BadEvent(f"{str(value)[:80]!r} is not a server name")
    return value


def _time(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= LATEST_TIME:
        raise BadEvent(f"{str(value)[:80]} is not a time")
    return float(value)


# Every event names a room and most a nick, mostly the same few: checked once.
_knownNick = functools.lru_cache(maxsize=4096)(validNick)
_knownRoom = functools.lru_cache(maxsize=1024)(validRoom)


def _nick(value: Any) -> str:
    if not isinstance(value, str) or not _knownNick(value):
        raise BadEvent(f"{str(value)[:80]!r} is not a nickname")
    return value


def _room(value: Any) -> str:
    if not isinstance(value, str) or not _knownRoom(value):
        raise BadEvent(f"{str(value)[:80]!r} is not a room")
    return value


def _text(value: Any, limit: int = MAX_EVENT_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise BadEvent(f"not a text of at most {limit} characters")
    return clean(value)


_FACE_NAME = re.compile(r"[a-z]{1,16}")
#: What a notice ("n" event) can say, and how many fields each has: (room, what, time, nick, face, ...).
_NOTICE_FIELDS = {"join": 6, "part": 7, "quit": 7, "nick": 8}


def _face(value: Any) -> str:
    if not isinstance(value, str) or not _FACE_NAME.fullmatch(value):
        raise BadEvent(f"{str(value)[:80]!r} is not a face")
    return value


def noticeWire(event: Joined | Parted | Quit | NickChanged) -> list[Any]:
    """A notice of a room as an "n" event on the channel."""
    who = event.who
    if isinstance(event, Joined):
        return ["n", event.room, "join", event.time, who.nick, who.face]
    if isinstance(event, Parted):
        return ["n", event.room, "part", event.time, who.nick, who.face, event.reason]
    if isinstance(event, Quit):
        return ["n", event.room, "quit", event.time, who.nick, who.face, event.reason]
    return ["n", event.room, "nick", event.time, who.nick, who.face, event.nick, event.reason]


def noticeEvent(wire: list[Any]) -> Joined | Parted | Quit | NickChanged:
    """The event of an "n" event that :func:`checkEvent` passed."""
    _, room, what, when, nick, face, *rest = wire
    who = Who(nick, face)
    if what == "join":
        return Joined(room, who, when)
    if what == "part":
        return Parted(room, who, when, rest[0])
    if what == "quit":
        return Quit(room, who, when, rest[0])
    return NickChanged(room, who, rest[0], when, rest[1])


def noticeSubjects(wire: list[Any]) -> list[tuple[str, bool]]:
    """
    The names (casefolded) a checked "n" event is about, each with whether it
    may be free by the time the notice arrives: the sending server must hold
    each, or (where it may be free) nobody may.  A member who joins may have
    left or taken another name before the notice is read (a client that
    sends ``/nick`` as soon as it is in), and a renamed one may have been
    renamed again; what a forger cannot do is speak of a name another server
    holds.
    """
    what = wire[2]
    if what == "nick":  # the old name and the new
        return [(wire[4].casefold(), True), (wire[6].casefold(), True)]
    return [(wire[4].casefold(), True)]


def _exactly(event: list[Any], size: int) -> list[Any]:
    if len(event) != size:
        raise BadEvent(f"a {event[0]!r} event of {len(event)} fields")
    return event


def checkEvent(event: Any) -> list[Any]:
    """``event`` with every field checked and its texts cleaned; BadEvent if it is not one sockproto sends."""
    if not isinstance(event, list) or not event:
        raise BadEvent("an event that is not a list")
    kind = event[0]
    if kind == "m":
        _, room, when, nick, how, text, face = _exactly(event, 7)
        if how not in ("say", "me"):
            raise BadEvent("a message neither said nor acted")
        return ["m", _room(room), _time(when), _nick(nick), how, _text(text), _face(face)]
    if kind == "n":
        what = event[2] if len(event) > 2 else None
        if not isinstance(what, str) or what not in _NOTICE_FIELDS:
            raise BadEvent("a notice that is not one a server sends (join, part, quit, nick)")
        _, room, what, when, nick, face, *rest = _exactly(event, _NOTICE_FIELDS[what])
        checked = ["n", _room(room), what, _time(when), _nick(nick), _face(face)]
        if what == "nick":
            checked.append(_nick(rest.pop(0)))
        checked.extend(_text(reason, MAX_REASON) for reason in rest)
        return checked
    if kind == "p":
        _, node, key, when, sender, text, face = _exactly(event, 7)
        return ["p", _node(node), _nick(key).casefold(), _time(when), _nick(sender), _text(text), _face(face)]
    if kind == "x":
        _, node, key = _exactly(event, 3)
        return ["x", _node(node), _nick(key).casefold()]
    if kind == "r":
        _, room, version = _exactly(event, 3)
        if type(version) is not int or not 1 <= version <= MAX_VERSION:
            raise BadEvent("a room's state of no version")
        return ["r", _room(room), version]
    if kind in _ROOM_CHANGES:
        size = {"t": 6, "o": 7, "k": 7}[kind]
        _, room, when, nick, face, *rest = _exactly(event, size)
        checked = [kind, _room(room), _time(when), _nick(nick), _face(face)]
        if kind == "t":
            checked.append(_text(rest[0], MAX_TOPIC))
        elif kind == "o":
            modes, arguments = rest
            if not isinstance(modes, str) or not _MODES.fullmatch(modes):
                raise BadEvent(f"{str(modes)[:50]!r} is not a change of modes")
            if arguments == {}:  # cjson's empty list
                arguments = []
            if not isinstance(arguments, list) or len(arguments) > MAX_MODE_ARGUMENTS:
                raise BadEvent("a change of modes without its arguments")
            checked += [modes, [_text(argument, MAX_MASK) for argument in arguments]]
        else:
            checked += [_nick(rest[0]), _text(rest[1], MAX_TOPIC)]
        return checked
    if kind == "g":
        _, node, members, reason = _exactly(event, 4)
        if members == {}:  # Lua's cjson writes an empty list as {}
            members = []
        if not isinstance(members, list):
            raise BadEvent("a departure without its list of members")
        left = []
        for pair in members:
            if not isinstance(pair, list) or len(pair) != 2:
                raise BadEvent("a departure whose members are not (nick, room) pairs")
            left.append((_nick(pair[0]), _room(pair[1])))
        return ["g", _node(node), left, _text(reason, 200)]
    raise BadEvent(f"an event of unknown kind {str(kind)[:20]!r}")


def parseBatch(body: bytes) -> tuple[str, float, list[list[Any]]]:
    """The sending server, its time and its events (checked and cleaned) from a message's JSON; else BadEvent."""
    try:
        batch = json.loads(body, parse_constant=_noConstants)
    except RecursionError:  # nested deeper than Python's parser goes: no server sends that
        raise BadEvent("JSON nested too deep") from None
    except (ValueError, TypeError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadEvent(f"not JSON ({str(e)[:80]})") from None
    if not isinstance(batch, dict) or not isinstance(batch.get("e"), list):
        raise BadEvent("not a batch of events")
    sent = batch.get("t") or 0
    return _node(batch.get("n")), _time(sent), [checkEvent(event) for event in batch["e"]]


def parseStreamIds(ids: bytes) -> list[str]:
    if not ids:
        return []
    parts = ids.split(b",")
    if not all(_STREAM_ID.fullmatch(part) for part in parts):
        raise BadEvent("stream ids that are not stream ids")
    return [part.decode() for part in parts]


@implementer(IChatBus)
class RedisChatBus:
    """The hub's link to the other chat servers of a cluster, through Redis."""

    clustered = True
    hub: ChatHub

    def __init__(
        self,
        reactor: IServerReactor,
        address: RedisAddress,
        history: ClusterHistory,
        nodeName: str | None = None,
        prefix: str = "sockproto:",
        secret: bytes | None = None,
        replyTimeout: float = 5.0,
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.history = history
        history.bus = self
        self.node = nodeName or defaultNodeName()
        self.prefix = prefix
        self.channel = (prefix + "events").encode()
        self.token = os.urandom(8).hex()
        #: With a secret (--cluster-secret-file): what this server publishes is
        #: signed, and only what is signed is believed.
        self.secret = secret
        self.link = RedisLink(
            reactor, address, [self.channel], onUp=self._linkUp, onDown=self._linkDown, onMessage=self._message,
            scripts=SCRIPTS, replyTimeout=replyTimeout,
        )
        # What is published must reach Redis by its deadline, a while before the
        # link gives up on an answer (replyTimeout); once the link has given up
        # and the deadline has passed (plus a margin for the clocks), Redis will
        # not publish it any more, and the sender can be told it was lost.
        self.deadline = replyTimeout * 0.6
        self.deadlineMargin = replyTimeout * 0.2
        #: Redis's clock minus this server's, measured at each link, and by how much it may be off.
        self.clockOffset = 0.0
        self.clockError = 0.0
        #: Servers of the cluster (as Redis last said), whose messages are believed.
        self.knownNodes: set[str] = set()
        #: Messages of a server waiting for (or behind one waiting for) a check in Redis.
        self._held: dict[str, deque[list[Any]]] = {}
        self._quietUntil = 0.0
        self._unsaid = 0
        self._lossesLogged = False
        self._droppedBefore = 0
        self.linked = False
        self.stopping = False
        self._wasLinked = False
        #: Until the first link is made, decisions wait for it (at most JOIN_WAIT seconds).
        self.firstLink = FirstLink(reactor, JOIN_WAIT)
        self._batch: list[list[Any]] = []
        self._batchHistory: list[bytes | str] = []
        self._batchSenders: list[Member] = []
        self._flushCall: Any = None
        self._heartbeat: task.LoopingCall | None = None
        #: Joining again once the name held by another server (or this one's last life) is free.
        self._rejoin: Any = None
        self.inFlight = 0
        #: Events published, events heard from other servers, events dropped (link down or Redis too slow).
        self.published = 0
        self.received = 0
        self.dropped = 0
        #: Messages and events from the channel dropped as junk, forged or unconfirmed.
        self.rejected = 0
        self.delay = LatencyHistogram()

    def attach(self, hub: ChatHub) -> None:
        self.hub = hub

    def _sign(self, body: bytes) -> bytes:
        assert self.secret is not None
        return hmac.new(self.secret, body, hashlib.sha256).hexdigest().encode()

    def _signed(self, body: str) -> str:
        """``body`` as published: with a secret, a line with its HMAC-SHA256 (hex) follows it."""
        if self.secret is None:
            return body
        return body + "\n" + self._sign(body.encode()).decode()

    def _deadline(self) -> int:
        """The deadline for what is sent now, in milliseconds of Redis's clock."""
        return int((self.reactor.seconds() + self.clockOffset + self.deadline) * 1000)

    def _lostAfter(self) -> float:
        """When (this server's clock) what is sent now is past its deadline in Redis's, for sure."""
        return self.reactor.seconds() + self.deadline + self.deadlineMargin + self.clockError

    def _run(self, script: Script, *args: Any) -> defer.Deferred[Any]:
        command = self.link.command
        if command is None:
            return defer.fail(ConnectionError("no link to Redis"))
        return script(command, (), (self.prefix, self.node, *args))

    # -- the link ---------------------------------------------------------------

    def start(self) -> None:
        self.link.start()
        self.firstLink.start()

    def _unlinked(self, retry: Any, *args: Any) -> defer.Deferred[Any] | None:
        """
        While the first link is being made, ``retry(*args)`` once it is;
        None once this server has been linked (or gave up waiting): decide locally.
        """
        if not self.firstLink.pending:
            return None
        return self.firstLink.wait().addCallback(lambda _: retry(*args))

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """This server is leaving: the others hear its members left, its names are freed."""
        self.stopping = True
        self.firstLink.open()
        self._cancelRejoin()
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._flush()
        if self.link.command is not None:
            try:
                yield self._run(_REAP, "server stopped", self.node)
            except Exception as e:
                log.warn("cluster: could not sign off from Redis: {reason}", reason=e)
        yield self.link.stop()

    @defer.inlineCallbacks
    def _linkUp(self, link: RedisLink) -> Any:
        try:
            alone = yield self._run(_HEARTBEAT, self.token, int(NODE_TTL * 1000))
            if not int(alone):
                # Another server has this name, or this one's last life (killed,
                # restarted within NODE_TTL): try again once its heartbeat ends.
                # Deciding names alone meanwhile would let two servers grant one.
                left = yield self.link.command.execute_command("PTTL", f"{self.prefix}alive:{self.node}")
                if self._rejoin is None:
                    log.error(
                        "cluster: another server named {node} is running (or this one was, a moment ago); "
                        "joining when its name is free; give this one another --node-name if it is another",
                        node=self.node,
                    )
                if not self.stopping:
                    self._rejoin = self.reactor.callLater(max(int(left), 0) / 1000 + 0.1, self._joinAgain)
                return
            if self._rejoin is not None:
                self._rejoin = None
            before = self.reactor.seconds()
            seconds, micros = yield self.link.command.execute_command("TIME")
            after = self.reactor.seconds()
            self.clockOffset = int(seconds) + int(micros) / 1e6 - (before + after) / 2
            self.clockError = max(0.0, after - before) / 2
            members = self.hub.members()
            claims: list[Any] = []
            for member in members:
                key = member.nick.casefold()
                room = member.room.name if member.room is not None else ""
                claims += [key, member.nick, "1" if key in self.hub.identities else "0", room]
            lost = yield self._run(_REGISTER, *claims)
            self.history.startLoading()
            self.linked = True
            log.info(
                "cluster: {node} joined the chat servers of {address}", node=self.node, address=self.address.display
            )
            if self._heartbeat is None or not self._heartbeat.running:
                self._heartbeat = task.LoopingCall(self._beat)
                self._heartbeat.clock = self.reactor
                self._heartbeat.start(HEARTBEAT_INTERVAL, now=False)
            self._lossesOver()
            if self._wasLinked:
                log.info("cluster: link to Redis restored")
                self.hub.announce(LINK_RESTORED)
            self._wasLinked = True
            for key in lost or []:
                self._takenMeanwhile(key.decode() if isinstance(key, bytes) else key)
            # The rooms' rules before anyone here joins a room.
            yield self._loadRoomStates()
            self.firstLink.open()
            yield self._loadHistory()
        except Exception as e:
            log.error("cluster: could not join through Redis: {reason}", reason=e)
            self.history.stopLoading()

    def _joinAgain(self) -> None:
        if self.link.command is not None and not self.stopping:
            self._linkUp(self.link)

    def _cancelRejoin(self) -> None:
        if self._rejoin is not None and self._rejoin.active():
            self._rejoin.cancel()
        self._rejoin = None

    def _linkDown(self, link: RedisLink) -> None:
        self._cancelRejoin()
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        wasLinked, self.linked = self.linked, False
        if wasLinked and not self.stopping:
            self.hub.announce(LINK_LOST)

    def _beat(self) -> None:
        def checked(alone: Any) -> Any:
            if not int(alone):
                log.error("cluster: another server named {node} is running", node=self.node)
                return None
            if int(alone) == 2 and self.linked and not self.stopping:
                # Taken for dead (a stall longer than the heartbeat's life): claim everything again.
                log.warn("cluster: the others took this server for gone; joining again")
                self._linkUp(self.link)
                return None
            return self._run(_REAP, "server lost").addCallback(known)

        def known(nodes: Any) -> None:
            self.knownNodes = {node.decode("utf-8", "replace") for node in nodes or ()}

        def failed(failure: Any) -> None:
            log.warn("cluster: heartbeat failed: {reason}", reason=failure.value)

        self._run(_HEARTBEAT, self.token, int(NODE_TTL * 1000)).addCallback(checked).addErrback(failed)

    @defer.inlineCallbacks
    def _loadHistory(self) -> Any:
        command = self.link.command
        rooms = yield command.execute_command("SMEMBERS", self.prefix + "histories")
        replies = yield defer.gatherResults([
            command.execute_command("XREVRANGE", f"{self.prefix}history:{room.decode()}", "+", "-",
                                    "COUNT", self.history.keep)
            for room in rooms
        ])
        loaded: dict[str, list[tuple[str, Entry]]] = {}
        for room, reply in zip(rooms, replies, strict=True):
            entries = []
            for streamId, fields in reversed(reply):
                entries.append((streamId.decode(), Entry(*json.loads(fields[1]))))
            loaded[room.decode()] = entries
        self.history.loaded(loaded)

    def _takenMeanwhile(self, key: str) -> None:
        member = self.hub.nicks.get(key)
        if member is None:
            return
        self.hub.tell(member, ServerNotice(
            f"your name {member.nick} was taken on another server while the link was down"
        ))
        self.hub.identities.discard(key)
        self.hub.evict(member)

    # -- decisions --------------------------------------------------------------

    def claimGuest(self, candidate: str, member: Member | None = None) -> defer.Deferred[str]:
        if not self.linked:
            return self._unlinked(self.claimGuest, candidate, member) or defer.succeed(candidate)
        if member is None:
            return self._run(_ENTER, "", "", LOBBY).addCallback(lambda got: got[0].decode())
        room = member.room.name if member.room is not None else ""
        return self._run(_RENAME, member.nick.casefold(), "", "", room).addCallback(lambda nick: nick.decode())

    def claimIdentity(self, member: Member, nick: str) -> defer.Deferred[tuple[bool, str | None]]:
        if not self.linked:
            return self._unlinked(self.claimIdentity, member, nick) or defer.succeed((True, None))

        def claimed(got: Any) -> tuple[bool, str | None]:
            if got is None:
                return (False, None)
            return (True, got[1].decode() or None)

        return self._run(_ENTER, nick.casefold(), nick, LOBBY).addCallback(claimed)

    def claimNick(self, member: Member, nick: str) -> defer.Deferred[bool]:
        if not self.linked:
            return self._unlinked(self.claimNick, member, nick) or defer.succeed(True)
        room = member.room.name if member.room is not None else ""
        d = self._run(_RENAME, member.nick.casefold(), nick.casefold(), nick, room)
        return d.addCallback(lambda got: got is not None)

    def moveTo(self, member: Member, room: str, maxRooms: int) -> defer.Deferred[bool]:
        if not self.linked:
            allowed = room in self.hub.rooms or len(self.hub.rooms) < maxRooms
            return self._unlinked(self.moveTo, member, room, maxRooms) or defer.succeed(allowed)
        old = member.room.name if member.room is not None else ""
        d = self._run(_MOVE, member.nick.casefold(), member.nick, old, room, maxRooms)
        return d.addCallback(lambda allowed: bool(int(allowed)))

    def release(self, member: Member, room: str | None) -> None:
        if not self.linked or self.hub.closing:
            return  # closing: stop() signs the whole server off at once
        self._run(_RELEASE, member.nick.casefold(), room or "").addErrback(
            lambda failure: log.warn("cluster: could not free {nick}: {reason}", nick=member.nick, reason=failure.value)
        )

    def names(self, room: str, local: list[str]) -> defer.Deferred[list[str]]:
        if not self.linked:
            return defer.succeed(local)
        d = self.link.command.execute_command("HVALS", f"{self.prefix}room:{room}")
        return d.addCallback(lambda nicks: [nick.decode() for nick in nicks])

    def roomList(self, local: list[tuple[str, int]]) -> defer.Deferred[list[tuple[str, int]]]:
        if not self.linked:
            return defer.succeed(local)

        def pairs(flat: list[Any]) -> list[tuple[str, int]]:
            return sorted((flat[i].decode(), int(flat[i + 1])) for i in range(0, len(flat), 2))

        return self._run(_ROOMS).addCallback(pairs)

    @defer.inlineCallbacks
    def privateTo(self, member: Member, nick: str, when: float, text: str) -> Any:
        if not self.linked:
            raise ChatError(f"{nick} is not on this server, and the link to the others is down",
                            RefusalCode.NOT_DELIVERED)
        self._flush()  # after what this member said before
        key = nick.casefold()
        # The event names the server that has the nick; it is built (and signed) here, so that is asked first.
        claim = yield self.link.command.execute_command("HGET", self.prefix + "nicks", key)
        if not isinstance(claim, bytes) or b"\t" not in claim:
            return None
        holder = claim.split(b"\t", 1)[0].decode("utf-8", "replace")
        event = ["p", holder, key, when, member.nick, text, faceOf(member).name]
        payload = self._signed(json.dumps({"n": self.node, "t": when, "e": [event]}))
        lostAfter = self._lostAfter()
        try:
            nickThere = yield self._run(_PRIVATE, key, holder, self._deadline(), payload)
        except Exception:
            # As for lines: not reported lost before Redis would refuse it.
            yield task.deferLater(self.reactor, max(0.0, lostAfter - self.reactor.seconds()), lambda: None)
            raise ChatError(f"not delivered to {nick}: the link to the other servers is down",
                            RefusalCode.NOT_DELIVERED) from None
        if nickThere == 0:
            raise ChatError(f"not delivered to {nick}: Redis is too slow", RefusalCode.NOT_DELIVERED)
        if nickThere is None:
            return None
        self.published += 1
        return nickThere.decode()

    # -- lines for the other servers --------------------------------------------

    def said(self, event: Message | Action, sender: Member) -> None:
        if not self.linked:
            self._notShared([["m"]], [sender], "link down")
            return
        how = "me" if isinstance(event, Action) else "say"
        nick = event.sender.nick
        self._batch.append(["m", event.room, event.time, nick, how, event.text, event.sender.face])
        self._batchHistory += (event.room, json.dumps([event.time, nick, how, event.text]))
        self._batchSenders.append(sender)
        self._schedule()

    def noticed(self, event: Joined | Parted | Quit | NickChanged) -> None:
        if not self.linked or self.hub.closing:
            return
        self._batch.append(noticeWire(event))
        self._schedule()

    def roomEvent(self, event: TopicChanged | ModeChanged | Kicked) -> None:
        if not self.linked or self.hub.closing:
            return
        who = event.who
        if isinstance(event, TopicChanged):
            self._batch.append(["t", event.room, event.time, who.nick, who.face, event.topic])
        elif isinstance(event, ModeChanged):
            self._batch.append(["o", event.room, event.time, who.nick, who.face, event.modes, list(event.arguments)])
        else:
            self._batch.append(["k", event.room, event.time, who.nick, who.face, event.nick, event.reason])
        self._schedule()

    def roomChanged(self, room: str, version: int, state: dict[str, Any]) -> defer.Deferred[tuple[bool, int, Any]]:
        if not self.linked:
            return defer.fail(ConnectionError("no link to the other servers"))

        def answered(reply: Any) -> tuple[bool, int, Any]:
            if int(reply[0]) == 1:
                return True, int(reply[1]), None
            current = reply[2].decode() if isinstance(reply[2], bytes) else reply[2]
            return False, int(reply[1]), json.loads(current) if current else None

        return self._run(_ROOMSTATE, room, version, json.dumps(state, separators=(",", ":"))).addCallback(answered)

    def _roomState(self, room: str, force: bool = False) -> defer.Deferred[None]:
        """Read ``room``'s state from Redis, for the hub's rules to take if it is newer than theirs."""
        command = self.link.command
        if command is None:
            return defer.succeed(None)

        def read(value: Any) -> None:
            self._adopt(room, value, force)

        return command.execute_command("HGET", self.prefix + "roomstates", room).addCallback(read)

    def _adopt(self, room: str, value: Any, force: bool) -> None:
        if not value:
            return
        version, _, state = value.decode("utf-8", "replace").partition("\t")
        if not version.isdecimal():
            raise BadEvent(f"the state of {room} in Redis has no version")
        try:
            data = json.loads(state) if state else None
        except ValueError:
            raise BadEvent(f"the state of {room} in Redis is not JSON") from None
        self.hub.rules.adopt(room, int(version), data, force)

    @defer.inlineCallbacks
    def _loadRoomStates(self) -> Any:
        """Every room's state, as Redis has it (at each link: what changed while this server was away)."""
        flat = yield self.link.command.execute_command("HGETALL", self.prefix + "roomstates")
        for room, value in zip(flat[::2], flat[1::2], strict=True):
            name = room.decode("utf-8", "replace")
            try:
                if validRoom(name):
                    self._adopt(name, value, True)
            except BadEvent as e:
                self._complain("cluster: a room's state in Redis is not used: {reason}", reason=str(e))

    def _schedule(self) -> None:
        if self._flushCall is None:
            # One script call for everything said in this reactor turn.
            self._flushCall = self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        if self._flushCall is not None:
            if self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
        batch, self._batch = self._batch, []
        history, self._batchHistory = self._batchHistory, []
        senders, self._batchSenders = self._batchSenders, []
        if not batch:
            return
        if not self.linked or self.inFlight + len(batch) > MAX_IN_FLIGHT:
            self._notShared(batch, senders, "link down" if not self.linked else "Redis too slow")
            return
        payload = self._signed(json.dumps({"n": self.node, "t": self.reactor.seconds(), "e": batch}))
        self.inFlight += len(batch)
        self.published += len(batch)
        deadline = self._deadline()
        lostAfter = self._lostAfter()

        def done(result: Any) -> Any:
            self.inFlight -= len(batch)
            return result

        def published(result: Any) -> None:
            if result is None:  # Redis had it after its deadline, and did not publish it
                self.published -= len(batch)
                self._notShared(batch, senders, "Redis too slow")
            else:
                self._lossesOver()

        def failed(failure: Any) -> None:
            # No answer: Redis may still have the script, and run it later, but
            # not after its deadline: the senders are told once that has passed.
            self.published -= len(batch)
            wait = lostAfter - self.reactor.seconds()
            if wait > 0:
                self.reactor.callLater(wait, self._notShared, batch, senders, str(failure.value))
            else:
                self._notShared(batch, senders, str(failure.value))

        d = self._run(_PUBLISH, STREAM_LENGTH, deadline, payload, *history)
        d.addBoth(done).addCallbacks(published, failed)

    def _lossesOver(self) -> None:
        if self._lossesLogged:
            log.info("cluster: events are reaching the other servers again; {count} did not",
                     count=self.dropped - self._droppedBefore)
            self._lossesLogged = False

    def _notShared(self, batch: list[list[Any]], senders: list[Member], why: str) -> None:
        if not self._lossesLogged:  # once per outage; the next success says how many
            self._lossesLogged = True
            self._droppedBefore = self.dropped
            log.warn("cluster: events not sent to the other servers ({why}); their senders are told", why=why)
        self.dropped += len(batch)
        for sender in dict.fromkeys(senders):
            if sender in self.hub.present:
                self.hub.tell(sender, ServerNotice(NOT_SHARED))

    # -- what the others say ----------------------------------------------------
    #
    # Anyone who may publish on the channel can send anything: every message
    # is checked field by field and its text cleaned as local input is; what
    # fails is dropped (one log line per COMPLAINT_INTERVAL), never fatal.

    def _message(self, channel: bytes, data: bytes) -> None:
        try:
            self._receive(data)
        except BadEvent as e:
            self._complain("cluster: dropped a message from the channel: {reason}", reason=str(e))
        except Exception as e:  # a bug, not junk: the link must survive it all the same
            self._complain("cluster: could not handle a message from the channel: {reason!r}", reason=e)

    def _receive(self, data: bytes) -> None:
        ids, _, rest = data.partition(b"\n")
        body, signed, signature = rest.partition(b"\n")
        if self.secret is not None and signed:
            if not hmac.compare_digest(signature, self._sign(body)):
                raise BadEvent("its signature does not match --cluster-secret-file")
        elif signed:
            raise BadEvent("it is signed, and this server has no --cluster-secret-file")
        origin, sent, events = parseBatch(body)
        streamIds = parseStreamIds(ids)
        if self.secret is not None and not signed and any(event[0] not in _CHECKED_IN_REDIS for event in events):
            raise BadEvent(f"it is not signed, and says more than Redis's scripts say (from {origin!r})")
        questions: list[tuple[str, bool]] = []  # (nick, may be free by now) its server must hold
        if origin != self.node:
            if origin not in self.knownNodes:
                questions.append(("", False))
            if self.secret is None:  # (signed: its server vouches for it)
                questions += [subject for event in events if event[0] == "n" for subject in noticeSubjects(event)]
                questions += [(event[3].casefold(), True) for event in events if event[0] in _ROOM_CHANGES]
        # A room's state that changed is read from Redis before anything that
        # server said after it is delivered (its announcement of the change).
        rooms = [event[1] for event in events if event[0] == "r"] if origin != self.node else []
        if questions or rooms or origin in self._held:
            self._hold(origin, (sent, events, streamIds), questions, rooms)
        else:
            self._deliver(origin, sent, events, streamIds)

    def _hold(
        self, origin: str, message: tuple[Any, ...], questions: list[tuple[str, bool]], rooms: list[str] | None = None
    ) -> None:
        """
        A message to check in Redis first: that its server is one of the
        cluster, that the members its notices are about are that server's.
        Later messages of that server wait behind it, in order.
        """
        command = self.link.command
        queue = self._held.get(origin)
        if queue is None:
            if len(self._held) >= MAX_UNVERIFIED:
                raise BadEvent("too many servers' messages are being checked")
            queue = self._held[origin] = deque()
        if len(queue) >= MAX_UNVERIFIED:
            raise BadEvent(f"{origin!r} sends too much while its messages are checked")
        rooms = rooms or []
        if (questions or rooms) and command is None:
            raise BadEvent(f"cannot check a message from {origin!r} without the link")
        entry: list[Any] = [message, None]  # None until checked; then "" (believed) or why not
        queue.append(entry)
        if not questions and not rooms:
            entry[1] = ""
            self._drain(origin)
            return

        def asked(nick: str, mayBeFree: bool) -> defer.Deferred[str]:
            if not nick:
                d = command.execute_command("SISMEMBER", self.prefix + "nodes", origin)
                return d.addCallback(lambda member: "" if int(member) else f"{origin!r} is not a server of the cluster")

            def holder(claim: Any) -> str:
                held = claim.split(b"\t", 1)[0].decode("utf-8", "replace") if isinstance(claim, bytes) else None
                if held == origin or held is None and mayBeFree:
                    return ""
                return f"{origin!r} sent a notice about {nick}, who is not its member"

            return command.execute_command("HGET", self.prefix + "nicks", nick).addCallback(holder)

        def decided(reasons: list[str]) -> None:
            if questions and not reasons[0] and origin not in self.knownNodes and questions[0][0] == "":
                self.knownNodes.add(origin)
            entry[1] = next((reason for reason in reasons if reason), "")
            self._drain(origin)

        def failed(failure: Any) -> None:
            if failure.check(defer.FirstError):
                failure = failure.value.subFailure
            entry[1] = f"it could not be checked in Redis ({failure.value})"
            self._drain(origin)

        checks = [asked(nick, mayBeFree) for nick, mayBeFree in questions]
        checks += [self._roomState(room).addCallback(lambda _: "") for room in rooms]
        d = defer.gatherResults(checks, consumeErrors=True)
        d.addCallbacks(decided, failed).addErrback(
            lambda failure: self._complain("cluster: could not handle a message from {origin}: {reason!r}",
                                           origin=origin, reason=failure.value)
        )

    def _drain(self, origin: str) -> None:
        """Deliver (or drop) the held messages of ``origin`` that are checked, in order, up to the first that is not."""
        queue = self._held.get(origin)
        while queue and queue[0][1] is not None:
            (sent, events, streamIds), verdict = queue.popleft()
            if verdict:
                self._complain("cluster: dropped a message from the channel: {reason}", reason=verdict)
            else:
                self._deliver(origin, sent, events, streamIds)
        if not queue:
            self._held.pop(origin, None)

    def _deliver(self, origin: str, sent: float, events: list[list[Any]], streamIds: list[str]) -> None:
        mine = origin == self.node
        if not mine and sent:
            self.delay.observe(max(0.0, self.reactor.seconds() - sent))
        ids = iter(streamIds)
        for event in events:
            try:
                self._event(origin, event, mine, ids)
            except Exception as e:  # one event's trouble is not the others'
                self._complain("cluster: could not handle an event from {origin}: {reason!r}", origin=origin, reason=e)

    def _event(self, origin: str, event: list[Any], mine: bool, streamIds: Any) -> None:
        hub = self.hub
        kind = event[0]
        if kind == "g":  # from whichever server noticed, this one included: Redis has the facts
            self._gone(event[1], event[2], event[3])
        elif kind == "m":
            _, room, when, nick, how, text, face = event
            self.history.arrived(room, next(streamIds, ""), Entry(when, nick, how, text))
            if not mine:
                said = Action if how == "me" else Message
                hub.remoteEvent(room, said(room, Who(nick, face), text, when))
        elif mine:
            return
        elif kind == "r":
            pass  # read from Redis (and taken) before this message was delivered
        elif kind in _ROOM_CHANGES:
            _, room, when, nick, face, *rest = event
            actor = Who(nick, face)
            if kind == "t":
                hub.remoteEvent(room, TopicChanged(room, actor, rest[0], when))
            elif kind == "o":
                hub.remoteEvent(room, ModeChanged(room, actor, rest[0], tuple(rest[1]), when))
            else:
                hub.rules.remoteKick(Kicked(room, actor, rest[0], when, rest[1]))
        elif kind == "n":
            hub.remoteEvent(event[1], noticeEvent(event))
        elif kind == "p" and event[1] == self.node:
            hub.remotePrivate(event[2], Who(event[4], event[6]), event[3], event[5])
        elif kind == "x" and event[1] == self.node:
            self._giveUp(origin, event[2])
        else:
            return
        self.received += 1

    def _giveUp(self, origin: str, key: str) -> None:
        """Another server's verified user has the name a guest here holds: once Redis confirms it, the guest yields."""
        squatter = self.hub.nicks.get(key)
        command = self.link.command
        if squatter is None or key in self.hub.identities or command is None:
            return

        def check(claim: Any) -> None:
            parts = claim.split(b"\t") if isinstance(claim, bytes) else []
            if len(parts) != 3 or parts[0] != origin.encode() or parts[2] != b"1":
                self._complain("cluster: ignored {origin}'s claim of {key}, which Redis does not confirm",
                               origin=origin, key=key)
                return
            if self.hub.nicks.get(key) is squatter and key not in self.hub.identities:
                self.hub.evict(squatter)

        command.execute_command("HGET", self.prefix + "nicks", key).addCallback(check).addErrback(
            lambda failure: self._complain("cluster: could not check a claim of {key}: {reason}",
                                                  key=key, reason=failure.value)
        )

    def _gone(self, node: str, members: list[tuple[str, str]], reason: str) -> None:
        """A server is gone, if Redis says its heartbeat is."""
        command = self.link.command
        if command is None:
            return
        if node == self.node:
            # Taken for gone?  The heartbeat, which Redis answers, tells (and then joins again).
            if self.linked and not self.stopping:
                self._beat()
            return

        def check(heartbeat: Any) -> None:
            if heartbeat is not None:
                self._complain("cluster: ignored news that {node} is gone: its heartbeat is alive", node=node)
                return
            self.knownNodes.discard(node)
            now = self.reactor.seconds()
            for nick, room in members:
                self.hub.remoteEvent(room, Quit(room, Who(nick), now, reason))

        command.execute_command("GET", f"{self.prefix}alive:{node}").addCallback(check).addErrback(
            lambda failure: self._complain("cluster: could not check that {node} is gone: {reason}",
                                                  node=node, reason=failure.value)
        )

    def _complain(self, format: str, rejected: int = 1, **fields: Any) -> None:
        """
        A log line about trouble from the channel (``rejected`` messages or
        events dropped), at most one per COMPLAINT_INTERVAL; the rest are counted.
        """
        self.rejected += rejected
        now = self.reactor.seconds()
        if now < self._quietUntil:
            self._unsaid += 1
            return
        if self._unsaid:
            format += " (and {unsaid} more such line not logged)" if self._unsaid == 1 else \
                " (and {unsaid} more such lines not logged)"
            fields["unsaid"] = self._unsaid
        self._unsaid = 0
        self._quietUntil = now + COMPLAINT_INTERVAL
        log.warn(format, **fields)

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "linked": int(self.linked),
            "reconnects": max(0, self.link.connects - 1),
            "published": self.published,
            "received": self.received,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "delay": (self.delay.cumulative(), self.delay.sum),
        }
