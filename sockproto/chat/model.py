# -*- test-case-name: tests.test_chat,tests.test_chat_events,tests.test_chat_rooms -*-
"""
The chat's model objects: a member as the hub and the bus know it, a room,
and the refusal the hub answers with.  Plain objects; nothing here knows
sockets, the hub's rules or the other servers.
"""

from __future__ import annotations

from typing import Protocol

from sockproto.chat.events import Action, ChatEvent, IChatFace, Message, Recipient, RefusalCode, Who
from sockproto.chat.history import Entry
from sockproto.chat.lineface import LINE_FACE


class ChatError(Exception):
    """
    A request the hub refuses; its message is shown to the member after
    ``"!!! "``, its ``code`` (a :class:`RefusalCode`) says why to faces
    that have their own words for it.
    """

    def __init__(self, message: str, code: RefusalCode = RefusalCode.GENERAL) -> None:
        Exception.__init__(self, message)
        self.code = code


class Member(Recipient, Protocol):
    """
    A chat client as the hub knows it: its nick, its room, and a way to
    write (:class:`sockproto.chat.events.IChatMember`; its ``face`` may be
    missing: the line face).
    """

    room: Room | None


def faceOf(member: Member) -> IChatFace:
    """The face that renders what ``member`` is told: its own, or the line face."""
    face: IChatFace = getattr(member, "face", LINE_FACE)
    return face


def who(member: Member) -> Who:
    """``member``'s identity, as events name it."""
    return Who(member.nick, faceOf(member).name)


def entryEvent(room: str, entry: Entry) -> Message | Action:
    """A message of the history as the event it was (its sender's face is not kept)."""
    event = Action if entry.kind == "me" else Message
    return event(room, Who(entry.nick), entry.text, entry.time)


class Room:
    """
    A room: its members, and the events of this reactor turn not yet written to them.

    ``faces`` holds the members again, by face: a batch is rendered once per face.
    """

    __slots__ = ("name", "created", "members", "faces", "batch", "batchSenders", "dirty")

    def __init__(self, name: str, created: float = 0.0) -> None:
        self.name = name
        #: When this server made it (IRC's RPL_CREATIONTIME; a cluster's other servers each have their own).
        self.created = created
        self.members: dict[Member, None] = {}  # insertion-ordered set
        self.faces: dict[IChatFace, dict[Member, None]] = {}
        self.batch: list[ChatEvent] = []
        self.batchSenders: list[Member | None] = []
        self.dirty = False

    def add(self, member: Member) -> None:
        self.members[member] = None
        face = faceOf(member)
        members = self.faces.get(face)
        if members is None:
            members = self.faces[face] = {}
        members[member] = None

    def remove(self, member: Member) -> None:
        if self.members.pop(member, False) is None:
            face = faceOf(member)
            members = self.faces[face]
            del members[member]
            if not members:
                del self.faces[face]
