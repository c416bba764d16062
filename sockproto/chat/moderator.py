# -*- test-case-name: tests.test_chat_moderation_line -*-
"""
The hub's moderator: applies the rules of rooms with owners
(:mod:`sockproto.chat.moderation`) to the hub's members, and carries out the
moderation commands (``/topic``, ``/kick``, ``/mode``, ``/invite``,
``/names``, ``/whois``, ``/away``) for every face.

The hub asks it at a few points (may this member join, may it speak; it
joined, left, changed its nick; a room is gone) and it answers by raising
:class:`ChatError` (one refusal line) or by telling members events.  It keeps
the state of the rooms that exist, and of the rooms worth remembering once
empty (a topic, modes, bans, verified owners), in the history database when
there is one, so they outlive restarts.

Every change of a room goes through the hub's bus (``roomChanged``): a
server alone makes it at once; a cluster makes it in Redis only if the
room's state is still the version this server knows, and the other servers
take the new state from there (:mod:`sockproto.chat.cluster`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from sockproto.chat.events import (
    AwaySet,
    BanEntry,
    BanList,
    Invited,
    Kicked,
    MemberList,
    Membership,
    ModeIs,
    Parted,
    Refusal,
    RefusalCode,
    TopicIs,
    Who,
    WhoisReply,
)
from sockproto.chat.hub import LOBBY, ChatError, ChatHub, Member, Room, faceOf, settled, who
from sockproto.chat.moderation import MAX_TOPIC, Actor, Problem, RoomState
from sockproto.chat.text import clean, validRoom

log = Logger()

#: Longest away message kept.
MAX_AWAY = 200
#: Most empty rooms whose state is remembered (a topic, modes, bans, owners); past it, the longest empty is forgotten.
MAX_KEPT_ROOMS = 10_000


def _error(text: str, code: RefusalCode = RefusalCode.GENERAL) -> ChatError:
    """The hub's refusal for ``text`` (a :class:`Problem` brings its own code)."""
    return ChatError(text, text.code if isinstance(text, Problem) else code)


class Moderator:
    """
    Room states and the moderation commands, for one hub.

    :ivar serverOperators: casefolded names that are operators of every room
        when a member holds them as its verified name (``--operator``).
    :ivar states: the state of each room that has one (existing rooms, and
        empty rooms worth remembering).
    :ivar away: the away message of each member that set one.
    """

    def __init__(
        self,
        hub: ChatHub,
        serverOperators: Iterable[str] = (),
        store: Callable[[str, dict[str, Any] | None], None] | None = None,
    ) -> None:
        self.hub = hub
        hub.rules = self
        self.serverOperators: frozenset[str] = frozenset(name.casefold() for name in serverOperators)
        self.states: dict[str, RoomState] = {}
        #: The version of each room's state this server has (a cluster's Redis decides it; alone: counted here).
        self.versions: dict[str, int] = {}
        #: The rooms in ``states`` that have no members (kept for what they remember), longest empty first.
        self.kept: dict[str, None] = {}
        self.maxKeptRooms = MAX_KEPT_ROOMS
        self.away: dict[Member, str] = {}
        #: Keeps a room's state where it outlives the server (``store(name, state)``; ``None`` forgets it).
        self.store = store

    # -- who is what ------------------------------------------------------------------

    def actor(self, member: Member) -> Actor:
        key = member.nick.casefold()
        verified = key in self.hub.identities and self.hub.nicks.get(key) is member
        return Actor(who(member), verified, verified and key in self.serverOperators)

    def state(self, name: str) -> RoomState:
        state = self.states.get(name)
        if state is None:
            state = self.states[name] = RoomState(name)
        return state

    def _keep(self, name: str) -> None:
        """Room ``name`` is empty but worth remembering: within the bound, forgetting the longest empty."""
        self.kept.pop(name, None)
        self.kept[name] = None
        while len(self.kept) > self.maxKeptRooms:
            oldest = next(iter(self.kept))
            del self.kept[oldest]
            del self.states[oldest]
            if self.store is not None:
                self.store(oldest, None)

    def loadStored(self, stored: dict[str, Any]) -> None:
        """The rooms' states kept from before a restart (:meth:`RoomState.toDict` objects); bad ones are skipped."""
        for name, data in stored.items():
            if not validRoom(name):
                continue
            try:
                self.states[name] = RoomState.fromDict(name, data)
            except ValueError as e:
                log.warn("chat: the stored state of {room} is not used: {error}", room=name, error=str(e))
                continue
            if name not in self.hub.rooms:
                self._keep(name)

    def _save(self, state: RoomState) -> None:
        if self.store is not None:
            self.store(state.name, state.toDict() if state.worthKeeping else None)

    def _install(self, name: str, version: int, state: RoomState) -> None:
        """``state``, as of ``version``, is room ``name``'s now."""
        self.versions[name] = version
        self.states[name] = state
        self._save(state)
        if name not in self.hub.rooms:
            if not state.blank:
                self._keep(name)
            else:
                self.kept.pop(name, None)
                del self.states[name]

    def adopt(self, name: str, version: int, data: Any, force: bool = False) -> None:
        """
        Room ``name``'s state as the cluster decided it (``data``: a
        :meth:`RoomState.toDict` with guests, or ``None``: nothing), if newer
        than this server's (or whatever it is, with ``force``).
        """
        if not force and version <= self.versions.get(name, 0):
            return
        try:
            state = RoomState(name) if data is None else RoomState.fromDict(name, data)
        except ValueError as e:
            log.warn("chat: the state of {room} from the cluster is not used: {error}", room=name, error=str(e))
            return
        self._install(name, version, state)

    def _commit(self, name: str, changed: RoomState) -> defer.Deferred[bool]:
        """
        Make ``changed`` room ``name``'s state, everywhere (alone: at once):
        fires True when it is, False when another server changed it first
        (its state is this server's then).
        """
        version = self.versions.get(name, 0)
        previous = self.states.get(name)
        # Taken here at once, so that the next change (a command right after
        # a join) builds on it; Redis runs this server's scripts in order.
        self._install(name, version + 1, changed)

        def decided(outcome: tuple[bool, int, Any]) -> bool:
            made, newVersion, current = outcome
            if not made:
                self.adopt(name, newVersion, current, force=True)
            return made

        def failed(failure: Any) -> Any:
            if self.versions.get(name) == version + 1 and self.states.get(name) is changed:
                # Not made (no link): as it was, at the version it was.
                self.versions[name] = version
                if previous is not None:
                    self.states[name] = previous
            return failure

        return self.hub.bus.roomChanged(name, version, changed.toDict(guests=True)).addCallbacks(decided, failed)

    def _update(self, name: str, change: Callable[[RoomState], bool], tries: int = 3) -> None:
        """
        A change nobody asked for (a room's creator, a guest leaving, a nick
        change), made everywhere, tried again on the newer state when another
        server changed the room first; without a link to the cluster, made here.
        """
        state = self.states.get(name)
        if state is None:
            return
        changed = state.copy()
        if not change(changed):
            return

        def decided(made: bool) -> None:
            if not made and tries > 1:
                self._update(name, change, tries - 1)

        def failed(failure: Any) -> None:
            self._install(name, self.versions.get(name, 0), changed)  # the cluster's state wins when the link is back

        self._commit(name, changed).addCallbacks(decided, failed)

    def _command(self, name: str, changed: RoomState, announced: list[Any]) -> defer.Deferred[None]:
        """A member's change of a room: made everywhere, then announced; refused when it cannot be made."""

        def decided(made: bool) -> None:
            if not made:
                raise _error(f"{name} was changed meanwhile on another server: try again", RefusalCode.UNAVAILABLE)
            room = self.hub.rooms.get(name)
            for event in announced:
                if room is not None:
                    self.hub.roomEvent(room, event)
                self.hub.bus.roomEvent(event)

        def failed(failure: Any) -> None:
            if failure.check(ChatError):
                failure.raiseException()
            raise _error(f"{name} cannot be changed now: {failure.getErrorMessage()}", RefusalCode.UNAVAILABLE)

        return settled(self._commit(name, changed).addCallback(decided).addErrback(failed))

    def membership(self, state: RoomState, member: Member) -> Membership:
        actor = self.actor(member)
        return Membership(member.nick, state.isOperator(actor), state.isVoiced(actor))

    def memberships(self, name: str, nicks: Iterable[str]) -> tuple[Membership, ...]:
        """``nicks`` (the members of room ``name``, on every server) with their statuses there."""
        state = self.states.get(name)
        if state is None:
            return tuple(Membership(nick) for nick in nicks)
        listed = []
        marked = (state.operators, state.voiced, self.serverOperators)
        for nick in nicks:
            key = nick.casefold()
            if not any(key in names for names in marked):  # most members of a big room: nothing to look up
                listed.append(Membership(nick))
                continue
            member = self.hub.nicks.get(key)
            # A member of another server: its status as the room records it (its face is not known here).
            actor = self.actor(member) if member is not None else Actor(Who(nick), verified=True)
            listed.append(Membership(nick, state.isOperator(actor), state.isVoiced(actor)))
        return tuple(listed)

    def topicOf(self, name: str) -> str:
        state = self.states.get(name)
        return state.topic.text if state is not None and state.topic is not None else ""

    # -- asked by the hub -----------------------------------------------------------------

    def checkJoin(self, member: Member, name: str, key: str | None) -> None:
        """Raise the refusal if ``member`` may not go into ``name`` (a ban, +i, +k, +l)."""
        state = self.states.get(name)
        if state is None:
            return
        room = self.hub.rooms.get(name)
        problem = state.mayJoin(self.actor(member), key, len(room.members) if room is not None else 0)
        if problem is not None:
            raise _error(problem)

    def joined(self, member: Member, room: Room) -> None:
        """``member`` is in ``room`` now: the creator of a room is its operator; the topic is shown."""
        state = self.state(room.name)
        self.kept.pop(room.name, None)
        others = len(room.members) - 1
        # Checked before anything is built: every arrival in #lobby comes this way.
        if member.nick.casefold() in state.invites or (others == 0 and room.name != LOBBY and not state.operators):
            actor = self.actor(member)
            self._update(room.name, lambda state: state.joined(actor, others))
            state = self.states[room.name]
        if state.topic is not None:
            self.hub.tell(member, TopicIs(room.name, state.topic.text, state.topic.setter, state.topic.time))

    def left(self, member: Member, room: Room) -> None:
        state = self.states.get(room.name)
        key = member.nick.casefold()
        if state is not None and (state.operators.get(key) is False or state.voiced.get(key) is False):
            actor = self.actor(member)
            self._update(room.name, lambda state: state.left(actor))

    def gone(self, member: Member) -> None:
        """``member`` left the chat."""
        self.away.pop(member, None)

    def renamed(self, member: Member, old: str) -> None:
        room = member.room
        state = self.states.get(room.name) if room is not None else None
        key = old.casefold()
        if (
            room is not None
            and state is not None
            and (key in state.operators or key in state.voiced or key in state.invites)
        ):
            nick = member.nick
            self._update(room.name, lambda state: state.renamed(old, nick))

    def forget(self, name: str) -> None:
        """``name`` has no members any more: keep its state only if there is something to remember."""
        state = self.states.get(name)
        if state is None:
            return
        if not state.blank:
            self._keep(name)
        else:
            del self.states[name]
            if not self.hub.bus.clustered:
                self.versions.pop(name, None)

    def checkSpeak(self, member: Member, room: Room) -> None:
        state = self.states.get(room.name)
        if state is None or not (state.bans or "m" in state.flags):
            return  # the common case, on every message's path: nothing to check
        problem = state.maySpeak(self.actor(member), member in room.members)
        if problem is not None:
            raise _error(problem)

    # -- commands ---------------------------------------------------------------------------

    def roomOf(self, member: Member, name: str | None) -> Room:
        """The room a command is about: ``name``, which ``member`` must be in (IRC: one of several), or its room."""
        room = member.room
        if name is not None and name != "":
            if not validRoom(name):
                raise _error(f"bad room name {name!r}: use # and 1 to 32 of a-z 0-9 _ -", RefusalCode.BAD_ROOM)
            room = self.hub.inRoom(member, name)
            if room is None:
                raise _error(f"you are not in {name}", RefusalCode.NOT_IN_ROOM)
        if room is None:
            raise _error("you are not in a room", RefusalCode.NOT_IN_ROOM)
        return room

    def topic(self, member: Member, name: str | None, text: str | None) -> defer.Deferred[None]:
        """``/topic [#room] [text]``: show the topic, or set it (announced to the room)."""
        room = self.roomOf(member, name)
        state = self.state(room.name)
        if text is None:
            topic = state.topic
            self.hub.tell(
                member,
                TopicIs(room.name, "") if topic is None else TopicIs(room.name, topic.text, topic.setter, topic.time),
            )
            return defer.succeed(None)
        changed = state.copy()
        change = changed.setTopic(self.actor(member), clean(text)[:MAX_TOPIC], self.hub.clock.seconds())
        if isinstance(change, str):
            raise _error(change)
        return self._command(room.name, changed, [change])

    def names(self, member: Member, name: str | None) -> defer.Deferred[MemberList]:
        """``/names [#room]``: the members of a room (any room, on every server) with their prefixes."""
        if name:
            if not validRoom(name):
                raise _error(f"bad room name {name!r}: use # and 1 to 32 of a-z 0-9 _ -", RefusalCode.BAD_ROOM)
        else:
            name = self.roomOf(member, None).name
        room = self.hub.rooms.get(name)
        local = [m.nick for m in room.members] if room is not None else []

        def listed(nicks: list[str], name: str = name) -> MemberList:
            return MemberList(name, self.memberships(name, sorted(nicks, key=str.casefold)))

        return self.hub.bus.names(name, local).addCallback(listed)

    def whois(self, member: Member, nick: str) -> WhoisReply:
        target = self.hub.nicks.get(nick.casefold())
        if target is None or target not in self.hub.present:
            raise _error(f"no such nickname: {nick}", RefusalCode.NO_SUCH_NICK)
        actor = self.actor(target)
        room = target.room
        where = ""
        if room is not None:
            state = self.states.get(room.name)
            where = (self.membership(state, target).prefix if state is not None else "") + room.name
        return WhoisReply(actor.who, where, actor.verified, actor.serverOperator, self.away.get(target, ""))

    def setAway(self, member: Member, text: str) -> AwaySet:
        """``/away [text]``: away with a message, or back without one."""
        text = clean(text).strip()[:MAX_AWAY]
        if text:
            self.away[member] = text
        else:
            self.away.pop(member, None)
        return AwaySet(text)

    def awayOf(self, nick: str) -> tuple[Who, str] | None:
        """Who holds ``nick`` here and its away message, if it is away."""
        target = self.hub.nicks.get(nick.casefold())
        if target is None:
            return None
        text = self.away.get(target)
        return None if text is None else (who(target), text)

    def kick(self, member: Member, nick: str, reason: str, name: str | None = None) -> defer.Deferred[None]:
        """
        ``/kick NICK [reason]``: ``nick`` (on any server) leaves the room (or
        ``name``, one of the member's rooms) for #lobby, the room is told why.
        """
        room = self.roomOf(member, name)
        if room.name == LOBBY:
            raise _error(
                f"nobody is kicked out of {LOBBY}: ban them (+b) and they cannot speak there", RefusalCode.NOT_OPERATOR
            )
        target = self.hub.nicks.get(nick.casefold())
        if target is not None or not self.hub.bus.clustered:
            self._kick(member, room, target, nick, reason, target is not None and target in room.members)
            return defer.succeed(None)

        # A member of another server, perhaps: the room's members everywhere say.
        def listed(names: list[str]) -> None:
            holder = next((name for name in names if name.casefold() == nick.casefold()), None)
            if member in room.members:
                self._kick(member, room, None, holder or nick, reason, holder is not None)

        return settled(self.hub.bus.names(room.name, []).addCallback(listed))

    def _kick(self, member: Member, room: Room, target: Member | None, nick: str, reason: str, present: bool) -> None:
        state = self.state(room.name)
        targetActor = self.actor(target) if target is not None else Actor(Who(nick))
        kick = state.kick(self.actor(member), targetActor, present, clean(reason), self.hub.clock.seconds())
        if isinstance(kick, str):
            raise _error(kick)
        if target is not None:
            self._remove(target, room, kick)
        else:
            self.hub.roomEvent(room, kick)
        self.hub.bus.roomEvent(kick)

    def _remove(self, target: Member, room: Room, kick: Kicked) -> None:
        """``target`` is kicked out of ``room``: to #lobby if it was its one room (line, web), else out of it (IRC)."""
        if room is target.room and faceOf(target).name != "irc":
            self.hub.tell(target, kick)
            self.hub.join(target, LOBBY, departure=kick)
        else:
            self.hub.part(target, room.name, kick=kick)

    def remoteKick(self, kick: Kicked) -> None:
        """A kick on another server of the cluster: if the one kicked is here, it goes to #lobby."""
        target = self.hub.nicks.get(kick.nick.casefold())
        room = self.hub.rooms.get(kick.room)
        if target is not None and room is not None and target in room.members:
            self._remove(target, room, kick)
        elif room is not None:
            self.hub.roomEvent(room, kick)

    def part(self, member: Member, name: str | None, reason: str) -> Any:
        """``/part [#room] [reason]``: leave the room for #lobby (one is always in a room here)."""
        room = self.roomOf(member, name)
        if room.name == LOBBY:
            raise _error(f"you are in {LOBBY}, which you leave with /quit", RefusalCode.NOT_IN_ROOM)
        departure = Parted(room.name, who(member), self.hub.clock.seconds(), clean(reason).strip()[:MAX_TOPIC])
        return self.hub.join(member, LOBBY, departure=departure)

    def invite(self, member: Member, nick: str, name: str | None) -> defer.Deferred[None]:
        """``/invite NICK [#room]``: ``nick`` may join (even +i), and is told."""
        room = self.roomOf(member, name)
        target = self.hub.nicks.get(nick.casefold())
        if target is None or target not in self.hub.present:
            raise _error(f"no such nickname: {nick}", RefusalCode.NO_SUCH_NICK)
        changed = self.state(room.name).copy()
        problem = changed.invite(self.actor(member), True, target.nick, target in room.members)
        if problem is not None:
            raise _error(problem)

        def invited(_: None) -> None:
            if target in self.hub.present:
                self.hub.tell(target, Invited(room.name, who(member), target.nick))
            self.hub.tell(member, Invited(room.name, who(member), target.nick, echo=True))

        return self._command(room.name, changed, []).addCallback(invited)

    def mode(self, member: Member, name: str, modes: str, arguments: list[str]) -> defer.Deferred[None]:
        """``/mode #room [+|-]modes [arguments]``: changes announced, refusals told, lists shown."""
        room = self.roomOf(member, name)
        if self.hub.bus.clustered and any(letter in "ov" for letter in modes):
            # Operators and voiced may be members of other servers: the room's members everywhere say.
            local = [m.nick for m in room.members]

            def listed(names: list[str]) -> defer.Deferred[None]:
                if member not in room.members:
                    return defer.succeed(None)
                return self._mode(member, room, modes, arguments, names)

            return settled(self.hub.bus.names(room.name, local).addCallback(listed))
        return self._mode(member, room, modes, arguments, [])

    def _mode(self, member: Member, room: Room, modes: str, arguments: list[str], everyone: list[str]) -> Any:
        changed = self.state(room.name).copy()
        members = {nick.casefold(): Actor(Who(nick)) for nick in everyone}
        members.update((m.nick.casefold(), self.actor(m)) for m in room.members)
        outcome = changed.applyModes(self.actor(member), modes, arguments, members, self.hub.clock.seconds())
        if outcome.shown:
            self.hub.tell(member, ModeIs(room.name, changed.modeString))
        if outcome.banList is not None:
            bans = tuple(BanEntry(ban.mask, ban.setter, ban.time) for ban in outcome.banList)
            self.hub.tell(member, BanList(room.name, bans))
        done: defer.Deferred[None] = defer.succeed(None)
        if outcome.event is not None:
            done = self._command(room.name, changed, [outcome.event])
        for problem in outcome.refusals:  # one line per problem
            code = getattr(problem, "code", RefusalCode.GENERAL)
            self.hub.tell(member, Refusal(problem, code, room.name, getattr(problem, "about", ())))
        return done
