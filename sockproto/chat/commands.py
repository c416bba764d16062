# -*- test-case-name: tests.test_chat_moderation_line,tests.test_chat -*-
"""
The moderation commands of the chat, with IRC's names and semantics, for
every face that takes typed commands (the line protocol, the web page's box):
``/topic``, ``/part``, ``/names``, ``/whois``, ``/away``, ``/kick``, ``/ban``,
``/unban``, ``/op``, ``/deop``, ``/voice``, ``/devoice``, ``/invite`` and
``/mode``.  Each refusal is one ``!!!`` line saying why (``ChatError``).
"""

from __future__ import annotations

from typing import Any, Protocol

from sockproto.chat.events import ChatEvent, RefusalCode
from sockproto.chat.hub import ChatError, Room
from sockproto.chat.moderator import Moderator

#: The commands of /help these add: usage, and what it does.
MODERATION_COMMANDS = (
    ("/topic [text]", "show your room's topic, or set it"),
    ("/part [reason]", "leave your room for #lobby"),
    ("/names [#room]", "who is in a room: @ operators, + voiced"),
    ("/whois NICK", "who someone is and where"),
    ("/away [text]", "say you are away (to whoever messages you); without text: back"),
    ("/invite NICK", "let someone into your room, even an invite-only one"),
    ("/kick NICK [why]", "operators: send someone out of the room"),
    ("/ban NICK|MASK", "operators: keep someone out (nick!user@host, * and ?); /unban undoes it"),
    ("/op NICK", "operators: make someone an operator (/deop), or voiced: /voice, /devoice"),
    ("/mode #room [+|-]modes [args]", "IRC modes: t n m i k KEY l N b MASK o NICK v NICK"),
)


def _words(rest: str) -> list[str]:
    return rest.split()


class Client(Protocol):
    """What the commands use of the protocol they are mixed into (:class:`sockproto.chat.protocol.ChatProtocol`)."""

    factory: Any
    nick: str
    room: Room | None

    def send(self, data: bytes) -> None: ...

    def reply(self, event: ChatEvent) -> None: ...

    def answer(self, d: Any, then: Any = None) -> None: ...


def moderatorOf(client: Client) -> Moderator:
    moderator: Moderator = client.factory.moderator
    return moderator


def modeOnOwnRoom(client: Client, command: str, modes: str, rest: str) -> None:
    """``/op NICK`` and the like: ``/mode`` on the client's room."""
    words = _words(rest)
    if len(words) != 1:
        raise ChatError(f"usage: /{command} {'NICK|MASK' if 'b' in modes else 'NICK'}", RefusalCode.USAGE)
    if client.room is None:
        raise ChatError("you are not in a room", RefusalCode.NOT_IN_ROOM)
    client.answer(moderatorOf(client).mode(client, client.room.name, modes, words))


class ModerationCommands:
    """The ``do_`` methods of the moderation commands, mixed into a chat protocol."""

    def do_topic(self: Client, rest: str) -> None:
        name = None
        if rest.startswith("#"):
            name, _, rest = rest.partition(" ")
        self.answer(moderatorOf(self).topic(self, name, rest if rest.strip() else None))

    def do_part(self: Client, rest: str) -> None:
        name = None
        if rest.startswith("#"):
            name, _, rest = rest.partition(" ")
        self.answer(moderatorOf(self).part(self, name, rest))

    def do_names(self: Client, rest: str) -> None:
        words = _words(rest)
        if len(words) > 1:
            raise ChatError("usage: /names [#room]", RefusalCode.USAGE)
        self.answer(moderatorOf(self).names(self, words[0] if words else None), self.reply)

    def do_whois(self: Client, rest: str) -> None:
        words = _words(rest)
        if len(words) != 1:
            raise ChatError("usage: /whois NICK", RefusalCode.USAGE)
        self.reply(moderatorOf(self).whois(self, words[0]))

    def do_away(self: Client, rest: str) -> None:
        self.reply(moderatorOf(self).setAway(self, rest))

    def do_kick(self: Client, rest: str) -> None:
        nick, _, reason = rest.partition(" ")
        if not nick:
            raise ChatError("usage: /kick NICK [reason]", RefusalCode.USAGE)
        self.answer(moderatorOf(self).kick(self, nick, reason))

    def do_invite(self: Client, rest: str) -> None:
        words = _words(rest)
        if not 1 <= len(words) <= 2:
            raise ChatError("usage: /invite NICK [#room]", RefusalCode.USAGE)
        self.answer(moderatorOf(self).invite(self, words[0], words[1] if len(words) == 2 else None))

    def do_mode(self: Client, rest: str) -> None:
        words = _words(rest)
        if not words or not words[0].startswith("#"):
            raise ChatError("usage: /mode #room [+|-][t n m i k l b o v] [arguments]", RefusalCode.USAGE)
        modes = words[1] if len(words) > 1 else ""
        if modes and modes[0] not in "+-":
            modes = "+" + modes
        self.answer(moderatorOf(self).mode(self, words[0], modes, words[2:]))

    def do_ban(self: Client, rest: str) -> None:
        modeOnOwnRoom(self, "ban", "+b", rest)

    def do_unban(self: Client, rest: str) -> None:
        modeOnOwnRoom(self, "unban", "-b", rest)

    def do_op(self: Client, rest: str) -> None:
        modeOnOwnRoom(self, "op", "+o", rest)

    def do_deop(self: Client, rest: str) -> None:
        modeOnOwnRoom(self, "deop", "-o", rest)

    def do_voice(self: Client, rest: str) -> None:
        modeOnOwnRoom(self, "voice", "+v", rest)

    def do_devoice(self: Client, rest: str) -> None:
        modeOnOwnRoom(self, "devoice", "-v", rest)
