# -*- test-case-name: tests.test_chat_moderation -*-
"""
Rooms with owners: the state of a room (topic, modes, bans, operators) and
the rules of IRC channels over it, as plain objects.

Nothing here knows about sockets, the hub or the clock: every method is
given what it needs (who acts, the members present, the time) and answers
with the events that happened (:mod:`sockproto.chat.events`) or with one
refusal per problem.  The names and semantics are IRC's (RFC 2812 channel
modes), so an IRC face maps ``MODE``, ``KICK``, ``TOPIC`` and ``INVITE`` onto
these one to one:

- ``t`` topic lock: only operators set the topic;
- ``n`` no outside messages: only members speak to the room;
- ``m`` moderated: only operators and voiced members speak;
- ``i`` invite only: only the invited (``/invite``) join;
- ``k KEY`` a key to join with (``/join #room KEY``);
- ``l N`` at most ``N`` members;
- ``b MASK`` a ban: whoever matches ``MASK`` (``nick!user@host``, ``*`` and
  ``?`` wildcards, case-insensitively) neither joins nor speaks;
- ``o NICK`` and ``v NICK``: operator and voiced status of a member.

Who is an operator: the first member to create a room (except ``#lobby``,
which nobody owns); whoever an operator makes one; every *server operator*
(a verified name the server lists) in every room.  A status given to a
verified member (logged in, or a client certificate) is the room's for good
(it outlives leaving, and restarts), and counts only for that verified
member, never for a guest who takes the name; a guest's status lasts while
it is in the room, as on IRC without services.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sockproto.chat.events import Kicked, ModeChanged, RefusalCode, TopicChanged, Who

LOBBY = "#lobby"

#: Modes without an argument, in the order IRC servers show them.
FLAG_MODES = "imnt"
#: Every mode a room knows.
ROOM_MODES = "bikl" + "mnotv"
#: Most bans a room holds (IRC's MAXLIST).
MAX_BANS = 100
#: Most invitations a room keeps waiting (the oldest is forgotten first).
MAX_INVITES = 100
#: Most mode changes taking an argument in one /mode (IRC's MODES).
MAX_MODE_ARGUMENTS = 6
MAX_KEY = 23
MAX_LIMIT = 100_000
MAX_MASK = 100
MAX_TOPIC = 300
#: Most operators (and most voiced) a room's stored state may name.
MAX_STATUSES = 10_000

_KEY_RE = re.compile(r"[!-~]{1,23}")  # printable ASCII, no spaces
_MASK_RE = re.compile(r"[^\s,]+")


class Problem(str):
    """
    Why something is refused: the words, the :class:`RefusalCode` (IRC's
    numeric) as ``code``, and what it is about as ``about`` (a mode letter
    and its argument, a nick), which an IRC numeric names.
    """

    code: RefusalCode
    about: tuple[str, ...]

    def __new__(cls, text: str, code: RefusalCode, about: tuple[str, ...] = ()) -> Problem:
        problem = super().__new__(cls, text)
        problem.code = code
        problem.about = about
        return problem


class RoomRules(Protocol):
    """
    What the hub asks of the rules of its rooms (``member`` and ``room`` are
    the hub's).  A refusal is raised as the hub's ``ChatError``.
    """

    def checkJoin(self, member: Any, name: str, key: str | None) -> None:
        """Raise why ``member`` may not go into room ``name``, if it may not."""

    def joined(self, member: Any, room: Any) -> None:
        """``member`` is in ``room`` now (announced already)."""

    def left(self, member: Any, room: Any) -> None:
        """``member`` is out of ``room`` now."""

    def gone(self, member: Any) -> None:
        """``member`` left the chat."""

    def renamed(self, member: Any, old: str) -> None:
        """``member`` (in its room, if any) was ``old`` until now."""

    def forget(self, name: str) -> None:
        """Room ``name`` is empty and gone."""

    def checkSpeak(self, member: Any, room: Any) -> None:
        """Raise why ``member`` may not speak to ``room``, if it may not."""

    def adopt(self, name: str, version: int, data: Any, force: bool = False) -> None:
        """Room ``name``'s state as the cluster decided it, if newer than this server's (or anyway, with ``force``)."""

    def remoteKick(self, kick: Kicked) -> None:
        """A kick on another server of the cluster."""


class OpenRooms:
    """No rules: anyone joins and speaks anywhere (a hub without a moderator)."""

    def checkJoin(self, member: Any, name: str, key: str | None) -> None:
        pass

    def joined(self, member: Any, room: Any) -> None:
        pass

    def left(self, member: Any, room: Any) -> None:
        pass

    def gone(self, member: Any) -> None:
        pass

    def renamed(self, member: Any, old: str) -> None:
        pass

    def forget(self, name: str) -> None:
        pass

    def checkSpeak(self, member: Any, room: Any) -> None:
        pass

    def adopt(self, name: str, version: int, data: Any, force: bool = False) -> None:
        pass

    def remoteKick(self, kick: Kicked) -> None:
        pass


OPEN_ROOMS = OpenRooms()


def _key(nick: str) -> str:
    return nick.casefold()


@dataclass(frozen=True, slots=True)
class Actor:
    """
    Who asks for something: a member as the rules see it.

    :ivar who: its nick and face (its mask is matched against bans).
    :ivar verified: it logged in or showed a client certificate (its name is its own).
    :ivar serverOperator: a server operator: an operator of every room.
    """

    who: Who
    verified: bool = False
    serverOperator: bool = False

    @property
    def nick(self) -> str:
        return self.who.nick


def normalizeMask(text: str) -> str | None:
    """
    A ban given as IRC clients give it, as a full ``nick!user@host`` mask:
    ``bob`` bans ``bob!*@*``, ``*@web.sockproto`` bans ``*!*@web.sockproto``.
    ``None`` if it cannot be a mask (spaces, commas, too long, empty parts).
    """
    if not text or len(text) > MAX_MASK or _MASK_RE.fullmatch(text) is None:
        return None
    nick, bang, rest = text.partition("!")
    if not bang:
        if "@" in text:
            nick, rest = "*", text
        else:
            rest = "*"
    user, at, host = rest.partition("@")
    if not at:
        host = "*"
    if not nick or not user or not host or "!" in user or "@" in host:
        return None
    return f"{nick}!{user}@{host}"


def maskPattern(mask: str) -> re.Pattern[str]:
    """IRC wildcard matching: ``*`` any run, ``?`` any one character, nothing else special, no case."""
    parts = (".*" if char == "*" else "." if char == "?" else re.escape(char) for char in mask.casefold())
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True, slots=True)
class Ban:
    """``mask``, set by ``setter`` at ``time``."""

    mask: str
    setter: str
    time: float
    pattern: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def of(cls, mask: str, setter: str, time: float) -> Ban:
        return cls(mask, setter, time, maskPattern(mask))

    def matches(self, who: Who) -> bool:
        return self.pattern.fullmatch(who.mask.casefold()) is not None


@dataclass(frozen=True, slots=True)
class Topic:
    """A room's topic: ``text``, set by ``setter`` at ``time``."""

    text: str
    setter: str
    time: float


@dataclass(slots=True)
class ModeOutcome:
    """
    What a ``/mode`` did: ``event`` the changes made (``None``: none),
    ``refusals`` one line per part refused, ``banList`` the bans when they
    were asked for (``+b`` without a mask), ``shown`` True when the modes
    were asked for (no change given).
    """

    event: ModeChanged | None = None
    refusals: list[str] = field(default_factory=list)
    banList: tuple[Ban, ...] | None = None
    shown: bool = False


class RoomState:
    """
    The topic, modes, bans, invitations and statuses of one room.

    ``operators`` and ``voiced`` map a casefolded nick to whether the status
    belongs to a verified name (kept for good) or to a guest (kept while it
    is in the room).
    """

    __slots__ = ("name", "topic", "flags", "key", "limit", "bans", "invites", "operators", "voiced")

    def __init__(self, name: str) -> None:
        self.name = name
        self.topic: Topic | None = None
        self.flags: set[str] = set()
        self.key: str | None = None
        self.limit: int | None = None
        self.bans: dict[str, Ban] = {}  # casefolded mask -> ban, in the order set
        self.invites: dict[str, None] = {}  # casefolded nicks, oldest first
        self.operators: dict[str, bool] = {}
        self.voiced: dict[str, bool] = {}

    # -- who is what --------------------------------------------------------------

    def isOperator(self, actor: Actor) -> bool:
        if actor.serverOperator:
            return True
        verifiedName = self.operators.get(_key(actor.nick))
        return verifiedName is not None and (actor.verified or not verifiedName)

    def isVoiced(self, actor: Actor) -> bool:
        verifiedName = self.voiced.get(_key(actor.nick))
        return verifiedName is not None and (actor.verified or not verifiedName)

    def banned(self, who: Who) -> Ban | None:
        for ban in self.bans.values():
            if ban.matches(who):
                return ban
        return None

    @property
    def modeString(self) -> str:
        """The room's modes as IRC's ``RPL_CHANNELMODEIS`` shows them: ``+knt key`` (``+`` alone: none)."""
        letters = "".join(sorted(self.flags))
        arguments = []
        if self.key is not None:
            letters += "k"
            arguments.append(self.key)
        if self.limit is not None:
            letters += "l"
            arguments.append(str(self.limit))
        return " ".join(["+" + letters, *arguments])

    @property
    def owned(self) -> bool:
        """Whether anyone is an operator of the room (present or, for verified names, not)."""
        return bool(self.operators)

    @property
    def blank(self) -> bool:
        """Whether the state says nothing at all (none to keep, even while guests of other servers are in)."""
        return not (self.worthKeeping or self.operators or self.voiced or self.invites)

    @property
    def worthKeeping(self) -> bool:
        """Whether the room has anything to remember once empty (a topic, modes, bans, owners)."""
        return bool(
            self.topic
            or self.flags
            or self.key is not None
            or self.limit is not None
            or self.bans
            or any(self.operators.values())
            or any(self.voiced.values())
        )

    # -- coming and going -----------------------------------------------------------

    def mayJoin(self, actor: Actor, key: str | None, count: int) -> Problem | None:
        """
        Why ``actor`` may not join the room now that ``count`` are in it, or
        ``None``: it may.  Server operators always may; an invitation lets
        one into an invite-only room (and nothing else, as RFC 2812 says).
        """
        if actor.serverOperator:
            return None
        if self.banned(actor.who) is not None:
            return Problem(f"you are banned from {self.name} (+b)", RefusalCode.BANNED)
        if "i" in self.flags and _key(actor.nick) not in self.invites:
            return Problem(f"{self.name} is invite only (+i): an operator can /invite you", RefusalCode.INVITE_ONLY)
        if self.key is not None and key != self.key:
            return Problem(f"{self.name} needs a key (+k): /join {self.name} KEY", RefusalCode.BAD_KEY)
        if self.limit is not None and count >= self.limit:
            return Problem(f"{self.name} is full (+l {self.limit})", RefusalCode.ROOM_FULL)
        return None

    def joined(self, actor: Actor, count: int) -> bool:
        """
        ``actor`` is in the room now, with ``count`` others.  It is the
        room's operator if it created it: the first in a room nobody owns
        (never ``#lobby``); its invitation, if any, is used.  Returns
        whether the state changed.
        """
        invited = self.invites.pop(_key(actor.nick), False) is None
        if count == 0 and self.name != LOBBY and not self.operators and not actor.serverOperator:
            self.operators[_key(actor.nick)] = actor.verified
            return True
        return invited

    def left(self, actor: Actor) -> bool:
        """``actor`` left the room: a guest's status goes with it.  Returns whether the state changed."""
        nick = _key(actor.nick)
        changed = False
        if not actor.verified:
            for statuses in (self.operators, self.voiced):
                if statuses.get(nick) is False:
                    del statuses[nick]
                    changed = True
        return changed

    def renamed(self, old: str, new: str) -> bool:
        """A guest in the room changed its nick: its status follows it (IRC).  Returns whether the state changed."""
        changed = False
        for statuses in (self.operators, self.voiced):
            if statuses.get(_key(old)) is False:
                del statuses[_key(old)]
                statuses[_key(new)] = False
                changed = True
        if _key(old) in self.invites:
            del self.invites[_key(old)]
            self.invites[_key(new)] = None
            changed = True
        return changed

    # -- speaking ---------------------------------------------------------------------

    def maySpeak(self, actor: Actor, present: bool) -> str | None:
        """Why ``actor`` (in the room if ``present``) may not say something to it, or ``None``."""
        if self.isOperator(actor):
            return None
        if not present and "n" in self.flags:
            return Problem(
                f"you are not in {self.name}, which takes no outside messages (+n)", RefusalCode.CANNOT_SPEAK
            )
        if self.isVoiced(actor):
            return None
        if "m" in self.flags:
            return Problem(
                f"{self.name} is moderated (+m): only operators and voiced members may speak", RefusalCode.CANNOT_SPEAK
            )
        if self.banned(actor.who) is not None:
            return Problem(f"you are banned from {self.name} (+b): you cannot speak there", RefusalCode.CANNOT_SPEAK)
        return None

    # -- the topic ----------------------------------------------------------------------

    def setTopic(self, actor: Actor, text: str, now: float) -> TopicChanged | str:
        """``/topic text`` (``""`` clears it): the change, or why not."""
        if "t" in self.flags and not self.isOperator(actor):
            return Problem(f"only operators set the topic of {self.name} (+t)", RefusalCode.NOT_OPERATOR)
        text = text.strip()[:MAX_TOPIC]
        self.topic = Topic(text, actor.nick, now) if text else None
        return TopicChanged(self.name, actor.who, text, now)

    # -- kicks and invitations ---------------------------------------------------------

    def kick(self, actor: Actor, target: Actor, present: bool, reason: str, now: float) -> Kicked | str:
        """``/kick``: the kick (the caller moves ``target`` out), or why not."""
        if not self.isOperator(actor):
            return Problem(f"you are not an operator of {self.name}", RefusalCode.NOT_OPERATOR)
        if not present:
            return Problem(f"{target.nick} is not in {self.name}", RefusalCode.NOT_THERE, (target.nick,))
        if target.serverOperator and not actor.serverOperator:
            return Problem(f"{target.nick} is a server operator and cannot be kicked", RefusalCode.NOT_OPERATOR)
        return Kicked(self.name, actor.who, target.nick, now, reason.strip()[:MAX_TOPIC])

    def invite(self, actor: Actor, actorPresent: bool, target: str, targetPresent: bool) -> str | None:
        """``/invite``: ``None`` (``target`` may join until it does), or why not."""
        if not actorPresent:
            return Problem(f"you are not in {self.name}", RefusalCode.NOT_IN_ROOM)
        if "i" in self.flags and not self.isOperator(actor):
            return Problem(f"only operators invite to {self.name} (+i)", RefusalCode.NOT_OPERATOR)
        if targetPresent:
            return Problem(f"{target} is already in {self.name}", RefusalCode.ALREADY_IN_ROOM, (target,))
        self.invites.pop(_key(target), None)
        self.invites[_key(target)] = None
        while len(self.invites) > MAX_INVITES:
            del self.invites[next(iter(self.invites))]
        return None

    # -- modes ---------------------------------------------------------------------------

    def applyModes(
        self,
        actor: Actor,
        modes: str,
        arguments: Iterable[str],
        members: Mapping[str, Actor],
        now: float,
    ) -> ModeOutcome:
        """
        ``/mode #room modes arguments``, parsed as IRC does: ``+`` and ``-``
        switch direction, several letters at once, the arguments of ``k``,
        ``l`` (when set), ``b``, ``o`` and ``v`` taken in order.  ``members``
        maps the casefolded nicks of the room's members to them (``o`` and
        ``v`` are for members).  What may be done is done, and each part
        that may not gets its own refusal.
        """
        outcome = ModeOutcome()
        pending = list(arguments)
        if not modes:
            outcome.shown = True
            return outcome
        isOperator = self.isOperator(actor)
        changes: list[tuple[str, str, str | None]] = []  # (sign, letter, argument)
        sign = "+"
        taken = 0
        deniedOnce = False

        def deny() -> None:
            nonlocal deniedOnce
            if not deniedOnce:
                deniedOnce = True
                outcome.refusals.append(Problem(f"you are not an operator of {self.name}", RefusalCode.NOT_OPERATOR))

        for letter in modes:
            if letter in "+-":
                sign = letter
                continue
            if letter not in ROOM_MODES:
                outcome.refusals.append(
                    Problem(f"unknown mode {letter!r} (modes: {ROOM_MODES})", RefusalCode.UNKNOWN_MODE, (letter,))
                )
                continue
            needsArgument = letter in "bov" or (letter in "kl" and sign == "+")
            argument: str | None = None
            if needsArgument or (letter == "k" and pending):
                if letter == "b" and not pending:
                    outcome.banList = tuple(self.bans.values())
                    continue
                if not pending:
                    outcome.refusals.append(Problem(f"mode {sign}{letter} needs an argument", RefusalCode.USAGE))
                    continue
                if taken >= MAX_MODE_ARGUMENTS:
                    outcome.refusals.append(
                        Problem(f"at most {MAX_MODE_ARGUMENTS} modes with arguments at once", RefusalCode.USAGE)
                    )
                    pending.pop(0)
                    continue
                taken += 1
                argument = pending.pop(0)
            if not isOperator:
                deny()
                continue
            problem = self._applyOne(actor, sign, letter, argument, members, now, changes)
            if problem is not None:
                outcome.refusals.append(problem)
        if changes:
            outcome.event = ModeChanged(
                self.name, actor.who, _modeText(changes), tuple(a for _, _, a in changes if a is not None), now
            )
        return outcome

    def _applyOne(
        self,
        actor: Actor,
        sign: str,
        letter: str,
        argument: str | None,
        members: Mapping[str, Actor],
        now: float,
        changes: list[tuple[str, str, str | None]],
    ) -> str | None:
        adding = sign == "+"
        if letter in FLAG_MODES:
            if adding != (letter in self.flags):
                self.flags.add(letter) if adding else self.flags.discard(letter)
                changes.append((sign, letter, None))
            return None
        if letter == "k":
            if adding:
                assert argument is not None
                if _KEY_RE.fullmatch(argument) is None:
                    return Problem(
                        f"bad key {argument[:MAX_KEY]!r}: 1 to {MAX_KEY} printable characters, no spaces",
                        RefusalCode.USAGE,
                        (letter, argument[:MAX_KEY + 8]),
                    )
                if self.key != argument:
                    self.key = argument
                    changes.append((sign, letter, argument))
            elif self.key is not None:
                changes.append((sign, letter, self.key))  # IRC shows the key removed
                self.key = None
            return None
        if letter == "l":
            if adding:
                assert argument is not None
                if not argument.isdecimal() or not 1 <= int(argument) <= MAX_LIMIT:
                    return Problem(
                        f"bad limit {argument[:12]!r}: a number from 1 to {MAX_LIMIT}", RefusalCode.USAGE,
                        (letter, argument[:12]),
                    )
                if self.limit != int(argument):
                    self.limit = int(argument)
                    changes.append((sign, letter, str(self.limit)))
            elif self.limit is not None:
                self.limit = None
                changes.append((sign, letter, None))
            return None
        assert argument is not None
        if letter == "b":
            mask = normalizeMask(argument)
            if mask is None:
                return Problem(
                    f"bad ban mask {argument[:MAX_MASK]!r}: NICK or nick!user@host, * and ? as wildcards",
                    RefusalCode.USAGE,
                    (letter, argument[:MAX_MASK]),
                )
            folded = mask.casefold()
            if adding:
                if folded in self.bans:
                    return None
                if len(self.bans) >= MAX_BANS:
                    return Problem(
                        f"the ban list of {self.name} is full ({MAX_BANS})", RefusalCode.BAN_LIST_FULL, (mask,)
                    )
                self.bans[folded] = Ban.of(mask, actor.nick, now)
                changes.append((sign, letter, mask))
            elif folded in self.bans:
                changes.append((sign, letter, self.bans.pop(folded).mask))
            else:
                return Problem(f"{mask} is not banned from {self.name}", RefusalCode.USAGE, (letter, mask))
            return None
        # o, v: a member's status
        target = members.get(_key(argument))
        if target is None:
            return Problem(f"{argument[:32]} is not in {self.name}", RefusalCode.NOT_THERE, (argument[:32],))
        if letter == "o" and self.name == LOBBY:
            return Problem(f"nobody but server operators is an operator of {LOBBY}", RefusalCode.NOT_OPERATOR)
        statuses = self.operators if letter == "o" else self.voiced
        key = _key(target.nick)
        if adding:
            if statuses.get(key) is not target.verified:
                statuses[key] = target.verified
                changes.append((sign, letter, target.nick))
        elif key in statuses:
            del statuses[key]
            changes.append((sign, letter, target.nick))
        elif letter == "o" and target.serverOperator:
            return Problem(f"{target.nick} is a server operator, an operator of every room", RefusalCode.NOT_OPERATOR)
        return None

    # -- kept across restarts and servers ------------------------------------------------

    def toDict(self, guests: bool = False) -> dict[str, Any]:
        """
        What of the room outlives its members, JSON-ready: guests' statuses
        and invitations are left out, except with ``guests`` (for the other
        servers of a cluster, while those guests are there).
        """
        data: dict[str, Any] = {
            "topic": None if self.topic is None else [self.topic.text, self.topic.setter, self.topic.time],
            "flags": "".join(sorted(self.flags)),
            "key": self.key,
            "limit": self.limit,
            "bans": [[ban.mask, ban.setter, ban.time] for ban in self.bans.values()],
            "operators": sorted(nick for nick, verified in self.operators.items() if verified),
            "voiced": sorted(nick for nick, verified in self.voiced.items() if verified),
        }
        if guests:
            data["guests"] = {
                "operators": sorted(nick for nick, verified in self.operators.items() if not verified),
                "voiced": sorted(nick for nick, verified in self.voiced.items() if not verified),
                "invites": list(self.invites),
            }
        return data

    def copy(self) -> RoomState:
        """Another state like this one (invitations too), to change without changing this one."""
        return RoomState.fromDict(self.name, self.toDict(guests=True))

    @classmethod
    def fromDict(cls, name: str, data: Any) -> RoomState:
        """A room's state from :meth:`toDict`; ``ValueError`` if ``data`` is not such a state."""
        try:
            state = cls(name)
            topic = data["topic"]
            if topic is not None:
                text, setter, when = topic
                state.topic = Topic(_text(text, MAX_TOPIC), _text(setter, 64), _when(when))
            flags = _text(data["flags"], len(FLAG_MODES))
            if not set(flags) <= set(FLAG_MODES):
                raise ValueError(f"bad modes {flags!r}")
            state.flags = set(flags)
            key = data["key"]
            if key is not None and (not isinstance(key, str) or _KEY_RE.fullmatch(key) is None):
                raise ValueError("bad key")
            state.key = key
            limit = data["limit"]
            if limit is not None and (type(limit) is not int or not 1 <= limit <= MAX_LIMIT):
                raise ValueError("bad limit")
            state.limit = limit
            for mask, setter, when in data["bans"][:MAX_BANS]:
                if not isinstance(mask, str) or normalizeMask(mask) != mask:
                    raise ValueError(f"bad ban mask {mask!r}")
                state.bans[mask.casefold()] = Ban.of(mask, _text(setter, 64), _when(when))
            guests = data.get("guests", {"operators": [], "voiced": [], "invites": []})
            state.invites = dict.fromkeys(_nickKey(nick) for nick in guests["invites"][-MAX_INVITES:])
            for statuses, field in ((state.operators, "operators"), (state.voiced, "voiced")):
                statuses.update(dict.fromkeys((_nickKey(nick) for nick in guests[field][:MAX_STATUSES]), False))
                statuses.update(dict.fromkeys((_nickKey(nick) for nick in data[field][:MAX_STATUSES]), True))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a room state: {e}") from None
        return state


_NICK_KEY = re.compile(r"[a-z0-9_-]{1,24}")


def _nickKey(value: Any) -> str:
    if not isinstance(value, str) or _NICK_KEY.fullmatch(value) is None:
        raise ValueError(f"bad nick {str(value)[:30]!r}")
    return value


def _when(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError(f"bad time {str(value)[:30]!r}")
    return float(value)


def _text(value: Any, most: int) -> str:
    if not isinstance(value, str) or len(value) > most:
        raise ValueError(f"bad text {str(value)[:20]!r}")
    return value


def _modeText(changes: list[tuple[str, str, str | None]]) -> str:
    """``[("+", "o", x), ("+", "v", y), ("-", "t", None)]`` as IRC writes it: ``+ov-t``."""
    out = []
    sign = ""
    for changeSign, letter, _ in changes:
        if changeSign != sign:
            sign = changeSign
            out.append(sign)
        out.append(letter)
    return "".join(out)
