# -*- test-case-name: tests.test_chat_events,tests.test_chat_moderation_line,tests.test_chat_web -*-
"""
The line face: the chat's events as the text lines line clients read.

``[12:01:07] <bob> hi``, ``*** bob joined #lobby``, ``!!! nickname bob is
taken``: every line the chat has always sent, rendered from the hub's events
(:mod:`sockproto.chat.events`).  Any member without a face of its own is
shown this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from zope.interface import implementer

from sockproto.chat.events import (
    Action,
    Away,
    AwaySet,
    BanList,
    ChatEvent,
    Goodbye,
    Help,
    History,
    IChatFace,
    Invited,
    Joined,
    Kicked,
    LoggedIn,
    MemberList,
    Message,
    ModeChanged,
    ModeIs,
    NickChanged,
    Notice,
    Parted,
    PrivateMessage,
    PrivateNotice,
    Quit,
    Recipient,
    Refusal,
    RoomList,
    ServerNotice,
    TopicChanged,
    TopicIs,
    Welcome,
    WhoisReply,
)
from sockproto.chat.text import Stamper, counted

#: Width of the usage column of /help; a longer usage is followed by three spaces.
HELP_COLUMN = 16


def helpLine(usage: str, description: str) -> str:
    """One command of ``/help``, as the line face shows it (without its ``***``)."""
    gap = " " * (HELP_COLUMN - len(usage)) if len(usage) < HELP_COLUMN else "   "
    return f"  {usage}{gap}{description}"


def noticeText(event: ChatEvent) -> str:
    """
    What a notice (a join, a nick change, a server notice...) says, as one
    line without its ``***`` or line end: the same words on every face that
    shows notices as text.
    """
    return _NOTICES[type(event)](event)


def _parted(event: Parted) -> str:
    return f"{event.who.nick} left {event.room} ({event.reason})" if event.reason else \
        f"{event.who.nick} left {event.room}"


def _renamed(event: NickChanged) -> str:
    note = f" ({event.reason})" if event.reason else ""
    return f"{event.who.nick} is now known as {event.nick}{note}"


def _topic(event: TopicChanged) -> str:
    if event.topic:
        return f"{event.who.nick} set the topic of {event.room}: {event.topic}"
    return f"{event.who.nick} cleared the topic of {event.room}"


def _kicked(event: Kicked) -> str:
    reason = f" ({event.reason})" if event.reason else ""
    return f"{event.nick} was kicked from {event.room} by {event.who.nick}{reason}"


def _mode(event: ModeChanged) -> str:
    arguments = "".join(" " + argument for argument in event.arguments)
    return f"{event.who.nick} sets mode {event.modes}{arguments} on {event.room}"


def _topicIs(event: TopicIs) -> str:
    if event.topic:
        return f"topic of {event.room}: {event.topic} (set by {event.setter})"
    return f"no topic in {event.room}"


def _invited(event: Invited) -> str:
    if event.echo:
        return f"invited {event.nick} to {event.room}"
    return f"{event.who.nick} invites you to {event.room}: /join {event.room}"


def _whois(event: WhoisReply) -> str:
    facts = [f"in {event.room}" if event.room else "in no room"]
    if event.verified:
        facts.append("logged in")
    if event.serverOperator:
        facts.append("server operator")
    if event.server:
        facts.append(f"on {event.server}")
    if event.away:
        facts.append(f"away: {event.away}")
    return f"{event.who.nick} ({event.who.mask}): {', '.join(facts)}"


def _bans(event: BanList) -> str:
    if not event.bans:
        return f"*** no bans in {event.room}\n"
    return (f"*** bans of {event.room}:\n"
            + "".join(f"***   {ban.mask} (set by {ban.setter})\n" for ban in event.bans)
            + f"*** end of bans of {event.room}\n")


def _welcome(event: Welcome) -> str:
    if event.nick is not None:
        return f"Welcome to sockproto chat, {event.nick}! Type /help for commands."
    if event.loginRequired:
        return "Welcome to sockproto chat! Please log in: /login NAME PASSWORD"
    return "Welcome to sockproto chat! Type /help for commands."


_NOTICES: dict[type, Callable[[Any], str]] = {
    Joined: lambda event: f"{event.who.nick} joined {event.room}",
    Parted: _parted,
    Quit: lambda event: f"{event.who.nick} left {event.room} ({event.reason})",
    NickChanged: _renamed,
    TopicChanged: _topic,
    Kicked: _kicked,
    ModeChanged: _mode,
    Away: lambda event: f"{event.who.nick} is away: {event.text}",
    TopicIs: _topicIs,
    Invited: _invited,
    ModeIs: lambda event: f"modes of {event.room}: {event.modes}",
    WhoisReply: _whois,
    AwaySet: lambda event: f"you are away: {event.text}" if event.text else "you are back",
    LoggedIn: lambda event: f"logged in as {event.name}",
    ServerNotice: lambda event: event.text,
    Goodbye: lambda event: event.text,
    Welcome: _welcome,
}


def _asLine(notice: Callable[[Any], str]) -> Callable[[Any], str]:
    return lambda event: f"*** {notice(event)}\n"


@implementer(IChatFace)
class LineFace:
    """Events as UTF-8 text lines; one object serves every line member."""

    name = "line"

    def __init__(self) -> None:
        self.stamp = Stamper()
        self._renderers: dict[type, Callable[[Any], str]] = {
            Message: self._message,
            Action: self._action,
            PrivateMessage: self._private,
            Notice: self._message,  # the line face has no notices: as what they are said as
            PrivateNotice: self._private,
            History: self._history,
            MemberList: self._members,
            RoomList: self._rooms,
            Help: self._help,
            BanList: _bans,
            Refusal: lambda event: f"!!! {event.reason}\n",
            Welcome: lambda event: _welcome(event) + "\n",
        }
        for kind, notice in _NOTICES.items():
            self._renderers.setdefault(kind, _asLine(notice))

    def render(self, event: ChatEvent, recipient: Recipient | None) -> bytes:
        return self._renderers[type(event)](event).encode()  # on every message's path: one call less

    def text(self, event: ChatEvent) -> str:
        """``event`` as lines of text (each ending in ``\\n``)."""
        return self._renderers[type(event)](event)

    def membersChanged(self, room: str, members: Iterable[Recipient]) -> None:
        pass  # line clients read the notices

    def _message(self, event: Message) -> str:
        return f"{self.stamp(event.time)}<{event.sender.nick}> {event.text}\n"

    def _action(self, event: Action) -> str:
        return f"{self.stamp(event.time)}* {event.sender.nick} {event.text}\n"

    def _private(self, event: PrivateMessage) -> str:
        if event.echo:
            return f"{self.stamp(event.time)}-> *{event.recipient}* {event.text}\n"
        return f"{self.stamp(event.time)}*{event.sender.nick}* {event.text}\n"

    def _history(self, event: History) -> str:
        if not event.entries:
            return f"*** no messages in {event.room} yet\n"
        lines = [f"*** last {counted(len(event.entries), 'message')} in {event.room}:\n"]
        lines.extend(self.text(entry) for entry in event.entries)
        lines.append(f"*** end of history of {event.room}\n")
        return "".join(lines)

    def _members(self, event: MemberList) -> str:
        nicks = " ".join(member.prefix + member.nick for member in event.members)
        return f"*** {len(event.members)} in {event.room}: {nicks}\n"

    def _rooms(self, event: RoomList) -> str:
        return "*** rooms:\n" + "".join(
            f"***   {room.name} ({room.count}){' ' + room.topic if room.topic else ''}\n" for room in event.rooms
        )

    def _help(self, event: Help) -> str:
        return "*** Commands:\n" + "".join(f"*** {helpLine(usage, what)}\n" for usage, what in event.commands)


#: The line face of every line member (and of any member without a face of its own).
LINE_FACE = LineFace()
