# -*- test-case-name: tests.test_chat,tests.test_chat_cluster,tests.test_chat_crowd -*-
"""The chat itself: members, nicknames, rooms, history and fair fan-out.

Nothing here knows about sockets.  A member is anything with a ``nick``, a
``room``, a ``send(bytes)`` and a ``face`` (:class:`sockproto.chat.events.IChatFace`;
the line face if it has none).  The hub says what happened with the events of
:mod:`sockproto.chat.events`: each event of a room goes into the room's batch,
and at the end of the reactor turn each face renders each event of the batch
once, and every member is written one buffer holding all it should see (its
own messages left out).  Anything addressed to a single member first flushes
that member's room, so each member sees events in the order the hub handled
them.

Members of most faces are in one room at a time (``member.room``): ``/join``
moves them.  A member of a face that keeps several rooms (IRC's channels)
joins more with :meth:`ChatHub.joinAlso` and leaves one with
:meth:`ChatHub.part`; ``member.room`` is then the first of them, the others
are in ``ChatHub.extraRooms``, and a quit or a nick change is told once to
everyone who shares a room with it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from sockproto.chat.bus import IChatBus, LocalBus
from sockproto.chat.events import (
    Action,
    ChatEvent,
    IChatFace,
    Joined,
    Kicked,
    Message,
    NickChanged,
    Notice,
    Parted,
    PrivateMessage,
    PrivateNotice,
    Quit,
    RefusalCode,
    ServerNotice,
    Who,
    membershipChanged,
)
from sockproto.chat.events import (
    History as HistoryEvent,
)
from sockproto.chat.history import HISTORY_MAX, History
from sockproto.chat.model import ChatError, Member, Room, entryEvent, faceOf, who
from sockproto.chat.moderation import OPEN_ROOMS, RoomRules
from sockproto.chat.text import NICK_RULE, validNick, validRoom

log = Logger()

LOBBY = "#lobby"
HISTORY_DEFAULT = 20
#: Rooms of at most this many members hear who joins, leaves and changes name;
#: bigger ones do not (IRC's auditorium mode, Twitch and Discord): each arrival
#: would cost a notice to everyone there (docs/scaling.rst).
ANNOUNCE_JOINS_DEFAULT = 100
#: The kinds of those announcements (events.Joined, Parted, Quit, NickChanged).
ANNOUNCEMENTS = frozenset({Joined.kind, Parted.kind, Quit.kind, NickChanged.kind})


def settled(d: defer.Deferred[Any]) -> defer.Deferred[Any]:
    """
    ``d``, except that a refusal already known (a bus that answers at once,
    like :class:`LocalBus`) is raised here: a server alone answers as it
    always did, synchronously.
    """
    outcome: list[Any] = []

    def note(result: Any) -> Any:
        outcome.append(result)
        return result

    d.addBoth(note)
    if outcome and isinstance(outcome[0], Failure) and outcome[0].check(ChatError):
        d.addErrback(lambda failure: None)
        raise outcome[0].value
    return d


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
        bus: IChatBus | None = None,
        announceJoinsUpTo: int = ANNOUNCE_JOINS_DEFAULT,
    ) -> None:
        self.clock = clock
        self.announceJoinsUpTo = announceJoinsUpTo
        self.history = history
        self.maxRooms = maxRooms
        self.historyOnJoin = historyOnJoin
        self.rooms: dict[str, Room] = {}
        self.nicks: dict[str, Member] = {}  # casefolded nick -> member
        self.present: dict[Member, None] = {}  # members who entered and have not left
        self.identities: set[str] = set()  # casefolded names of verified users online
        #: The rooms a member is in besides ``member.room`` (only members that
        #: used joinAlso; none for the line and web faces).
        self.extraRooms: dict[Member, dict[Room, None]] = {}
        # New guests are numbered after those in the history that can be
        # replayed: after a restart, a new guest1 is not taken for the old one.
        self._guests = history.highestGuest()
        self._dirty: list[Room] = []
        self._flushCall: Any = None
        #: Lines users said (to a room, /me or /msg).
        self.messages = 0
        #: Room lines (messages and notices) and private messages written to members.
        self.deliveries = 0
        self.closing = False
        self.bus: IChatBus = bus if bus is not None else LocalBus()
        self.bus.attach(self)
        #: Who may join and speak where (rooms with owners: sockproto.chat.moderator).
        self.rules: RoomRules = OPEN_ROOMS

    # -- arriving and leaving -------------------------------------------------

    def enter(self, member: Member, identity: str | None = None,
              greeting: ChatEvent | None = None, lobby: bool = True) -> defer.Deferred[None]:
        """
        Let a member in: as ``identity`` (a logged-in user or a certificate's
        name, which no one else may hold, on any server), or as a new
        ``guest<N>``.  Fires once the member is in (at once on a server alone).
        ``greeting`` is sent to the member just before it is let in, and
        only if it is: one who loses a race for its name hears only the refusal.
        ``lobby``: the member starts in the lobby (else in no room, as an
        IRC client does until its first ``JOIN``).
        """
        if identity is None:
            return settled(self.bus.claimGuest(self._guestNick()).addCallback(
                lambda nick: self._admit(member, nick, lobby)))
        if not validNick(identity):
            raise ChatError(f"{identity!r} cannot be a nickname ({NICK_RULE})", RefusalCode.BAD_NICK)
        key = identity.casefold()
        if key in self.identities:
            raise ChatError(f"{identity} is already connected", RefusalCode.NICK_IN_USE)

        def claimed(outcome: tuple[bool, str | None]) -> None:
            free, squatterNick = outcome
            if not free or key in self.identities:
                raise ChatError(f"{identity} is already connected", RefusalCode.NICK_IN_USE)
            squatter = self.nicks.get(key)
            if squatter is not None:
                if squatterNick is not None:
                    self._rename(squatter, squatterNick, "name reserved")
                else:
                    self.evict(squatter)
            self.identities.add(key)
            if greeting is not None:
                member.send(faceOf(member).render(greeting, member))
            self._admit(member, identity, lobby)

        return settled(self.bus.claimIdentity(member, identity).addCallback(claimed))

    def _admit(self, member: Member, nick: str, lobby: bool = True) -> None:
        member.nick = nick
        member.room = None
        key = nick.casefold()
        # A name already folded (every guest's) is its own key: one string fewer a member.
        self.nicks[nick if key == nick else key] = member
        self.present[member] = None
        if lobby:
            self._join(member, self._room(LOBBY))

    def evict(self, squatter: Member) -> None:
        """A guest holds a verified user's name: the user wins, the guest gets a new name."""
        key = squatter.nick.casefold()
        if self.nicks.get(key) is squatter:
            del self.nicks[key]

        def renamed(nick: str) -> None:
            if squatter in self.present:
                self._rename(squatter, nick, "name reserved")

        self.bus.claimGuest(self._guestNick(), squatter).addCallback(renamed)

    def leave(self, member: Member, reason: str) -> None:
        """A member is gone (quit, closed or dropped)."""
        if member not in self.present:
            return  # never entered (e.g. did not log in)
        del self.present[member]
        key = member.nick.casefold()
        if self.nicks.get(key) is member:
            del self.nicks[key]
            self.identities.discard(key)
        room = member.room
        if member in self.extraRooms:
            self._leaveRooms(member, reason)
        elif room is not None:
            self._flushRoom(room)
            room.remove(member)
            member.room = None
            self.rules.left(member, room)
            # When everyone is leaving, no notices; nor in a big room.
            if not self.closing and self.announces(room, len(room.members) + 1):
                self._notice(room, Quit(room.name, who(member), self.clock.seconds(), reason))
            self._forget(room)
        self.rules.gone(member)
        self.bus.release(member, room.name if room is not None else None)

    def _leaveRooms(self, member: Member, reason: str) -> None:
        """A member in several rooms is gone: everyone who shared one with it is told once."""
        rooms = self.roomsOf(member)
        del self.extraRooms[member]
        for room in rooms:
            room.remove(member)
            self.rules.left(member, room)
        member.room = None
        if not self.closing:  # nor in big rooms
            now = self.clock.seconds()
            self._noticeOnce([room for room in rooms if self.announces(room, len(room.members) + 1)],
                             lambda name: Quit(name, who(member), now, reason))
        for room in rooms:
            self._forget(room)

    def _guestNick(self) -> str:
        while True:
            self._guests += 1
            nick = f"guest{self._guests}"
            if nick not in self.nicks and nick not in self.identities:
                return nick

    # -- messages -------------------------------------------------------------

    def say(self, member: Member, text: str, room: str | None = None) -> None:
        """
        A message to the member's room (or to ``room``, one of its rooms);
        everyone else there gets it at the end of the turn.
        """
        self._speak(member, Message, "say", text, room)

    def act(self, member: Member, text: str, room: str | None = None) -> None:
        """``/me text``."""
        self._speak(member, Action, "me", text, room)

    def notice(self, member: Member, text: str, room: str | None = None) -> None:
        """A notice (IRC's ``NOTICE``): a message no program may answer; kept in the history as one."""
        self._speak(member, Notice, "say", text, room)

    def _speak(self, member: Member, event: type[Message | Action | Notice], kind: str, text: str,
               name: str | None = None) -> None:
        room = member.room if name is None else self.inRoom(member, name)
        if room is None:
            raise ChatError("you are not in a room", RefusalCode.NOT_IN_ROOM)
        self.rules.checkSpeak(member, room)
        now = self.clock.seconds()
        said = event(room.name, who(member), text, now)
        self._post(room, said, member)
        self.history.record(room.name, now, member.nick, kind, text)
        self.bus.said(said, member)
        self.messages += 1

    def privateMessage(self, member: Member, nick: str, text: str, notice: bool = False) -> defer.Deferred[None]:
        """
        ``/msg``: to a member here at once, else through the bus to whichever
        server has ``nick``.  ``notice``: a private notice (IRC's ``NOTICE``;
        a plain message once it crosses to another server).
        """
        now = self.clock.seconds()
        sender = who(member)
        target = self.nicks.get(nick.casefold())
        if target is not None:
            event = PrivateNotice if notice else PrivateMessage
            self.tell(target, event(sender, target.nick, text, now))
            self.tell(member, event(sender, target.nick, text, now, echo=True))
            self.messages += 1
            self.deliveries += 1
            return defer.succeed(None)

        def sent(holder: str | None) -> None:
            if holder is None:
                raise ChatError(f"no such nickname: {nick}", RefusalCode.NO_SUCH_NICK)
            if member in self.present:
                self.tell(member, PrivateMessage(sender, holder, text, now, echo=True))
            self.messages += 1

        return settled(self.bus.privateTo(member, nick, now, text).addCallback(sent))

    def tell(self, member: Member, event: ChatEvent) -> None:
        """Tell one member something of its own, in order with what its rooms saw before."""
        if member.room is not None and member.room.batch:
            self._flushRoom(member.room)
        if self.extraRooms:
            for room in self.extraRooms.get(member, ()):
                if room.batch:
                    self._flushRoom(room)
        member.send(faceOf(member).render(event, member))

    # -- nicknames and rooms --------------------------------------------------

    def changeNick(self, member: Member, nick: str) -> defer.Deferred[None]:
        if not validNick(nick):
            raise ChatError(f"bad nickname {nick!r}: use {NICK_RULE}", RefusalCode.BAD_NICK)
        if member.nick.casefold() in self.identities:
            raise ChatError("your nickname is your verified name and cannot change", RefusalCode.NICK_FIXED)
        key = nick.casefold()
        holder = self.nicks.get(key)
        if holder is member:
            if nick == member.nick:
                return defer.succeed(None)
        elif holder is not None or key in self.identities:
            raise ChatError(f"nickname {nick} is taken", RefusalCode.NICK_IN_USE)

        def claimed(free: bool) -> None:
            holder = self.nicks.get(key)
            if not free or holder not in (None, member):
                raise ChatError(f"nickname {nick} is taken", RefusalCode.NICK_IN_USE)
            if member in self.present:
                self._rename(member, nick, "")

        return settled(self.bus.claimNick(member, nick).addCallback(claimed))

    def _rename(self, member: Member, nick: str, reason: str) -> None:
        old = who(member)
        if self.nicks.get(old.nick.casefold()) is member:
            del self.nicks[old.nick.casefold()]
        self.nicks[nick.casefold()] = member
        member.nick = nick
        self.rules.renamed(member, old.nick)
        room = member.room
        if member in self.extraRooms:
            now = self.clock.seconds()
            rooms = self.roomsOf(member)
            told = self._noticeOnce([each for each in rooms if self.announces(each, len(each.members))],
                                    lambda name: NickChanged(name, old, nick, now, reason))
            if member not in told:  # only big rooms: the member alone
                self.tell(member, NickChanged(rooms[0].name, old, nick, now, reason))
            return
        event = NickChanged(room.name if room is not None else None, old, nick, self.clock.seconds(), reason)
        if room is not None and self.announces(room, len(room.members)):
            self._flushRoom(room)
            self._notice(room, event)
        else:
            self.tell(member, event)  # in a big room, to the member alone

    def join(self, member: Member, name: str, key: str | None = None,
             departure: Parted | Kicked | None = None) -> defer.Deferred[None]:
        """
        ``member`` leaves its room for ``name`` (with ``key``, for a room
        that asks for one).  ``departure`` is what its old room is told
        (a part with a reason, a kick), when the server moves it to the
        lobby: the rooms' rules are not asked then.
        """
        if not validRoom(name):
            raise ChatError(f"bad room name {name!r}: use # and 1 to 32 of a-z 0-9 _ -", RefusalCode.BAD_ROOM)
        old = member.room
        if old is not None and old.name == name:
            raise ChatError(f"you are already in {name}", RefusalCode.ALREADY_IN_ROOM)
        if departure is None:
            self.rules.checkJoin(member, name, key)

        def moved(allowed: bool) -> None:
            if not allowed:
                raise ChatError("too many rooms; join an existing one", RefusalCode.TOO_MANY_ROOMS)
            if member not in self.present or member.room is not old:
                return  # gone, or moved meanwhile
            if old is not None:
                self._flushRoom(old)
                old.remove(member)
                member.room = None
                self.rules.left(member, old)
                if isinstance(departure, Kicked):
                    self._post(old, departure)  # a kick is told, whatever the room's size
                elif self.announces(old, len(old.members) + 1):
                    self._notice(old, departure or Parted(old.name, who(member), self.clock.seconds()))
                self._forget(old)
            self._join(member, self._room(name))

        return settled(self.bus.moveTo(member, name, self.maxRooms).addCallback(moved))

    def _join(self, member: Member, room: Room) -> None:
        self._flushRoom(room)  # what was said before is not for the newcomer
        room.add(member)
        member.room = room
        event = Joined(room.name, who(member), self.clock.seconds())
        if self.announces(room, len(room.members)):
            self._notice(room, event)
        else:
            self.tell(member, event)  # the newcomer alone: it learns its name and room
        self.rules.joined(member, room)
        self.replay(member, self.historyOnJoin, quiet=True)

    # -- several rooms at once (IRC) ---------------------------------------------

    def roomsOf(self, member: Member) -> list[Room]:
        """Every room ``member`` is in: ``member.room`` first, then the others in the order joined."""
        rooms = [member.room] if member.room is not None else []
        rooms.extend(self.extraRooms.get(member, ()))
        return rooms

    def inRoom(self, member: Member, name: str) -> Room | None:
        """``member``'s room called ``name``, or None if it is not in it."""
        room = self.rooms.get(name)
        if room is None or member not in room.members:
            return None
        return room

    def joinAlso(self, member: Member, name: str, history: bool = True, key: str | None = None) -> defer.Deferred[None]:
        """
        ``member`` enters ``name`` and stays in its other rooms (IRC's
        ``JOIN``); the first room it enters is its ``room``.  ``history``:
        the room's recent messages are replayed to it (else the face does it
        when it likes).
        """
        if not validRoom(name):
            raise ChatError(f"bad room name {name!r}: use # and 1 to 32 of a-z 0-9 _ -", RefusalCode.BAD_ROOM)
        if self.inRoom(member, name) is not None:
            raise ChatError(f"you are already in {name}", RefusalCode.ALREADY_IN_ROOM)
        self.rules.checkJoin(member, name, key)
        if member.room is None:
            allowed = self.bus.moveTo(member, name, self.maxRooms)
        else:
            # The cluster knows a member's first room only: the others count on this server.
            allowed = defer.succeed(name in self.rooms or len(self.rooms) < self.maxRooms)

        def entered(allowed: bool) -> None:
            if not allowed:
                raise ChatError("too many rooms; join an existing one", RefusalCode.TOO_MANY_ROOMS)
            if member not in self.present or self.inRoom(member, name) is not None:
                return  # gone, or there meanwhile
            room = self._room(name)
            self._flushRoom(room)  # what was said before is not for the newcomer
            room.add(member)
            if member.room is None:
                member.room = room
            else:
                self.extraRooms.setdefault(member, {})[room] = None
            event = Joined(room.name, who(member), self.clock.seconds())
            if self.announces(room, len(room.members)):
                self._notice(room, event)
            else:
                self.tell(member, event)  # the newcomer alone
            self.rules.joined(member, room)
            if history:
                self.replay(member, self.historyOnJoin, quiet=True, name=name)

        return settled(allowed.addCallback(entered))

    def part(self, member: Member, name: str, reason: str = "", kick: Kicked | None = None) -> None:
        """
        ``member`` leaves ``name`` and stays in its other rooms (IRC's
        ``PART``); leaving its ``room``, the next room it joined becomes its
        ``room`` (or none).  With ``kick``, it was kicked out: the room and
        the member are told that instead.
        """
        room = self.inRoom(member, name)
        if room is None:
            raise ChatError(f"you are not in {name}", RefusalCode.NOT_IN_ROOM)
        self._flushRoom(room)
        room.remove(member)
        self.rules.left(member, room)
        extra = self.extraRooms.get(member)
        if room is member.room:
            if extra:
                first = next(iter(extra))
                # The cluster knows a member in its room only: it is told of the new one.
                self.bus.moveTo(member, first.name, self.maxRooms).addErrback(
                    lambda failure: log.warn("cluster: {nick} not shown in {room}: {reason}",
                                             nick=member.nick, room=first.name, reason=failure.value))
                del extra[first]
                member.room = first
            else:
                member.room = None
        elif extra is not None:
            del extra[room]
        if extra is not None and not extra:
            del self.extraRooms[member]
        if kick is not None:
            self._post(room, kick)  # a kick is told, whatever the room's size
            self.tell(member, kick)
            self._forget(room)
            return
        event = Parted(room.name, who(member), self.clock.seconds(), reason)
        if self.announces(room, len(room.members) + 1):
            self._notice(room, event)
        self.tell(member, event)  # the member hears its own leaving, as IRC wants
        self._forget(room)

    def announces(self, room: Room, size: int) -> bool:
        """
        Whether a room of ``size`` members (counting the one who comes or
        goes) hears who joins, leaves and changes name: only up to
        ``announceJoinsUpTo``, so that an arrival costs the same in a room of
        ten thousand as in a room of ten.  Member lists are on request there.
        """
        return size <= self.announceJoinsUpTo

    def _room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, self.clock.seconds())
        return room

    def _forget(self, room: Room) -> None:
        if not room.members and room.name != LOBBY:
            self._flushRoom(room)
            self.rooms.pop(room.name, None)
            self.rules.forget(room.name)

    def roomList(self) -> list[tuple[str, int]]:
        """This server's rooms and how many of its members are in each."""
        return sorted((room.name, len(room.members)) for room in self.rooms.values())

    def names(self, member: Member, name: str | None = None) -> list[str]:
        """The nicks of this server's members in ``member``'s room (or in the room ``name``)."""
        room = member.room if name is None else self.rooms.get(name)
        return sorted((m.nick for m in room.members), key=str.casefold) if room else []

    def whenRooms(self) -> defer.Deferred[list[tuple[str, int]]]:
        """Every room of the chat (of every server) and how many are in each."""
        return self.bus.roomList(self.roomList())

    def whenNames(self, member: Member, name: str | None = None) -> defer.Deferred[list[str]]:
        """Everyone in ``member``'s room (or in the room ``name``), on every server."""
        local = self.names(member, name)
        if name is None:
            if member.room is None:
                return defer.succeed(local)
            name = member.room.name
        return self.bus.names(name, local).addCallback(lambda names: sorted(names, key=str.casefold))

    def replay(self, member: Member, count: int, quiet: bool = False, name: str | None = None) -> None:
        """Send a member the last ``count`` messages of its room (or of ``name``, one of its rooms)."""
        room = member.room if name is None else self.inRoom(member, name)
        if room is None:
            raise ChatError("you are not in a room", RefusalCode.NOT_IN_ROOM)
        entries = self.history.recent(room.name, min(count, HISTORY_MAX))
        if not entries and quiet:
            return
        self.tell(member, HistoryEvent(room.name, tuple(entryEvent(room.name, entry) for entry in entries)))

    def announce(self, text: str) -> None:
        """A notice to everyone (e.g. the server going down), written at once."""
        event = ServerNotice(text)
        rendered: dict[IChatFace, bytes] = {}
        self.flush()
        for member in list(self.present):
            face = faceOf(member)
            data = rendered.get(face)
            if data is None:
                data = rendered[face] = face.render(event, None)
            member.send(data)

    def shutdown(self, text: str) -> None:
        """The server is going down: tell everyone, and spare them the leave notices that follow."""
        self.announce(text)
        self.closing = True

    # -- from other servers ---------------------------------------------------

    def remoteEvent(self, room: str, event: ChatEvent) -> None:
        """An event of ``room`` on another server (a message, a join...), for this server's members there."""
        local = self.rooms.get(room)
        if local is not None and local.members:
            # Comings and goings elsewhere are shown only where this server
            # shows its own: a room big here is told of no arrival, wherever
            # the newcomer came in.
            if event.kind in ANNOUNCEMENTS and not self.announces(local, len(local.members)):
                return
            self._post(local, event)

    def remotePrivate(self, key: str, sender: Who, when: float, text: str) -> bool:
        """A private message from another server's member; False if ``key`` is not here (any more)."""
        target = self.nicks.get(key)
        if target is None:
            return False
        self.tell(target, PrivateMessage(sender, target.nick, text, when))
        self.deliveries += 1
        return True

    def roomEvent(self, room: Room, event: ChatEvent) -> None:
        """A change of ``room`` itself (its topic, its modes), for everyone in it."""
        self._post(room, event)

    def members(self) -> list[Member]:
        return list(self.present)

    # -- fan-out --------------------------------------------------------------

    def _notice(self, room: Room, event: Joined | Parted | Quit | NickChanged) -> None:
        """A notice to everyone in ``room``, here and on the other servers."""
        self._post(room, event)
        self.bus.noticed(event)

    def _noticeOnce(self, rooms: list[Room], eventFor: Any) -> set[Member]:
        """
        A quit or nick change of a member of several ``rooms``: each member
        who shares one or more of them with it is told once (in the first
        shared room's terms), here and through the bus, after what was said
        before.  Returns who was told.
        """
        self.flush()
        told: set[Member] = set()
        for room in rooms:
            event = eventFor(room.name)
            self.bus.noticed(event)
            for face, members in list(room.faces.items()):
                data = None
                for recipient in list(members):
                    if recipient in told:
                        continue
                    told.add(recipient)
                    if data is None:
                        data = face.render(event, None)
                    recipient.send(data)
                face.membersChanged(room.name, members)
        return told

    def _post(self, room: Room, event: ChatEvent, sender: Member | None = None) -> None:
        room.batch.append(event)
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
        speakers = set(senders)
        count = len(batch)
        changed = membershipChanged(batch)
        delivered = 0
        for face, members in list(room.faces.items()):
            # Each event rendered once for this face; the same bytes go to every member of it here.
            render = face.render
            if count == 1:
                rendered = [render(batch[0], None)]
                everything = rendered[0]
            else:
                rendered = [render(event, None) for event in batch]
                everything = b"".join(rendered)
            for member in list(members):
                if member in speakers:
                    own = senders.count(member)
                    if own == count:
                        continue
                    member.send(b"".join([d for d, s in zip(rendered, senders, strict=True) if s is not member]))
                    delivered += count - own
                else:
                    member.send(everything)
                    delivered += count
            if changed:
                face.membersChanged(room.name, members)
        self.deliveries += delivered

    def stats(self) -> dict[str, int]:
        return {
            "members": len(self.present),
            "rooms": len(self.rooms),
            "messages": self.messages,
            "deliveries": self.deliveries,
        }
