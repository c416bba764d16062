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

import json
import os
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from sockproto.chat.bus import IChatBus
from sockproto.chat.history import Entry
from sockproto.chat.hub import HISTORY_MAX, LOBBY, ChatError
from sockproto.chat.text import counted
from sockproto.server.latency import LatencyHistogram
from sockproto.server.redis import FirstLink, RedisAddress, RedisLink, Script

if TYPE_CHECKING:
    from sockproto.chat.hub import ChatHub, Member

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

NOT_SHARED = "*** not delivered to other servers: the link to them is down\n"
LINK_LOST = "*** link to the other servers lost; messages reach this server only"
LINK_RESTORED = "*** link restored"


def defaultNodeName() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# Helpers shared by the scripts.  ARGV[1] is the key prefix, ARGV[2] this
# server's name.  Hashes: nicks (casefolded nick -> "node<TAB>nick<TAB>0|1",
# 1 for a verified name), room:<room> ("node<TAB>key" -> nick), node:<node>
# (key -> room); sets: rooms, nodes, histories.
_LIBRARY = """
local P, node = ARGV[1], ARGV[2]
local LOBBY = 'LOBBY_NAME'
local function holder(key)
  local v = redis.call('HGET', P .. 'nicks', key)
  if not v then return nil end
  local n, nick, flag = string.match(v, '^(.-)\\t(.-)\\t(.*)$')
  return n, nick, flag
end
local function place(n, key, nick, room)
  redis.call('HSET', P .. 'node:' .. n, key, room)
  redis.call('HSET', P .. 'room:' .. room, n .. '\\t' .. key, nick)
  redis.call('SADD', P .. 'rooms', room)
end
local function unplace(n, key, room)
  if room == nil or room == '' then return end
  redis.call('HDEL', P .. 'room:' .. room, n .. '\\t' .. key)
  if room ~= LOBBY and redis.call('HLEN', P .. 'room:' .. room) == 0 then
    redis.call('SREM', P .. 'rooms', room)
  end
end
local function guest()
  while true do
    local nick = 'guest' .. redis.call('INCR', P .. 'guests')
    if redis.call('HSETNX', P .. 'nicks', nick, node .. '\\t' .. nick .. '\\t0') == 1 then return nick end
  end
end
local function publish(events)
  redis.call('PUBLISH', P .. 'events', '\\n' .. cjson.encode({n = node, t = 0, e = events}))
end
""".replace("LOBBY_NAME", LOBBY)

# ARGV: prefix, node, key, nick ('' for a guest), room.  Returns {nick, new
# name of this server's guest that held the name, or ''}, or nil when a
# verified user holds the name already.
_ENTER = Script(_LIBRARY + """
local key, nick, room = ARGV[3], ARGV[4], ARGV[5]
local moved = ''
if nick == '' then
  nick = guest()
  key = nick
else
  local n, _, flag = holder(key)
  if n then
    if flag == '1' then return nil end
    -- A guest holds a verified name: the name goes to its user, the guest gets a new one.
    if n ~= node then
      publish({{'x', n, key}})
    else
      moved = guest()
      local was = redis.call('HGET', P .. 'node:' .. node, key)
      redis.call('HDEL', P .. 'node:' .. node, key)
      if was then
        unplace(node, key, was)
        place(node, moved, moved, was)
      end
    end
  end
  redis.call('HSET', P .. 'nicks', key, node .. '\\t' .. nick .. '\\t1')
end
place(node, key, nick, room)
return {nick, moved}
""")

# ARGV: prefix, node, old key, new key, new nick ('' for a new guest name), room.  Returns the nick or nil.
_RENAME = Script(_LIBRARY + """
local old, key, nick, room = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if nick == '' then
  nick = guest()
  key = nick
else
  local n = holder(key)
  if n and (key ~= old or n ~= node) then return nil end
  redis.call('HSET', P .. 'nicks', key, node .. '\\t' .. nick .. '\\t0')
end
if key ~= old then
  if holder(old) == node then redis.call('HDEL', P .. 'nicks', old) end
  redis.call('HDEL', P .. 'node:' .. node, old)
end
unplace(node, old, room)
if room ~= '' then place(node, key, nick, room) end
return nick
""")

# ARGV: prefix, node, key, nick, old room, new room, most rooms.  Returns 1, or 0 for too many rooms.
_MOVE = Script(_LIBRARY + """
local key, nick, old, new = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('SISMEMBER', P .. 'rooms', new) == 0 and redis.call('SCARD', P .. 'rooms') >= tonumber(ARGV[7]) then
  return 0
end
unplace(node, key, old)
place(node, key, nick, new)
return 1
""")

# ARGV: prefix, node, key, room.
_RELEASE = Script(_LIBRARY + """
local key, room = ARGV[3], ARGV[4]
if holder(key) == node then redis.call('HDEL', P .. 'nicks', key) end
redis.call('HDEL', P .. 'node:' .. node, key)
unplace(node, key, room)
return 1
""")

# ARGV: prefix, node, stream length, payload, then (room, entry) pairs: each
# entry goes into its room's stream, and the payload is published with their
# stream ids in front, in the same atomic step.
_PUBLISH = Script(_LIBRARY + """
local ids = {}
for i = 5, #ARGV, 2 do
  ids[#ids + 1] = redis.call('XADD', P .. 'history:' .. ARGV[i], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[i + 1])
  redis.call('SADD', P .. 'histories', ARGV[i])
end
return redis.call('PUBLISH', P .. 'events', table.concat(ids, ',') .. '\\n' .. ARGV[4])
""")

# ARGV: prefix, node, key, time, sender, text.  Returns the holder's nick, or nil.
_PRIVATE = Script(_LIBRARY + """
local n, nick = holder(ARGV[3])
if not n then return nil end
local when = tonumber(ARGV[4])
redis.call('PUBLISH', P .. 'events',
  '\\n' .. cjson.encode({n = node, t = when, e = {{'p', n, ARGV[3], when, ARGV[5], ARGV[6]}}}))
return nick
""")

# ARGV: prefix, node, token, ttl in ms.  Returns 0 when another live server has this name.
_HEARTBEAT = Script(_LIBRARY + """
local current = redis.call('GET', P .. 'alive:' .. node)
if current and current ~= ARGV[3] then return 0 end
redis.call('SET', P .. 'alive:' .. node, ARGV[3], 'PX', ARGV[4])
redis.call('SADD', P .. 'nodes', node)
return 1
""")

# ARGV: prefix, node, reason, and optionally one server's name: that server
# (else every server whose heartbeat has expired) is removed, and a 'g'
# event tells the others who left.  Returns how many servers were removed.
_REAP = Script(_LIBRARY + """
local gone = {}
if ARGV[4] then
  gone = {ARGV[4]}
  redis.call('DEL', P .. 'alive:' .. ARGV[4])
else
  for _, n in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
    if redis.call('EXISTS', P .. 'alive:' .. n) == 0 then gone[#gone + 1] = n end
  end
end
for _, n in ipairs(gone) do
  local members = {}
  local placed = redis.call('HGETALL', P .. 'node:' .. n)
  for i = 1, #placed, 2 do
    local key, room = placed[i], placed[i + 1]
    local h, nick = holder(key)
    if h == n then redis.call('HDEL', P .. 'nicks', key) end
    nick = redis.call('HGET', P .. 'room:' .. room, n .. '\\t' .. key) or nick or key
    unplace(n, key, room)
    members[#members + 1] = {nick, room}
  end
  redis.call('DEL', P .. 'node:' .. n)
  redis.call('SREM', P .. 'nodes', n)
  publish({{'g', n, members, ARGV[3]}})
end
return #gone
""")

# ARGV: prefix, node, then (key, nick, flag, room) for every member here:
# after a lost link, this server's names and places are claimed again.
# Returns the keys another server took meanwhile.
_REGISTER = Script(_LIBRARY + """
local placed = redis.call('HGETALL', P .. 'node:' .. node)
for i = 1, #placed, 2 do
  if holder(placed[i]) == node then redis.call('HDEL', P .. 'nicks', placed[i]) end
  unplace(node, placed[i], placed[i + 1])
end
redis.call('DEL', P .. 'node:' .. node)
local lost = {}
for i = 3, #ARGV, 4 do
  local key, nick, flag, room = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if holder(key) then
    lost[#lost + 1] = key
  else
    redis.call('HSET', P .. 'nicks', key, node .. '\\t' .. nick .. '\\t' .. flag)
    if room ~= '' then place(node, key, nick, room) end
  end
end
return lost
""")

_ROOMS = Script(_LIBRARY + """
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', P .. 'rooms')) do
  out[#out + 1] = room
  out[#out + 1] = redis.call('HLEN', P .. 'room:' .. room)
end
return out
""")


SCRIPTS = (_ENTER, _RENAME, _MOVE, _RELEASE, _PUBLISH, _PRIVATE, _HEARTBEAT, _REAP, _REGISTER, _ROOMS)


def _streamOrder(streamId: str) -> tuple[int, int]:
    ms, _, seq = streamId.partition("-")
    return int(ms), int(seq or 0)


class ClusterHistory:
    """
    Recent messages of every room, in the order of the rooms' Redis streams.

    The bus fills it: at start (and after a lost link) from the streams, then
    with every message published, this server's included, as it comes back
    from Redis.  A message said while the link is down is kept here only.
    """

    bus: RedisChatBus | None = None

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
            if entries and entries[-1][0] and _streamOrder(entries[-1][0]) >= _streamOrder(streamId):
                continue  # the stream had it
            self._append(room, streamId, entry)


@implementer(IChatBus)
class RedisChatBus:
    """The hub's link to the other chat servers of a cluster, through Redis."""

    clustered = True
    hub: ChatHub

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        history: ClusterHistory,
        nodeName: str | None = None,
        prefix: str = "sockproto:",
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.history = history
        history.bus = self
        self.node = nodeName or defaultNodeName()
        self.prefix = prefix
        self.channel = (prefix + "events").encode()
        self.token = os.urandom(8).hex()
        self.link = RedisLink(
            reactor, address, [self.channel], onUp=self._linkUp, onDown=self._linkDown, onMessage=self._message,
            scripts=SCRIPTS,
        )
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
        self.delay = LatencyHistogram()

    def attach(self, hub: ChatHub) -> None:
        self.hub = hub

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
            if self._wasLinked:
                log.info("cluster: link to Redis restored")
                self.hub.announce(LINK_RESTORED.removeprefix("*** "))
            self._wasLinked = True
            for key in lost or []:
                self._takenMeanwhile(key.decode() if isinstance(key, bytes) else key)
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
            self.hub.announce(LINK_LOST.removeprefix("*** "))

    def _beat(self) -> None:
        def checked(alone: Any) -> Any:
            if not int(alone):
                log.error("cluster: another server named {node} is running", node=self.node)
                return None
            return self._run(_REAP, "server lost")

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
        self.hub.tell(member, f"*** your name {member.nick} was taken on another server while the link was down\n")
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

    def privateTo(self, member: Member, nick: str, when: float, text: str) -> defer.Deferred[str | None]:
        if not self.linked:
            return defer.fail(ChatError(f"{nick} is not on this server, and the link to the others is down"))
        self._flush()  # after what this member said before
        d = self._run(_PRIVATE, nick.casefold(), repr(when), member.nick, text)
        self.published += 1
        return d.addCallback(lambda holder: holder.decode() if holder is not None else None)

    # -- lines for the other servers --------------------------------------------

    def said(self, room: str, entry: Entry, sender: Member) -> None:
        if not self.linked:
            self.dropped += 1
            self.hub.tell(sender, NOT_SHARED)
            return
        self._batch.append(["m", room, *entry])
        self._batchHistory += (room, json.dumps(entry))
        self._batchSenders.append(sender)
        self._schedule()

    def noticed(self, room: str, text: str) -> None:
        if not self.linked or self.hub.closing:
            return
        self._batch.append(["n", room, text])
        self._schedule()

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
        payload = json.dumps({"n": self.node, "t": self.reactor.seconds(), "e": batch})
        self.inFlight += len(batch)
        self.published += len(batch)

        def done(result: Any) -> Any:
            self.inFlight -= len(batch)
            return result

        def failed(failure: Any) -> None:
            self.published -= len(batch)
            self._notShared(batch, senders, str(failure.value))

        self._run(_PUBLISH, STREAM_LENGTH, payload, *history).addBoth(done).addErrback(failed)

    def _notShared(self, batch: list[list[Any]], senders: list[Member], why: str) -> None:
        self.dropped += len(batch)
        log.warn("cluster: {events} not sent to other servers ({why})", events=counted(len(batch), "event"), why=why)
        for sender in dict.fromkeys(senders):
            if sender in self.hub.present:
                self.hub.tell(sender, NOT_SHARED)

    # -- what the others say ----------------------------------------------------

    def _message(self, channel: bytes, data: bytes) -> None:
        ids, _, body = data.partition(b"\n")
        try:
            batch = json.loads(body)
            origin = batch["n"]
            events = batch["e"]
            sent = float(batch.get("t") or 0)
            streamIds = iter(ids.decode().split(",")) if ids else iter(())
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warn("cluster: ignoring a message that is not sockproto's on {channel}", channel=channel)
            return
        mine = origin == self.node
        if not mine and sent:
            self.delay.observe(max(0.0, self.reactor.seconds() - sent))
        for event in events if isinstance(events, list) else ():
            try:
                self._event(event, mine, streamIds)
            except (IndexError, TypeError, ValueError, KeyError) as e:
                # Anyone who can publish on the channel can send junk: it is dropped, not fatal.
                log.warn("cluster: ignoring a malformed event from {origin}: {reason}", origin=origin, reason=e)

    def _event(self, event: list[Any], mine: bool, streamIds: Any) -> None:
        hub = self.hub
        kind = event[0]
        if kind == "g":  # from whichever server noticed, this one included
            self._gone(str(event[1]), event[2], str(event[3]))
        elif kind == "m":
            entry = Entry(float(event[2]), str(event[3]), str(event[4]), str(event[5]))
            self.history.arrived(str(event[1]), next(streamIds, ""), entry)
            if not mine:
                hub.remoteEntry(str(event[1]), entry)
        elif mine:
            return
        elif kind == "n":
            hub.remoteNotice(str(event[1]), str(event[2]))
        elif kind == "p" and event[1] == self.node:
            hub.remotePrivate(str(event[2]), float(event[3]), str(event[4]), str(event[5]))
        elif kind == "x" and event[1] == self.node:
            squatter = hub.nicks.get(event[2])
            if squatter is not None and event[2] not in hub.identities:
                hub.evict(squatter)
        else:
            return
        self.received += 1

    def _gone(self, node: str, members: Any, reason: str) -> None:
        if node == self.node:
            if not self.stopping and self.linked:
                # Taken for dead (a stall longer than the heartbeat's life): claim everything again.
                log.warn("cluster: the others took this server for gone; joining again")
                self._linkUp(self.link)
            return
        for nick, room in members if isinstance(members, list) else ():
            self.hub.remoteNotice(room, f"*** {nick} left {room} ({reason})\n")

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "linked": int(self.linked),
            "reconnects": max(0, self.link.connects - 1),
            "published": self.published,
            "received": self.received,
            "dropped": self.dropped,
            "delay": (self.delay.cumulative(), self.delay.sum),
        }
