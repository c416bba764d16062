# -*- test-case-name: tests.test_chat,tests.test_chat_cluster -*-
"""What the chat hub asks of the other chat servers, and the answer for a server alone.

The hub decides everything about its own members.  What involves other
servers (whether a name is free anywhere, who is in a room anywhere, lines
that other servers' members should see) goes through an :class:`IChatBus`.
Answers are Deferreds; :class:`LocalBus`, the bus of a server alone, answers
at once, so a hub on it behaves exactly as one without a bus and its tests
need no reactor.  The Redis bus is :mod:`sockproto.chat.cluster`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from zope.interface import Attribute, Interface, implementer

if TYPE_CHECKING:
    from sockproto.chat.events import (
        Action,
        ChatEvent,
        Joined,
        Kicked,
        Message,
        ModeChanged,
        NickChanged,
        Parted,
        Quit,
        TopicChanged,
        Who,
    )
    from sockproto.chat.model import Member, Room
    from sockproto.chat.moderation import RoomRules


class ChatHub(Protocol):
    """
    What a bus may see and do of the hub it serves (:class:`sockproto.chat.hub.ChatHub`
    is one), and nothing more: the names held here, who is present, the rooms,
    and the calls that hand it what other servers said.
    """

    #: casefolded nick -> this server's member holding it
    nicks: dict[str, Member]
    #: casefolded names of this server's verified (logged-in) members
    identities: set[str]
    #: this server's members who entered and have not left
    present: dict[Member, None]
    #: this server's rooms by name
    rooms: dict[str, Room]
    #: True once the server is stopping
    closing: bool
    #: the rules of its rooms (rooms with owners), told of their states and kicks elsewhere
    rules: RoomRules

    def members(self) -> list[Member]:
        """This server's members."""

    def tell(self, member: Member, event: ChatEvent) -> None:
        """Tell one member something."""

    def announce(self, text: str) -> None:
        """Tell every member a server notice."""

    def evict(self, squatter: Member) -> None:
        """Take ``squatter``'s name away (another server's verified user holds it)."""

    def remoteEvent(self, room: str, event: ChatEvent) -> None:
        """What happened in ``room`` on another server, for this server's members there."""

    def remotePrivate(self, key: str, sender: Who, when: float, text: str) -> bool:
        """A private message from another server to the member holding ``key``; whether one does."""


class IChatBus(Interface):
    """The hub's link to the other servers of its cluster."""

    linked = Attribute("True while other servers hear this one (a server alone: False)")
    clustered = Attribute("True when this server is meant to have others (a cluster), linked or not")

    def attach(hub: ChatHub) -> None:
        """The hub that remote events are given to."""

    def claimGuest(candidate: str, member: Member | None = None) -> defer.Deferred[str]:
        """
        A guest name free everywhere (``candidate`` when it is), for a new
        member, or for ``member`` which must give up its name.
        """

    def claimIdentity(member: Member, nick: str) -> defer.Deferred[tuple[bool, str | None]]:
        """
        Hold a verified name for ``member``: (False, None) when it is
        connected elsewhere already; else (True, the new name of this
        server's guest that held it, if the bus chose one).
        """

    def claimNick(member: Member, nick: str) -> defer.Deferred[bool]:
        """Move ``member`` from its nick to ``nick``; False when another holds it anywhere."""

    def moveTo(member: Member, room: str, maxRooms: int) -> defer.Deferred[bool]:
        """``member`` is going into ``room``; False when that would open more than ``maxRooms`` rooms."""

    def release(member: Member, room: str | None) -> None:
        """``member`` is gone: free its name."""

    def said(event: Message | Action, sender: Member) -> None:
        """A message the members of its room elsewhere should see."""

    def noticed(event: Joined | Parted | Quit | NickChanged) -> None:
        """A notice (joins, leaves, nick changes) for the members of its room elsewhere."""

    def privateTo(member: Member, nick: str, when: float, text: str) -> defer.Deferred[str | None]:
        """A private message to ``nick`` on another server: its holder's nick, or None if nobody has it."""

    def names(room: str, local: list[str]) -> defer.Deferred[list[str]]:
        """Everyone in ``room`` (``local``: this server's members there)."""

    def roomList(local: list[tuple[str, int]]) -> defer.Deferred[list[tuple[str, int]]]:
        """Every room and how many are in it."""

    def stats() -> dict[str, Any]:
        """Counters for the metrics (empty for a server alone)."""

    def roomChanged(room: str, version: int, state: dict[str, Any]) -> defer.Deferred[tuple[bool, int, Any]]:
        """
        Make ``state`` (:meth:`sockproto.chat.moderation.RoomState.toDict`,
        with guests) the state of ``room`` everywhere, if its state is still
        the ``version`` this server knows: ``(True, new version, None)``;
        else ``(False, the current version, the current state or None)``,
        and nothing changes.
        """

    def roomEvent(event: TopicChanged | ModeChanged | Kicked) -> None:
        """A change of a room (topic, modes, a kick) for its members elsewhere."""


@implementer(IChatBus)
class LocalBus:
    """A server alone: this hub is the whole chat."""

    linked = False
    clustered = False
    hub: Any = None

    def attach(self, hub: ChatHub) -> None:
        self.hub = hub

    def claimGuest(self, candidate: str, member: Member | None = None) -> defer.Deferred[str]:
        return defer.succeed(candidate)

    def claimIdentity(self, member: Member, nick: str) -> defer.Deferred[tuple[bool, str | None]]:
        return defer.succeed((True, None))

    def claimNick(self, member: Member, nick: str) -> defer.Deferred[bool]:
        return defer.succeed(True)

    def moveTo(self, member: Member, room: str, maxRooms: int) -> defer.Deferred[bool]:
        return defer.succeed(room in self.hub.rooms or len(self.hub.rooms) < maxRooms)

    def release(self, member: Member, room: str | None) -> None:
        pass

    def said(self, event: Message | Action, sender: Member) -> None:
        pass

    def noticed(self, event: Joined | Parted | Quit | NickChanged) -> None:
        pass

    def privateTo(self, member: Member, nick: str, when: float, text: str) -> defer.Deferred[str | None]:
        return defer.succeed(None)

    def names(self, room: str, local: list[str]) -> defer.Deferred[list[str]]:
        return defer.succeed(local)

    def roomList(self, local: list[tuple[str, int]]) -> defer.Deferred[list[tuple[str, int]]]:
        return defer.succeed(local)

    def stats(self) -> dict[str, Any]:
        return {}

    def roomChanged(self, room: str, version: int, state: dict[str, Any]) -> defer.Deferred[tuple[bool, int, Any]]:
        return defer.succeed((True, version + 1, None))

    def roomEvent(self, event: TopicChanged | ModeChanged | Kicked) -> None:
        pass
