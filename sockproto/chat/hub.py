"""The chat itself: members, nicknames, rooms, history and fair fan-out.

Nothing here knows about sockets.  A member is anything with a ``nick``, a
``room`` and a ``send(bytes)``; the hub formats each message once, appends it
to its room's batch, and at the end of the reactor turn writes every member
one buffer holding all it should see (its own messages left out).  Anything
addressed to a single member first flushes that member's room, so each
member sees events in the order the hub handled them.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from sockproto.chat.history import Entry, History
from sockproto.chat.text import Stamper, validNick, validRoom

LOBBY = "#lobby"
HISTORY_DEFAULT = 20
HISTORY_MAX = 500


class ChatError(Exception):
    """A request the hub refuses; its message is shown to the member after ``"!!! "``."""


class Member(Protocol):
    nick: str
    room: Room | None

    def send(self, data: bytes) -> None: ...


class Room:
    __slots__ = ("name", "members", "batch", "batchSenders", "dirty")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[Member, None] = {}  # insertion-ordered set
        self.batch: list[bytes] = []
        self.batchSenders: list[Member | None] = []
        self.dirty = False


class ChatHub:
    """
    All the chat's state and rules.

    ``clock`` gives the time and schedules the end-of-turn flush.
    """

    def __init__(
        self,
        clock: IReactorTime,
        history: History,
        maxRooms: int = 1000,
        historyOnJoin: int = HISTORY_DEFAULT,
    ) -> None:
        self.clock = clock
        self.history = history
        self.maxRooms = maxRooms
        self.historyOnJoin = historyOnJoin
        self.stamp = Stamper()
        self.rooms: dict[str, Room] = {}
        self.nicks: dict[str, Member] = {}  # casefolded nick -> member
        self.identities: set[str] = set()  # casefolded names of verified users online
        self._guests = 0
        self._dirty: list[Room] = []
        self._flushCall: Any = None
        #: Lines users said (to a room, /me or /msg).
        self.messages = 0
        #: Room lines (messages and notices) and private messages written to members.
        self.deliveries = 0
        self.closing = False

    # -- arriving and leaving -------------------------------------------------

    def enter(self, member: Member, identity: str | None = None) -> None:
        """
        Let a member in: as ``identity`` (a logged-in user or a certificate's
        name, which no one else may hold), or as a new ``guest<N>``.
        """
        if identity is not None:
            if not validNick(identity):
                raise ChatError(f"{identity!r} cannot be a nickname (1-24 of A-Z a-z 0-9 _ -)")
            key = identity.casefold()
            if key in self.identities:
                raise ChatError(f"{identity} is already connected")
            squatter = self.nicks.get(key)
            if squatter is not None:
                # A guest holds a verified user's name: the user wins.
                self._rename(squatter, self._guestNick(), "(name reserved)")
            self.identities.add(key)
            nick = identity
        else:
            nick = self._guestNick()
        member.nick = nick
        member.room = None
        self.nicks[nick.casefold()] = member
        self._join(member, self._room(LOBBY))

    def leave(self, member: Member, reason: str) -> None:
        """A member is gone (quit, closed or dropped)."""
        key = member.nick.casefold()
        if self.nicks.get(key) is not member:
            return  # never entered (e.g. did not log in)
        del self.nicks[key]
        self.identities.discard(key)
        room = member.room
        if room is not None:
            self._flushRoom(room)
            room.members.pop(member, None)
            member.room = None
            if not self.closing:  # when everyone is leaving, no notices
                self._post(room, f"*** {member.nick} left {room.name} ({reason})\n".encode())
            self._forget(room)

    def _guestNick(self) -> str:
        while True:
            self._guests += 1
            nick = f"guest{self._guests}"
            if nick not in self.nicks and nick not in self.identities:
                return nick

    # -- messages -------------------------------------------------------------

    def say(self, member: Member, text: str) -> None:
        """A message to the member's room; everyone else there gets it at the end of the turn."""
        self._speak(member, "say", text)

    def act(self, member: Member, text: str) -> None:
        """``/me text``."""
        self._speak(member, "me", text)

    def _speak(self, member: Member, kind: str, text: str) -> None:
        room = member.room
        if room is None:
            raise ChatError("you are not in a room")
        entry = Entry(self.clock.seconds(), member.nick, kind, text)
        self._post(room, self.formatEntry(entry).encode(), member)
        self.history.record(room.name, *entry)
        self.messages += 1

    def privateMessage(self, member: Member, nick: str, text: str) -> None:
        target = self.nicks.get(nick.casefold())
        if target is None:
            raise ChatError(f"no such nickname: {nick}")
        stamp = self.stamp(self.clock.seconds())
        self.tell(target, f"{stamp}*{member.nick}* {text}\n")
        self.tell(member, f"{stamp}-> *{target.nick}* {text}\n")
        self.messages += 1
        self.deliveries += 1

    def tell(self, member: Member, text: str) -> None:
        """Send one member something of its own, in order with what its room saw before."""
        if member.room is not None and member.room.batch:
            self._flushRoom(member.room)
        member.send(text.encode())

    # -- nicknames and rooms --------------------------------------------------

    def changeNick(self, member: Member, nick: str) -> None:
        if not validNick(nick):
            raise ChatError(f"bad nickname {nick!r}: use 1 to 24 of A-Z a-z 0-9 _ -")
        if member.nick.casefold() in self.identities:
            raise ChatError("your nickname is your verified name and cannot change")
        key = nick.casefold()
        holder = self.nicks.get(key)
        if holder is member:
            if nick == member.nick:
                return
        elif holder is not None or key in self.identities:
            raise ChatError(f"nickname {nick} is taken")
        self._rename(member, nick, "")

    def _rename(self, member: Member, nick: str, note: str) -> None:
        old = member.nick
        del self.nicks[old.casefold()]
        self.nicks[nick.casefold()] = member
        member.nick = nick
        notice = f"*** {old} is now known as {nick}{' ' + note if note else ''}\n".encode()
        if member.room is not None:
            self._flushRoom(member.room)
            self._post(member.room, notice)
        else:
            member.send(notice)

    def join(self, member: Member, name: str) -> None:
        if not validRoom(name):
            raise ChatError(f"bad room name {name!r}: use # and 1 to 32 of a-z 0-9 _ -")
        old = member.room
        if old is not None and old.name == name:
            raise ChatError(f"you are already in {name}")
        if name not in self.rooms and len(self.rooms) >= self.maxRooms:
            raise ChatError("too many rooms; join an existing one")
        if old is not None:
            self._flushRoom(old)
            del old.members[member]
            member.room = None
            self._post(old, f"*** {member.nick} left {old.name}\n".encode())
            self._forget(old)
        self._join(member, self._room(name))

    def _join(self, member: Member, room: Room) -> None:
        self._flushRoom(room)  # what was said before is not for the newcomer
        room.members[member] = None
        member.room = room
        self._post(room, f"*** {member.nick} joined {room.name}\n".encode())
        self.replay(member, self.historyOnJoin, quiet=True)

    def _room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
        return room

    def _forget(self, room: Room) -> None:
        if not room.members and room.name != LOBBY:
            self._flushRoom(room)
            self.rooms.pop(room.name, None)

    def roomList(self) -> list[tuple[str, int]]:
        return sorted((room.name, len(room.members)) for room in self.rooms.values())

    def names(self, member: Member) -> list[str]:
        room = member.room
        return sorted((m.nick for m in room.members), key=str.casefold) if room else []

    def replay(self, member: Member, count: int, quiet: bool = False) -> None:
        """Send a member the last ``count`` messages of its room."""
        room = member.room
        if room is None:
            raise ChatError("you are not in a room")
        entries = self.history.recent(room.name, min(count, HISTORY_MAX))
        if not entries:
            if not quiet:
                self.tell(member, f"*** no messages in {room.name} yet\n")
            return
        lines = [f"*** last {len(entries)} messages in {room.name}:\n"]
        lines.extend(self.formatEntry(entry) for entry in entries)
        lines.append(f"*** end of history of {room.name}\n")
        self.tell(member, "".join(lines))

    def formatEntry(self, entry: Entry) -> str:
        stamp = self.stamp(entry.time)
        if entry.kind == "me":
            return f"{stamp}* {entry.nick} {entry.text}\n"
        return f"{stamp}<{entry.nick}> {entry.text}\n"

    def announce(self, text: str) -> None:
        """A notice to everyone (e.g. the server going down), written at once."""
        data = f"*** {text}\n".encode()
        self.flush()
        for member in list(self.nicks.values()):
            member.send(data)

    def shutdown(self, text: str) -> None:
        """The server is going down: tell everyone, and spare them the leave notices that follow."""
        self.announce(text)
        self.closing = True

    # -- fan-out --------------------------------------------------------------

    def _post(self, room: Room, data: bytes, sender: Member | None = None) -> None:
        room.batch.append(data)
        room.batchSenders.append(sender)
        if not room.dirty:
            room.dirty = True
            self._dirty.append(room)
            if self._flushCall is None:
                # At the end of this reactor turn: all lines of all senders
                # read in this turn go out in one write per member.
                self._flushCall = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Write every room's pending batch (called at the end of a reactor turn)."""
        if self._flushCall is not None:
            if self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
        dirty, self._dirty = self._dirty, []
        for room in dirty:
            self._flushRoom(room)

    def _flushRoom(self, room: Room) -> None:
        batch = room.batch
        room.dirty = False
        if not batch:
            return
        senders = room.batchSenders
        room.batch = []
        room.batchSenders = []
        everything = b"".join(batch) if len(batch) > 1 else batch[0]
        speakers = set(senders)
        count = len(batch)
        delivered = 0
        for member in list(room.members):
            if member in speakers:
                own = senders.count(member)
                if own == count:
                    continue
                member.send(b"".join([d for d, s in zip(batch, senders, strict=True) if s is not member]))
                delivered += count - own
            else:
                member.send(everything)
                delivered += count
        self.deliveries += delivered

    def stats(self) -> dict[str, int]:
        return {
            "members": len(self.nicks),
            "rooms": len(self.rooms),
            "messages": self.messages,
            "deliveries": self.deliveries,
        }
