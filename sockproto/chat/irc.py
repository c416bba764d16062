# -*- test-case-name: tests.test_chat_irc -*-
"""The chat's IRC face: ``sockproto-chat --irc ENDPOINT``.

IRC clients (irssi, weechat, HexChat, bouncers) join the same hub as the line
and browser users: a room is a channel, nicknames and history are the hub's.
The protocol parses what the client sends (``twisted.words``' ``parsemsg``
and CTCP helpers), runs the registration (``NICK``/``USER``, ``CAP``,
``PASS`` or SASL PLAIN against the chat's one :class:`LoginGate`) and turns
commands into calls on the hub; :class:`IrcFace` renders the hub's
structured events (:mod:`sockproto.chat.events`) as IRC lines, once per
room batch for every IRC member that negotiated the same capabilities.

Topics, modes, bans, invitations, kicks and operators are the chat's room
moderation (:class:`sockproto.chat.moderator.Moderator`, the same the line
and web faces use); its refusals come back as the RFC's numerics
(:func:`refusalNumeric`).  See docs/irc.rst.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from twisted.cred import credentials, error
from twisted.internet import defer, interfaces
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.words.protocols import irc as ircwords
from zope.interface import implementer

from sockproto import __version__
from sockproto.chat import events
from sockproto.chat.events import ChatEvent, IChatFace, IChatMember, RefusalCode, Who
from sockproto.chat.hub import LOBBY, ChatError, ChatHub, Room
from sockproto.chat.login import IChatUser, LoginGate, LoginRefused
from sockproto.chat.moderator import Moderator
from sockproto.chat.protocol import BoundedOutput, OutputGauge
from sockproto.chat.text import NICK_RE, NICK_RULE, ROOM_RE, clean, decode
from sockproto.privateapi import eagerWriter
from sockproto.server.connections import ServerFactory, setSocketOptions
from sockproto.server.lines import TOO_LONG, LineServerProtocol
from sockproto.server.ratelimit import TokenBucket
from sockproto.server.tls import peerIdentity

log = Logger()

#: The longest IRC line, CR LF included (RFC 1459 2.3), not counting message tags.
IRC_LINE = 512
#: Room for the tags a client may send before its message (IRCv3 message-tags).
CLIENT_TAGS = 4096
#: The longest tag data a client may send (IRCv3 message-tags: 4094 bytes, without the ``@`` and the space).
CLIENT_TAG_DATA = CLIENT_TAGS - 2
NICKLEN = 24
#: The longest name kept from USER (a mask's user part is ``~`` and it, as servers without ident checks show it).
USERLEN = 9
CHANNELLEN = 33
TOPICLEN = 300
#: Targets one PRIVMSG or NOTICE may name (ISUPPORT TARGMAX).
MAX_TARGETS = 4
#: Channels one client may be in at once (ISUPPORT CHANLIMIT).
CHANLIMIT = 20
#: Lines a client may send while its registration is not finished (CAP, NICK, USER, PASS, AUTHENTICATE).
MAX_REGISTRATION_LINES = 64
#: Capabilities offered (``sasl`` only where there are logins).
CAPABILITIES = ("away-notify", "echo-message", "message-tags", "multi-prefix", "server-time", "userhost-in-names")
#: The face's name: the host of IRC members' masks (``nick!~user@irc.sockproto``).
FACE = "irc"
#: Idents of IRC members that left or changed nick, kept for the events that still name them
#: (a QUIT rendered after the member is gone) and for WHOWAS.
REMEMBERED = 1000
#: WHOWAS entries kept (the oldest forgotten first).
WHOWAS_KEEP = 200

# Numerics twisted.words' table does not name (IRCv3 and later RFCs).
RPL_ISUPPORT = "005"
RPL_LOCALUSERS = "265"
RPL_GLOBALUSERS = "266"
RPL_TOPICWHOTIME = "333"
RPL_CREATIONTIME = "329"
ERR_INPUTTOOLONG = "417"
#: Not in twisted.words' table: the invalid mode parameter of modern IRC, and who set a topic when.
ERR_INVALIDMODEPARAM = "696"
RPL_TOPICWHOTIME = "333"
RPL_CREATIONTIME = "329"
ERR_BADCHANNAME = "479"
RPL_LOGGEDIN = "900"
RPL_SASLSUCCESS = "903"
ERR_SASLFAIL = "904"
ERR_SASLTOOLONG = "905"
ERR_SASLABORTED = "906"
ERR_SASLALREADY = "907"
RPL_SASLMECHS = "908"

N = ircwords  # the RFC numerics by name: N.ERR_NOSUCHNICK == "401"


def serverTime(when: float) -> str:
    """IRCv3 ``server-time``: ``2026-12-06T03:01:47.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when * 1000) % 1000:03d}Z"


def ircLine(prefix: str, command: str, *params: str, tags: str = "") -> bytes:
    """
    One IRC line: the last parameter is written as a trailing one (``:text``)
    when it has to be (empty, spaces, a leading colon) or is the text of a
    message, which is how clients expect it.
    """
    parts = [f"@{tags} " if tags else "", f":{prefix} " if prefix else "", command]
    if params:
        *middle, last = params
        for param in middle:
            parts.append(" " + param)
        parts.append(" :" + last if not last or " " in last or last[0] == ":" or command in _TRAILING else " " + last)
    parts.append("\r\n")
    return "".join(parts).encode("utf-8")


_TRAILING = frozenset({"PRIVMSG", "NOTICE", "PART", "QUIT", "TOPIC", "KICK", "ERROR", "AWAY"})


def splitText(text: str, room: int) -> list[str]:
    """``text`` in pieces of at most ``room`` bytes of UTF-8, cut between characters (never empty)."""
    data = text.encode("utf-8")
    if len(data) <= room:
        return [text]
    pieces = []
    while data:
        cut = min(room, len(data))
        while cut < len(data) and (data[cut] & 0xC0) == 0x80:
            cut -= 1
        pieces.append(data[:cut].decode("utf-8"))
        data = data[cut:]
    return pieces


def channelName(name: str) -> str | None:
    """The room a channel name means (channels are case-insensitive: ``#Dev`` is ``#dev``), or None."""
    lowered = name.lower()
    return lowered if ROOM_RE.fullmatch(lowered) else None


@implementer(IChatFace)
def refusalNumeric(code: RefusalCode, room: str, about: tuple[str, ...] = (), why: str = "",
                   nicks: Any = None) -> tuple[str, ...] | None:
    """
    The numeric (code, params..., text) that says a refusal of the hub or
    its moderator the IRC way, ``None`` for one IRC has no numeric for (a
    NOTICE says it).  ``room`` is the channel it was about, ``about`` what
    else (a nick, a mode letter and its argument), ``why`` the chat's words;
    ``nicks`` (the hub's, casefolded) tells a nick not in the room from one not on the server.
    """
    first = about[0] if about else "*"
    if code is RefusalCode.NOT_OPERATOR:
        return (N.ERR_CHANOPRIVSNEEDED, room, "You're not channel operator")
    if code is RefusalCode.NOT_THERE:
        if nicks is not None and first.casefold() not in nicks:
            return (N.ERR_NOSUCHNICK, first, "No such nick/channel")
        return (N.ERR_USERNOTINCHANNEL, first, room, "They aren't on that channel")
    if code is RefusalCode.NOT_IN_ROOM:
        return (N.ERR_NOTONCHANNEL, room, "You're not on that channel")
    if code is RefusalCode.ALREADY_IN_ROOM:
        return (N.ERR_USERONCHANNEL, first, room, "is already on channel")
    if code is RefusalCode.BANNED:
        return (N.ERR_BANNEDFROMCHAN, room, "Cannot join channel (+b)")
    if code is RefusalCode.INVITE_ONLY:
        return (N.ERR_INVITEONLYCHAN, room, "Cannot join channel (+i)")
    if code is RefusalCode.BAD_KEY:
        return (N.ERR_BADCHANNELKEY, room, "Cannot join channel (+k)")
    if code is RefusalCode.ROOM_FULL:
        return (N.ERR_CHANNELISFULL, room, "Cannot join channel (+l)")
    if code is RefusalCode.CANNOT_SPEAK:
        return (N.ERR_CANNOTSENDTOCHAN, room, f"Cannot send to channel ({why})" if why else "Cannot send to channel")
    if code is RefusalCode.UNKNOWN_MODE:
        return (N.ERR_UNKNOWNMODE, first, f"is unknown mode char to me for {room}")
    if code is RefusalCode.BAN_LIST_FULL:
        return (N.ERR_BANLISTFULL, room, first, "Channel ban list is full")
    if code is RefusalCode.TOO_MANY_ROOMS:
        return (N.ERR_TOOMANYCHANNELS, room, "You have joined too many channels")
    if code is RefusalCode.NO_SUCH_NICK:
        return (N.ERR_NOSUCHNICK, first, "No such nick/channel")
    if code is RefusalCode.BAD_ROOM:
        return (N.ERR_NOSUCHCHANNEL, room, "No such channel")
    if code is RefusalCode.USAGE:
        if len(about) >= 2:  # a mode's argument that is not right (a key, a limit, a mask)
            letter, argument = about[0], about[1]
            # A key is not repeated (modern IRC shows *), nor an argument that would not be one IRC parameter.
            if letter == "k" or not argument or " " in argument or argument.startswith(":"):
                argument = "*"
            return (ERR_INVALIDMODEPARAM, room, letter, argument, why or "Invalid mode parameter")
        return (N.ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
    return None


class IrcFace:
    """
    Renders the hub's events as IRC lines, for the IRC members that share
    one set of rendering capabilities (``server-time`` or not): a room's
    batch is rendered once per such face.
    """

    name = FACE

    def __init__(self, server: str, withTime: bool, idents: IdentBook | None = None) -> None:
        self.server = server
        self.withTime = withTime
        self.idents = idents if idents is not None else IdentBook({})

    def mask(self, who: Who) -> str:
        """``nick!user@host``; an IRC member's user is its ident (``~`` and the name it gave to USER)."""
        if who.face == FACE:
            ident = self.idents.identOf(who.nick)
            if ident is not None:
                return f"{who.nick}!{ident}@{who.host}"
        return who.mask

    def _tags(self, when: float) -> str:
        return f"time={serverTime(when)}" if self.withTime else ""

    def _said(self, prefix: str, target: str, text: str, when: float, action: bool,
              command: str = "PRIVMSG") -> bytes:
        tags = self._tags(when)
        if action:
            return ircLine(prefix, command, target, f"\x01ACTION {text}\x01", tags=tags)
        # A line user may say 512 bytes: past what one IRC line holds, it goes in several.
        room = IRC_LINE - 2 - len(f":{prefix} {command} {target} :".encode())
        return b"".join(ircLine(prefix, command, target, piece, tags=tags) for piece in splitText(text, room))

    def render(self, event: ChatEvent, recipient: Any = None) -> bytes:
        kind = event.kind
        if kind == "message" or kind == "action":
            assert isinstance(event, events.Message | events.Action)
            return self._said(self.mask(event.sender), event.room, event.text, event.time, kind == "action")
        if kind == "notice":
            assert isinstance(event, events.Notice)
            return self._said(self.mask(event.sender), event.room, event.text, event.time, False, "NOTICE")
        if kind == "join":
            assert isinstance(event, events.Joined)
            return ircLine(self.mask(event.who), "JOIN", event.room, tags=self._tags(event.time))
        if kind == "part":
            assert isinstance(event, events.Parted)
            return ircLine(self.mask(event.who), "PART", event.room, event.reason, tags=self._tags(event.time))
        if kind == "quit":
            assert isinstance(event, events.Quit)
            return ircLine(self.mask(event.who), "QUIT", f"Quit: {event.reason}", tags=self._tags(event.time))
        if kind == "nick":
            assert isinstance(event, events.NickChanged)
            return ircLine(self.mask(event.who), "NICK", event.nick, tags=self._tags(event.time))
        if kind == "topic":
            assert isinstance(event, events.TopicChanged)
            return ircLine(self.mask(event.who), "TOPIC", event.room, event.topic, tags=self._tags(event.time))
        if kind == "kick":
            assert isinstance(event, events.Kicked)
            return ircLine(self.mask(event.who), "KICK", event.room, event.nick, event.reason or event.who.nick,
                           tags=self._tags(event.time))
        if kind == "mode":
            assert isinstance(event, events.ModeChanged)
            return ircLine(self.mask(event.who), "MODE", event.room, event.modes, *event.arguments,
                           tags=self._tags(event.time))
        return self.renderFor(event, recipient)

    def renderFor(self, event: ChatEvent, recipient: Any) -> bytes:
        """Events for one member alone, which IRC addresses by its nick."""
        nick = getattr(recipient, "nick", "") or "*"
        kind = event.kind
        if kind == "private" or kind == "private-notice":
            assert isinstance(event, events.PrivateMessage)
            command = "NOTICE" if kind == "private-notice" else "PRIVMSG"
            if event.echo:
                if not (recipient is not None and recipient.hasCap("echo-message")):
                    return b""
                return self._said(recipient.mask, event.recipient, event.text, event.time, False, command)
            return self._said(self.mask(event.sender), nick, event.text, event.time, False, command)
        if kind == "history":
            assert isinstance(event, events.History)
            return b"".join(self._replayed(entry) for entry in event.entries)
        if kind == "away":
            assert isinstance(event, events.Away)
            return ircLine(self.server, N.RPL_AWAY, nick, event.who.nick, event.text)
        if kind == "members":
            assert isinstance(event, events.MemberList)
            return namesReply(self.server, nick, event.room, event.members, multiPrefix=bool(
                recipient is not None and recipient.hasCap("multi-prefix")))
        if kind == "rooms":
            assert isinstance(event, events.RoomList)
            return b"".join(
                [ircLine(self.server, N.RPL_LISTSTART, nick, "Channel", "Users  Name")]
                + [ircLine(self.server, N.RPL_LIST, nick, room.name, str(room.count), room.topic)
                   for room in event.rooms]
                + [ircLine(self.server, N.RPL_LISTEND, nick, "End of /LIST")]
            )
        if kind == "topicis":
            assert isinstance(event, events.TopicIs)
            if not event.topic:
                return ircLine(self.server, N.RPL_NOTOPIC, nick, event.room, "No topic is set")
            return ircLine(self.server, N.RPL_TOPIC, nick, event.room, event.topic) + ircLine(
                self.server, RPL_TOPICWHOTIME, nick, event.room, event.setter, str(int(event.time)))
        if kind == "invite":
            assert isinstance(event, events.Invited)
            if event.echo:
                return ircLine(self.server, N.RPL_INVITING, nick, event.nick, event.room)
            return ircLine(self.mask(event.who), "INVITE", event.nick, event.room)
        if kind == "modes":
            assert isinstance(event, events.ModeIs)
            return ircLine(self.server, N.RPL_CHANNELMODEIS, nick, event.room, *event.modes.split(" "))
        if kind == "bans":
            assert isinstance(event, events.BanList)
            return banListReply(self.server, nick, event.room, event.bans)
        if kind == "error":
            assert isinstance(event, events.Refusal)
            numeric = (refusalNumeric(event.code, event.room, event.about, event.reason, self.idents.nicks)
                       if event.room else None)
            if numeric is not None:
                return ircLine(self.server, numeric[0], nick, *numeric[1:])
            return ircLine(self.server, "NOTICE", nick, event.reason)
        if kind == "server":
            text = str(getattr(event, "text", None) or getattr(event, "reason", ""))
            return ircLine(self.server, "NOTICE", nick, text)
        if kind == "goodbye":
            assert isinstance(event, events.Goodbye)
            return ircLine("", "ERROR", f"Closing link: {event.text}")
        if kind == "irc-lines":
            assert isinstance(event, IrcLines)
            return event.data
        # welcome, login, help: IRC says those its own way (numerics, 900, MOTD).
        return b""

    def _replayed(self, entry: events.Message | events.Action) -> bytes:
        # History: the speakers' faces are not known, so the prefix is the bare nick (RFC 2812 allows it).
        if self.withTime:
            return self._said(entry.sender.nick, entry.room, entry.text, entry.time, entry.kind == "action")
        stamp = time.strftime("[%H:%M:%S] ", time.localtime(entry.time))
        if entry.kind == "action":
            return ircLine(entry.sender.nick, "PRIVMSG", entry.room, f"\x01ACTION {stamp}{entry.text}\x01")
        return self._said(entry.sender.nick, entry.room, stamp + entry.text, entry.time, False)

    def membersChanged(self, room: str, members: Iterable[Any]) -> None:
        """IRC clients keep their member lists from JOIN, PART, QUIT and NICK lines."""


class IdentBook:
    """
    The idents of this server's IRC members by nick, for masks: the live
    members' from the hub, and those of the last :data:`REMEMBERED` nicks
    that went away (a QUIT or NICK line is rendered after the change).
    """

    def __init__(self, nicks: dict[str, Any]) -> None:
        self.nicks = nicks
        self.gone: dict[str, str] = {}

    def identOf(self, nick: str) -> str | None:
        key = nick.casefold()
        member = self.nicks.get(key)
        if member is not None and member.nick == nick:
            ident = getattr(member, "ident", None)
            if ident is not None:
                return str(ident)
        return self.gone.get(key)

    def remember(self, nick: str, ident: str) -> None:
        gone = self.gone
        gone.pop(nick.casefold(), None)
        gone[nick.casefold()] = ident
        if len(gone) > REMEMBERED:
            del gone[next(iter(gone))]


def namesReply(server: str, nick: str, room: str, members: Iterable[Any], multiPrefix: bool,
               masks: dict[str, str] | None = None) -> bytes:
    """
    353 lines (as many as the names need, each under 512 bytes) and 366;
    with ``masks`` (``userhost-in-names``), each nick found there is shown as its mask.
    """
    head = f":{server} {N.RPL_NAMREPLY} {nick} = {room} :"
    room_for_names = IRC_LINE - 2 - len(head.encode())
    lines = []
    current: list[str] = []
    used = 0
    for member in members:
        if multiPrefix:
            prefix = ("@" if member.operator else "") + ("+" if member.voiced else "")
        else:
            prefix = member.prefix
        name = prefix + (masks.get(member.nick, member.nick) if masks is not None else member.nick)
        if current and used + 1 + len(name) > room_for_names:
            lines.append(ircLine(server, N.RPL_NAMREPLY, nick, "=", room, " ".join(current) + " "))
            current, used = [], 0
        current.append(name)
        used += len(name) + 1
    if current:
        lines.append(ircLine(server, N.RPL_NAMREPLY, nick, "=", room, " ".join(current)))
    lines.append(ircLine(server, N.RPL_ENDOFNAMES, nick, room, "End of /NAMES list"))
    return b"".join(lines)


def banListReply(server: str, nick: str, room: str, bans: Iterable[events.BanEntry]) -> bytes:
    """367 for each ban (mask, who set it, when) and 368."""
    lines = [ircLine(server, N.RPL_BANLIST, nick, room, ban.mask, ban.setter, str(int(ban.time))) for ban in bans]
    lines.append(ircLine(server, N.RPL_ENDOFBANLIST, nick, room, "End of channel ban list"))
    return b"".join(lines)


@dataclass(frozen=True, slots=True)
class IrcLines(ChatEvent):
    """
    Lines of this face's own (numerics, replies) for one IRC member, told
    through the hub so they come after what the member's room said before.
    """

    kind: ClassVar[str] = "irc-lines"
    data: bytes


class _Refused(Exception):
    """A command refused with a numeric: (code, params...) for :meth:`IrcProtocol.numeric`."""


@implementer(IChatMember)
class IrcProtocol(BoundedOutput, LineServerProtocol):
    """
    One IRC client.  State is kept in class defaults until it changes, so an
    idle connection holds little more than its transport.
    """

    factory: IrcFactory
    errorPrefix = "ERROR :"
    # -- what the hub sets and reads (nick: a property below)
    _nick = ""
    room: Room | None = None
    face: IrcFace
    # -- registration
    wantedNick = ""
    username = ""
    realname = ""
    password: str | None = None
    capsNegotiating = False
    caps: frozenset[str] = frozenset()
    saslBuffer: str | None = None
    account: str | None = None
    registering = False
    registered = False
    entered = False
    preludeLines = 0
    # -- later
    awayText = ""
    logName = "irc"
    quitting = False
    #: Lines waiting for flood control (fake lag) or for an answer from the hub.
    held: tuple[Any, ...] = ()
    awaiting = False
    _lagCall: Any = None
    loginAttempt: defer.Deferred[Any] | None = None
    signedOn = 0.0

    # -- connection -------------------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        self.maxLineLength = IRC_LINE - 2 + CLIENT_TAGS
        LineServerProtocol.connectionMade(self)
        transport = self.transport
        setSocketOptions(transport, keepAlive=factory.keepAlive)
        if interfaces.IConsumer.providedBy(transport):
            transport.registerProducer(OutputGauge(self), True)
            self._producing = True
        self._transmit = eagerWriter(transport, self.traffic)
        self.face = factory.faces[False]
        self.bucket = None
        if factory.floodRate:
            self.bucket = TokenBucket(factory.floodRate, factory.floodBurst, factory.clock.seconds())

    @property
    def nick(self) -> str:
        return self._nick

    @nick.setter
    def nick(self, nick: str) -> None:
        # The hub renames members (a NICK, a verified user taking a guest's name): the old
        # name's ident is kept for the NICK line rendered after, and for WHOWAS.
        old = self._nick
        if old and old != nick and self.registered:
            self.factory.idents.remember(old, self.ident)
            self.factory.rememberGone(self)
        self._nick = nick

    @property
    def ident(self) -> str:
        """The user part of this client's mask: ``~`` (no ident check) and the name it gave to USER."""
        return "~" + self.username

    @property
    def server(self) -> str:
        return self.factory.serverName

    @property
    def mask(self) -> str:
        return f"{self.nick}!{self.ident}@{Who(self.nick, FACE).host}"

    def hasCap(self, name: str) -> bool:
        return name in self.caps

    # -- output -----------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Output from the hub.  A client that does not read is dropped, not buffered without end."""
        if not self.registered or self.dropped:
            return  # what the hub says while a guest is being renamed is not for the client
        self.write(data)

    def channels(self) -> list[str]:
        """The channels (rooms) this client is in, in the order joined."""
        return [room.name for room in self.factory.hub.roomsOf(self)]

    def ownChannel(self, target: str) -> str:
        """The room ``target`` names, which this client must be in: else 403 or 442."""
        room = channelName(target)
        hub = self.factory.hub
        if room is None or room not in hub.rooms:
            raise _Refused(N.ERR_NOSUCHCHANNEL, clean(target)[:CHANNELLEN + 8], "No such channel")
        if hub.inRoom(self, room) is None:
            raise _Refused(N.ERR_NOTONCHANNEL, room, "You're not on that channel")
        return room

    write = BoundedOutput.deliver

    def numeric(self, code: str, *params: str) -> None:
        """A numeric reply to this client, in order with what its room was told before."""
        self.reply(ircLine(self.server, code, self.nick or "*", *params))

    def reply(self, data: bytes) -> None:
        if self.entered:
            self.factory.hub.tell(self, IrcLines(data))
        else:
            self.write(data)

    def notice(self, text: str) -> None:
        self.reply(ircLine(self.server, "NOTICE", self.nick or "*", text))

    def refuse(self, refusal: ChatError, room: str, about: tuple[str, ...] = ()) -> None:
        """The hub's or the moderator's refusal about ``room``: its numeric, or a NOTICE where IRC has none."""
        numeric = refusalNumeric(refusal.code, room, about, str(refusal), self.factory.hub.nicks)
        if numeric is None:
            self.notice(str(refusal))
        else:
            self.numeric(*numeric)

    @property
    def moderator(self) -> Moderator:
        return self.factory.moderator

    def statusIn(self, room: str, nick: str) -> str:
        """``nick``'s prefix in ``room``: ``@``, ``+`` or ``""`` (``@+`` with multi-prefix)."""
        if room not in self.moderator.states:
            return ""
        membership = self.moderator.memberships(room, (nick,))[0]
        if self.hasCap("multi-prefix"):
            return ("@" if membership.operator else "") + ("+" if membership.voiced else "")
        return membership.prefix

    # -- input ------------------------------------------------------------------

    def linesReceived(self, lines: list[Any]) -> None:
        if self.awaiting or self.held:
            self.hold(lines)
            return
        bucket = self.bucket
        now = self.factory.clock.seconds()
        for index, line in enumerate(lines):
            if self.dropped or self.quitting or self.transport.disconnecting:
                return
            if bucket is not None and not bucket.take(now):
                # Fake lag, as IRC servers do: the rest waits its turn, and nothing is lost.
                self.hold(lines[index:])
                self._lagCall = self.factory.clock.callLater(1.0 / self.factory.floodRate, self._unlag)
                return
            if line is TOO_LONG:
                self.numeric(ERR_INPUTTOOLONG, "Input line was too long")
                continue
            self.lineReceived(line)
            if self.awaiting:
                self.hold(lines[index + 1:])
                return

    def hold(self, lines: list[Any]) -> None:
        if lines:
            self.held = (*self.held, *lines)
            self.transport.pauseProducing()

    def _unlag(self) -> None:
        self._lagCall = None
        self.release()

    def release(self) -> None:
        held, self.held = self.held, ()
        if held and not self.closed:
            self.transport.resumeProducing()
            self.linesReceived(list(held))

    def lineReceived(self, line: bytes) -> None:
        if line[:1] == b"@":
            # IRCv3 tags from the client: none is acted on (no client-only tags are relayed).
            tags, _, line = line.partition(b" ")
            if len(tags) - 1 > CLIENT_TAG_DATA:
                self.numeric(ERR_INPUTTOOLONG, "Input line was too long")
                return
            line = line.lstrip(b" ")
        if len(line) > IRC_LINE - 2:
            self.numeric(ERR_INPUTTOOLONG, "Input line was too long")
            return
        text = decode(line).strip("\r\n")
        if not text.strip():
            return
        try:
            prefix, command, params = ircwords.parsemsg(text)
        except (IndexError, ValueError):
            return
        command = command.upper()
        if not self.registered:
            if command not in _BEFORE_REGISTRATION:
                if command.isalpha() or command.isdigit():
                    self.numeric(N.ERR_NOTREGISTERED, "You have not registered")
                return
            self.preludeLines += 1
            if self.preludeLines > MAX_REGISTRATION_LINES:
                self.closeWithError("Too many lines before registration")
                return
        handler = getattr(self, "irc_" + command, None) if command.isalnum() else None
        if handler is None:
            self.numeric(N.ERR_UNKNOWNCOMMAND, clean(command)[:32], "Unknown command")
            return
        try:
            handler(params)
        except _Refused as refusal:
            self.numeric(*refusal.args)
        except ChatError as e:
            self.notice(str(e))

    # -- registration -------------------------------------------------------------

    def irc_CAP(self, params: list[str]) -> None:
        if not params:
            raise _Refused(N.ERR_NEEDMOREPARAMS, "CAP", "Not enough parameters")
        sub = params[0].upper()
        nick = self.nick or self.wantedNick or "*"
        offered = self.factory.capabilities
        if sub == "LS":
            if not self.registered:
                self.capsNegotiating = True
            version = params[1] if len(params) > 1 else ""
            shown = [f"sasl={'PLAIN'}" if cap == "sasl" and version.isdigit() and int(version) >= 302 else cap
                     for cap in offered]
            self.write(ircLine(self.server, "CAP", nick, "LS", " ".join(shown)))
        elif sub == "LIST":
            self.write(ircLine(self.server, "CAP", nick, "LIST", " ".join(sorted(self.caps))))
        elif sub == "REQ":
            if not self.registered:
                self.capsNegotiating = True
            asked = params[1].split() if len(params) > 1 else []
            caps = set(self.caps)
            for cap in asked:
                name = cap[1:] if cap.startswith("-") else cap
                if name not in offered:
                    self.write(ircLine(self.server, "CAP", nick, "NAK", " ".join(asked)))
                    return
                caps.discard(name) if cap.startswith("-") else caps.add(name)
            if self.entered and ("server-time" in caps) != ("server-time" in self.caps):
                # The hub files a member under its face when it joins a room: the face is fixed by then.
                self.write(ircLine(self.server, "CAP", nick, "NAK", " ".join(asked)))
                return
            self.caps = frozenset(caps)
            self.face = self.factory.faces["server-time" in self.caps]
            self.write(ircLine(self.server, "CAP", nick, "ACK", " ".join(asked)))
        elif sub == "END":
            if not self.registered and self.capsNegotiating:
                self.capsNegotiating = False
                self.tryRegistration()
        else:
            raise _Refused("410", clean(params[0])[:20], "Invalid CAP command")

    def irc_PASS(self, params: list[str]) -> None:
        if self.registered or self.registering:
            raise _Refused(N.ERR_ALREADYREGISTRED, "You may not reregister")
        if not params or not params[0]:
            raise _Refused(N.ERR_NEEDMOREPARAMS, "PASS", "Not enough parameters")
        self.password = params[0]

    def irc_NICK(self, params: list[str]) -> None:
        if not params or not params[0]:
            raise _Refused(N.ERR_NONICKNAMEGIVEN, "No nickname given")
        wanted = params[0]
        if not NICK_RE.fullmatch(wanted):
            raise _Refused(N.ERR_ERRONEUSNICKNAME, clean(wanted)[:32],
                           f"Erroneous nickname ({NICK_RULE})")
        hub = self.factory.hub
        if not self.registered:
            holder = hub.nicks.get(wanted.casefold())
            if (holder is not None and holder is not self) or wanted.casefold() in hub.identities:
                raise _Refused(N.ERR_NICKNAMEINUSE, wanted, "Nickname is already in use")
            self.wantedNick = wanted
            self.tryRegistration()
            return
        if wanted == self.nick:
            return
        if self.account is not None or self.factory.hub.nicks.get(self.nick.casefold()) is not self:
            raise _Refused(N.ERR_ERRONEUSNICKNAME, wanted, "Your nickname is your account name here")
        holder = hub.nicks.get(wanted.casefold())
        if (holder is not None and holder is not self) or wanted.casefold() in hub.identities:
            raise _Refused(N.ERR_NICKNAMEINUSE, wanted, "Nickname is already in use")
        self.answer(hub.changeNick(self, wanted), refused=lambda why: self.numeric(
            N.ERR_NICKNAMEINUSE, wanted, why))

    def irc_USER(self, params: list[str]) -> None:
        if self.registered or self.registering:
            raise _Refused(N.ERR_ALREADYREGISTRED, "You may not reregister")
        if len(params) < 4 or not params[0]:
            raise _Refused(N.ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")
        self.username = "".join(c for c in params[0] if c.isascii() and (c.isalnum() or c in "_-."))[:USERLEN] or "user"
        self.realname = clean(params[3])[:100]
        self.tryRegistration()

    def irc_AUTHENTICATE(self, params: list[str]) -> None:
        gate = self.factory.loginGate
        if gate is None:
            raise _Refused(ERR_SASLFAIL, "SASL authentication failed: this server has no logins")
        if self.account is not None:
            raise _Refused(ERR_SASLALREADY, "You have already authenticated")
        if self.registered or self.registering:
            raise _Refused(ERR_SASLALREADY, "SASL is for before registration")
        if not params:
            raise _Refused(N.ERR_NEEDMOREPARAMS, "AUTHENTICATE", "Not enough parameters")
        chunk = params[0]
        if chunk == "*":
            self.saslBuffer = None
            raise _Refused(ERR_SASLABORTED, "SASL authentication aborted")
        if self.saslBuffer is None:
            if chunk.upper() != "PLAIN":
                self.write(ircLine(self.server, RPL_SASLMECHS, self.wantedNick or "*", "PLAIN",
                                   "are available SASL mechanisms"))
                raise _Refused(ERR_SASLFAIL, "SASL authentication failed")
            self.saslBuffer = ""
            self.write(ircLine("", "AUTHENTICATE", "+"))
            return
        if chunk != "+":
            self.saslBuffer += chunk
            if len(self.saslBuffer) > 1200:
                self.saslBuffer = None
                raise _Refused(ERR_SASLTOOLONG, "SASL message too long")
            if len(chunk) == 400:
                return  # more to come
        payload, self.saslBuffer = self.saslBuffer, None
        try:
            _, name, password = base64.b64decode(payload, validate=True).decode("utf-8").split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise _Refused(ERR_SASLFAIL, "SASL authentication failed: not PLAIN") from None
        self.checkLogin(name, password, sasl=True)

    def checkLogin(self, name: str, password: str, sasl: bool) -> None:
        """Ask the chat's login gate (its per-host backoff holds on every face); what follows waits."""
        gate = self.factory.loginGate
        assert gate is not None
        self.awaiting = True
        host = str(getattr(self.transport.getPeer(), "host", self.peer))
        creds = credentials.UsernamePassword(name.encode("utf-8"), password.encode("utf-8"))
        d = self.loginAttempt = gate.login(host, creds, IChatUser)

        def settle() -> None:
            self.awaiting = False
            self.loginAttempt = None

        def loggedIn(result: Any) -> None:
            _, avatar, _ = result
            settle()
            if self.closed:
                return
            log.info("irc login by {user} from {peer}", user=avatar, peer=self.peer)
            self.account = avatar
            if sasl:
                mask = Who(avatar, FACE).mask
                self.write(ircLine(self.server, RPL_LOGGEDIN, self.wantedNick or "*", mask, avatar,
                                   f"You are now logged in as {avatar}"))
                self.write(ircLine(self.server, RPL_SASLSUCCESS, self.wantedNick or "*",
                                   "SASL authentication successful"))
            self.tryRegistration()
            self.release()

        def failed(why: str) -> None:
            settle()
            if self.closed:
                return
            if sasl:
                self.write(ircLine(self.server, ERR_SASLFAIL, self.wantedNick or "*",
                                   f"SASL authentication failed: {why}"))
                self.release()
            else:
                self.write(ircLine(self.server, N.ERR_PASSWDMISMATCH, self.wantedNick or "*",
                                   f"Password incorrect: {why}"))
                self.closeWithError("Bad password")

        def refused(failure: Any) -> None:
            failure.trap(error.UnauthorizedLogin, error.UnhandledCredentials, LoginRefused, defer.CancelledError)
            if failure.check(defer.CancelledError):
                return
            if failure.check(LoginRefused):
                self.factory.errors["login_refused"] += 1
                failed(str(failure.value))
                return
            self.factory.errors["login_failed"] += 1
            log.info("irc failed login for {user!r} from {peer}", user=name, peer=self.peer)
            # Answered once the host may try again, as /login does.
            self.factory.clock.callLater(gate.retryAfter(host), failed, "wrong name or password")

        def broken(failure: Any) -> None:
            log.failure("irc login check failed", failure)
            failed("the server could not check it")

        d.addCallbacks(loggedIn, refused).addErrback(broken)

    def tryRegistration(self) -> None:
        """NICK and USER given, CAP negotiation over, logins done: enter the chat."""
        if self.registered or self.registering or self.awaiting:
            return
        if not self.wantedNick or not self.username or self.capsNegotiating or self.saslBuffer is not None:
            return
        factory = self.factory
        identity = peerIdentity(self.transport)
        if identity is None and factory.loginGate is not None:
            if self.account is None:
                if self.password is None:
                    self.write(ircLine(self.server, N.ERR_PASSWDMISMATCH, self.wantedNick,
                                       "This server needs a login: PASS NAME:PASSWORD or SASL PLAIN"))
                    self.closeWithError("Login required")
                    return
                name, colon, password = self.password.partition(":")
                if not colon:
                    name, password = self.wantedNick, self.password
                self.checkLogin(name, password, sasl=False)
                return
            identity = self.account
        self.registering = True
        self.awaiting = True
        try:
            d = factory.hub.enter(self, identity, lobby=False)
        except ChatError as e:
            self.registering = self.awaiting = False
            self.closeWithError(str(e))
            return
        d.addCallback(self._entered, identity).addErrback(self._notEntered)

    def _entered(self, _: Any, identity: str | None) -> defer.Deferred[None] | None:
        self.entered = True
        if self.closed:
            self.leaveHub("connection closed")
            return None
        wanted = self.wantedNick
        if identity is not None or wanted == self.nick:
            self._welcome()
            return None

        # A guest first: then the nickname it asked for, if it is still free.
        def renamed(_: Any) -> None:
            self._welcome()

        def keptGuestName(failure: Any) -> None:
            failure.trap(ChatError)
            self._welcome()
            self.notice(f"{wanted} was taken meanwhile: you are {self.nick}")

        try:
            d = self.factory.hub.changeNick(self, wanted)
        except ChatError as e:
            d = defer.fail(e)
        return d.addCallbacks(renamed, keptGuestName)

    def _notEntered(self, failure: Any) -> None:
        self.registering = self.awaiting = False
        if not failure.check(ChatError):
            log.failure("irc could not let {peer} in", failure, peer=self.peer)
        if not self.closed:
            self.closeWithError(str(failure.value) if failure.check(ChatError) else "The chat cannot take you now")

    def _welcome(self) -> None:
        self.registering = False
        self.awaiting = False
        if self.closed:
            return
        self.registered = True
        self.signedOn = self.factory.clock.seconds()
        factory = self.factory
        nick = self.nick
        server = self.server
        lines = [
            ircLine(server, N.RPL_WELCOME, nick, f"Welcome to the {factory.network} chat, {self.mask}"),
            ircLine(server, N.RPL_YOURHOST, nick, f"Your host is {server}, running sockproto-{__version__}"),
            ircLine(server, N.RPL_CREATED, nick, f"This server was created {factory.created}"),
            ircLine(server, N.RPL_MYINFO, nick, server, f"sockproto-{__version__}", "i", "ntmikl", "kl"),
        ]
        tokens = factory.isupport()
        for start in range(0, len(tokens), 12):
            lines.append(ircLine(server, RPL_ISUPPORT, nick, *tokens[start:start + 12], "are supported by this server"))
        self.write(b"".join(lines))
        self.irc_LUSERS([])
        self.irc_MOTD([])
        self.release()

    # -- answers the hub may give later ------------------------------------------------

    def answer(self, d: defer.Deferred[Any], then: Any = None, refused: Any = None, room: str = "",
               about: tuple[str, ...] = ()) -> None:
        """
        ``then(result)`` once the hub has done it; if it would not,
        ``refused(why)``, or, about ``room``, the refusal's numeric
        (:meth:`refuse`), or a NOTICE.
        """

        def failed(failure: Any) -> None:
            if not failure.check(ChatError):
                log.failure("irc request failed for {peer}", failure, peer=self.peer)
            if not self.closed and not self.dropped:
                why = str(failure.value) if failure.check(ChatError) else "the server could not do that now"
                if refused is not None:
                    refused(why)
                elif room and failure.check(ChatError):
                    self.refuse(failure.value, room, about)
                else:
                    self.notice(why)

        def done(result: Any) -> None:
            if then is not None and not self.closed and not self.dropped:
                then(result)

        if d.called:
            d.addCallbacks(done, failed)
            return
        self.awaiting = True

        def resume(_: Any) -> None:
            self.awaiting = False
            self.release()

        d.addCallbacks(done, failed).addBoth(resume)

    # -- commands -------------------------------------------------------------------

    def irc_PING(self, params: list[str]) -> None:
        if not params:
            raise _Refused(N.ERR_NOORIGIN, "No origin specified")
        self.reply(ircLine(self.server, "PONG", self.server, params[0]))

    def irc_PONG(self, params: list[str]) -> None:
        pass  # any input keeps the connection from being idle

    def irc_QUIT(self, params: list[str]) -> None:
        reason = clean(params[0])[:200].strip() if params else ""
        self.quitting = True
        self.leaveHub(reason or "quit")
        self.write(ircLine("", "ERROR", f"Closing link: {self.peer} (Quit: {reason or 'quit'})"))
        self.closeConnection()

    def irc_JOIN(self, params: list[str]) -> None:
        if not params or not params[0]:
            raise _Refused(N.ERR_NEEDMOREPARAMS, "JOIN", "Not enough parameters")
        if params[0] == "0":
            for joined in self.channels():
                self.factory.hub.part(self, joined, "Left all channels")
            return
        targets = params[0].split(",")
        keys = params[1].split(",") if len(params) > 1 else []
        for index, target in enumerate(targets):
            key = keys[index] if index < len(keys) and keys[index] else None
            room = channelName(target)
            if room is None:
                self.numeric(N.ERR_NOSUCHCHANNEL, clean(target)[:CHANNELLEN + 8], "No such channel")
                continue
            if self.factory.hub.inRoom(self, room) is not None:
                continue
            if len(self.factory.hub.roomsOf(self)) >= CHANLIMIT:
                self.numeric(N.ERR_TOOMANYCHANNELS, room, "You have joined too many channels")
                continue
            try:
                d = self.factory.hub.joinAlso(self, room, history=False, key=key)
            except ChatError as e:
                d = defer.fail(e)
            self.answer(d, then=lambda _, room=room: self.joined(room), room=room)
            if self.awaiting:
                rest = ",".join(targets[index + 1:])
                if rest:
                    restKeys = ",".join(keys[index + 1:])
                    self.held = (f"JOIN {rest} {restKeys}".rstrip().encode(), *self.held)
                return

    def joined(self, room: str) -> None:
        """In ``room`` now (the JOIN line came from the hub): its topic, names and history."""
        hub = self.factory.hub
        if hub.inRoom(self, room) is None:
            return
        self.showNames(room)
        hub.replay(self, hub.historyOnJoin, quiet=True, name=room)
        if self.awayText:
            # away-notify: who is away is told when it arrives, as when it goes away.
            self.tellAway([hub.rooms[room]])

    def irc_PART(self, params: list[str]) -> None:
        if not params or not params[0]:
            raise _Refused(N.ERR_NEEDMOREPARAMS, "PART", "Not enough parameters")
        reason = clean(params[1])[:200] if len(params) > 1 else ""
        for target in params[0].split(","):
            try:
                room = self.ownChannel(target)
            except _Refused as refusal:
                self.numeric(*refusal.args)
                continue
            self.factory.hub.part(self, room, reason)

    def irc_PRIVMSG(self, params: list[str], command: str = "PRIVMSG") -> None:
        quiet = command == "NOTICE"  # RFC 2812 3.3.2: no automatic reply to a NOTICE
        if not params or not params[0]:
            if not quiet:
                raise _Refused(N.ERR_NORECIPIENT, f"No recipient given ({command})")
            return
        if len(params) < 2 or not params[1]:
            if not quiet:
                raise _Refused(N.ERR_NOTEXTTOSEND, "No text to send")
            return
        targets = params[0].split(",")
        if len(targets) > MAX_TARGETS:
            if not quiet:
                raise _Refused(N.ERR_TOOMANYTARGETS, params[0][:64], "Too many targets")
            return
        raw = params[1]
        ctcp = ircwords.ctcpExtract(raw) if ircwords.X_DELIM in raw else None
        action = None
        if ctcp is not None:
            for tag, data in ctcp["extended"]:
                if tag == "ACTION":
                    action = clean(data or "")
            if action is None:
                return  # other CTCP (VERSION, PING...) is not passed on: the other faces cannot answer it
        text = clean(action if action is not None else raw)
        if not text.strip():
            if not quiet:
                raise _Refused(N.ERR_NOTEXTTOSEND, "No text to send")
            return
        hub = self.factory.hub
        for target in targets:
            if target.startswith("#"):
                room = channelName(target)
                if room is None or room not in hub.rooms:
                    if not quiet:
                        self.numeric(N.ERR_NOSUCHNICK, clean(target)[:40], "No such nick/channel")
                    continue
                if hub.inRoom(self, room) is None:
                    if not quiet:
                        self.numeric(N.ERR_CANNOTSENDTOCHAN, room, "Cannot send to channel (you are not in it)")
                    continue
                try:
                    if action is not None:
                        hub.act(self, text, room)
                    elif quiet:
                        hub.notice(self, text, room)
                    else:
                        hub.say(self, text, room)
                except ChatError as refusal:  # +m, a ban
                    if not quiet:
                        self.refuse(refusal, room)
                    continue
                if self.hasCap("echo-message"):
                    self.reply(self.face._said(self.mask, room, text, self.factory.clock.seconds(),
                                               action is not None, command))
                continue
            if action is not None:
                text = f"* {self.nick} {text}"  # the chat's private messages have no actions
            try:
                d = hub.privateMessage(self, target, text, notice=quiet)
            except ChatError:
                d = defer.fail(ChatError(target))
            self.answer(d, then=None if quiet else lambda _, target=target: self.tellIfAway(target),
                        refused=(lambda why: None) if quiet else (
                lambda why, target=target: self.numeric(N.ERR_NOSUCHNICK, clean(target)[:40],
                                                        "No such nick/channel")))
            if self.awaiting:
                return

    def tellIfAway(self, nick: str) -> None:
        """301 RPL_AWAY after a private message to a member who is away (not after a NOTICE)."""
        member = self.factory.hub.nicks.get(nick.casefold())
        away = getattr(member, "awayText", "")
        if member is not None and away:
            self.numeric(N.RPL_AWAY, member.nick, away)

    def irc_NOTICE(self, params: list[str]) -> None:
        # A notice to IRC members; the line and web faces show it as a message.
        self.irc_PRIVMSG(params, command="NOTICE")

    def irc_NAMES(self, params: list[str]) -> None:
        if not params or not params[0]:
            for joined in self.channels():
                self.showNames(joined)
            if not self.channels():
                self.numeric(N.RPL_ENDOFNAMES, "*", "End of /NAMES list")
            return
        for target in params[0].split(","):
            room = channelName(target)
            if room is not None and room in self.factory.hub.rooms:
                self.showNames(room)
            else:
                self.numeric(N.RPL_ENDOFNAMES, room or clean(target)[:40], "End of /NAMES list")

    def showNames(self, room: str) -> None:
        """353 and 366 for ``room`` (the rooms are public: anyone may see who is in one)."""

        def show(names: list[str]) -> None:
            members = self.moderator.memberships(room, names)
            masks = None
            if self.hasCap("userhost-in-names"):
                hub = self.factory.hub
                masks = {}
                for name in names:
                    member = hub.nicks.get(name.casefold())
                    if member is not None:
                        shown = whoOf(member)
                        masks[name] = f"{name}!{shown.user}@{shown.host}"
            self.reply(namesReply(self.server, self.nick, room, members, self.hasCap("multi-prefix"), masks))

        self.answer(self.factory.hub.whenNames(self, room), show)

    def irc_LIST(self, params: list[str]) -> None:
        wanted = {channelName(t) for t in params[0].split(",")} if params and params[0] else None

        def show(rooms: list[tuple[str, int]]) -> None:
            lines = [ircLine(self.server, N.RPL_LISTSTART, self.nick, "Channel", "Users  Name")]
            lines += [ircLine(self.server, N.RPL_LIST, self.nick, name, str(count), "")
                      for name, count in rooms if wanted is None or name in wanted]
            lines.append(ircLine(self.server, N.RPL_LISTEND, self.nick, "End of /LIST"))
            self.reply(b"".join(lines))

        self.answer(self.factory.hub.whenRooms(), show)

    def irc_TOPIC(self, params: list[str]) -> None:
        if not params or not params[0]:
            raise _Refused(N.ERR_NEEDMOREPARAMS, "TOPIC", "Not enough parameters")
        room = self.ownChannel(params[0])
        text = params[1] if len(params) > 1 else None
        try:
            d = self.moderator.topic(self, room, text)
        except ChatError as refusal:
            self.refuse(refusal, room)
            return
        self.answer(d, room=room)

    def irc_MODE(self, params: list[str]) -> None:
        if not params or not params[0]:
            raise _Refused(N.ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
        target = params[0]
        if not target.startswith("#"):
            if target.casefold() != self.nick.casefold():
                if target.casefold() in self.factory.hub.nicks:
                    raise _Refused(N.ERR_USERSDONTMATCH, "Cant change mode for other users")
                raise _Refused(N.ERR_NOSUCHNICK, clean(target)[:40], "No such nick/channel")
            if len(params) == 1:
                self.numeric(N.RPL_UMODEIS, "+")
            else:
                raise _Refused(N.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag (no user modes here)")
            return
        room = channelName(target)
        if room is None or room not in self.factory.hub.rooms:
            raise _Refused(N.ERR_NOSUCHCHANNEL, clean(target)[:40], "No such channel")
        state = self.moderator.states.get(room)
        change = params[1] if len(params) > 1 else ""
        if not change:
            # Anyone may ask (the rooms are public); the key is shown to the room's members only.
            modes = state.modeString if state is not None else "+"
            if state is not None and state.key is not None and self.factory.hub.inRoom(self, room) is None:
                modes = modes.replace(state.key, "*", 1)
            self.numeric(N.RPL_CHANNELMODEIS, room, *modes.split(" "))
            self.numeric(RPL_CREATIONTIME, room, str(int(self.factory.hub.rooms[room].created)))
            return
        if change in ("b", "+b") and len(params) == 2:
            bans = [] if state is None else [events.BanEntry(ban.mask, ban.setter, ban.time)
                                             for ban in state.bans.values()]
            self.reply(banListReply(self.server, self.nick, room, bans))
            return
        if change in ("e", "+e", "I", "+I") and len(params) == 2:
            # No exceptions or invitation masks here: their lists are empty, as clients that ask expect.
            code, text = ((N.RPL_ENDOFEXCEPTLIST, "End of channel exception list") if change[-1] == "e"
                          else (N.RPL_ENDOFINVITELIST, "End of channel invite list"))
            self.numeric(code, room, text)
            return
        self.ownChannel(room)
        try:
            d = self.moderator.mode(self, room, change, params[2:])
        except ChatError as refusal:
            self.refuse(refusal, room)
            return
        self.answer(d, room=room)

    def irc_KICK(self, params: list[str]) -> None:
        if len(params) < 2 or not params[1]:
            raise _Refused(N.ERR_NEEDMOREPARAMS, "KICK", "Not enough parameters")
        room = self.ownChannel(params[0])
        reason = clean(params[2])[:TOPICLEN] if len(params) > 2 else ""
        for nick in params[1].split(",")[:MAX_TARGETS]:
            shown = clean(nick)[:NICKLEN + 8]
            try:
                d = self.moderator.kick(self, nick, reason, room)
            except ChatError as refusal:
                self.refuse(refusal, room, (shown,))
                continue
            self.answer(d, room=room, about=(shown,))
            if self.awaiting:
                return  # a cluster asks who is in the room: one kick at a time

    def irc_INVITE(self, params: list[str]) -> None:
        if len(params) < 2:
            raise _Refused(N.ERR_NEEDMOREPARAMS, "INVITE", "Not enough parameters")
        nick, target = params[0], params[1]
        hub = self.factory.hub
        member = hub.nicks.get(nick.casefold())
        if member is None or member not in hub.present:
            raise _Refused(N.ERR_NOSUCHNICK, clean(nick)[:40], "No such nick/channel")
        room = self.ownChannel(target)
        try:
            d = self.moderator.invite(self, member.nick, room)
        except ChatError as refusal:
            self.refuse(refusal, room, (member.nick,))
            return
        # 341 to the one who invites, INVITE to the invited (the Invited events, rendered by each face).
        self.answer(d, room=room, about=(member.nick,))

    def irc_AWAY(self, params: list[str]) -> None:
        text = clean(params[0])[:TOPICLEN].strip() if params else ""
        self.awayText = text
        if text:
            self.numeric(N.RPL_NOWAWAY, "You have been marked as being away")
        else:
            self.numeric(N.RPL_UNAWAY, "You are no longer marked as being away")
        self.tellAway(self.factory.hub.roomsOf(self))

    def tellAway(self, rooms: list[Room]) -> None:
        """away-notify, once to each of this server's IRC members in ``rooms`` (the other faces have no away yet)."""
        text = self.awayText
        line = ircLine(self.mask, "AWAY", text) if text else ircLine(self.mask, "AWAY")
        told: set[Any] = {self}
        for room in rooms:
            for member in list(room.members):
                if member not in told and isinstance(member, IrcProtocol) and member.hasCap("away-notify"):
                    told.add(member)
                    member.reply(line)

    def irc_WHOIS(self, params: list[str]) -> None:
        if not params or not params[0]:
            raise _Refused(N.ERR_NONICKNAMEGIVEN, "No nickname given")
        nicks = params[-1]
        for nick in nicks.split(",")[:MAX_TARGETS]:
            member = self.factory.hub.nicks.get(nick.casefold())
            if member is None:
                self.numeric(N.ERR_NOSUCHNICK, clean(nick)[:40], "No such nick/channel")
                self.numeric(N.RPL_ENDOFWHOIS, clean(nick)[:40], "End of /WHOIS list")
                continue
            who = whoOf(member)
            name = member.nick
            self.numeric(N.RPL_WHOISUSER, name, who.user, who.host, "*", who.realname)
            channels = [self.statusIn(room.name, name) + room.name for room in self.factory.hub.roomsOf(member)]
            if channels:
                self.numeric(N.RPL_WHOISCHANNELS, name, " ".join(channels))
            self.numeric(N.RPL_WHOISSERVER, name, self.server, f"{self.factory.network} chat")
            away = getattr(member, "awayText", "")
            if away:
                self.numeric(N.RPL_AWAY, name, away)
            if name.casefold() in self.factory.hub.identities:
                self.numeric("330", name, name, "is logged in as")
            since = getattr(member, "signedOn", 0.0)
            if since:
                self.numeric(N.RPL_WHOISIDLE, name, "0", str(int(since)), "seconds idle, signon time")
            self.numeric(N.RPL_ENDOFWHOIS, name, "End of /WHOIS list")

    def irc_WHO(self, params: list[str]) -> None:
        mask = params[0] if params and params[0] else "*"
        hub = self.factory.hub
        room = channelName(mask) if mask.startswith("#") else None
        found: list[tuple[str, Any]] = []
        if room is not None:
            if room in hub.rooms:
                found = [(room, member) for member in hub.rooms[room].members]
        else:
            # A nick, or a mask matched against nick, user, host and real name (no one is invisible here).
            pattern = "*" if mask == "0" else mask.casefold()
            wild = any(c in pattern for c in "*?")
            candidates = list(hub.present) if wild else [hub.nicks.get(pattern)]
            for member in candidates:
                if member is None:
                    continue
                who = whoOf(member)
                fields = (member.nick, who.user, who.host, who.realname)
                if wild and not any(fnmatch.fnmatchcase(field.casefold(), pattern) for field in fields if field):
                    continue
                rooms = hub.roomsOf(member)
                found.append((rooms[0].name if rooms else "*", member))
        lines = []
        for channel, member in found:
            who = whoOf(member)
            flags = ("G" if getattr(member, "awayText", "") else "H") + (
                self.statusIn(channel, member.nick) if channel != "*" else "")
            lines.append(ircLine(self.server, N.RPL_WHOREPLY, self.nick, channel, who.user, who.host, self.server,
                                 member.nick, flags, f"0 {who.realname}"))
        lines.append(ircLine(self.server, N.RPL_ENDOFWHO, self.nick, clean(mask)[:40], "End of WHO list"))
        self.reply(b"".join(lines))

    def irc_WHOWAS(self, params: list[str]) -> None:
        if not params or not params[0]:
            raise _Refused(N.ERR_NONICKNAMEGIVEN, "No nickname given")
        try:
            count = int(params[1]) if len(params) > 1 else 0
        except ValueError:
            count = 0
        for nick in params[0].split(",")[:MAX_TARGETS]:
            key = nick.casefold()
            found = [(shown, when) for shown, when in reversed(self.factory.whowas) if shown.nick.casefold() == key]
            if count > 0:
                found = found[:count]
            shownNick = clean(nick)[:NICKLEN + 8]
            if not found:
                self.numeric(N.ERR_WASNOSUCHNICK, shownNick, "There was no such nickname")
            for shown, when in found:
                self.numeric(N.RPL_WHOWASUSER, shown.nick, shown.user, shown.host, "*", shown.realname)
                self.numeric(N.RPL_WHOISSERVER, shown.nick, self.server,
                             time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(when)))
            self.numeric(N.RPL_ENDOFWHOWAS, shownNick, "End of WHOWAS")

    def irc_ISON(self, params: list[str]) -> None:
        if not params:
            raise _Refused(N.ERR_NEEDMOREPARAMS, "ISON", "Not enough parameters")
        nicks = self.factory.hub.nicks
        online = [nicks[n.casefold()].nick for p in params for n in p.split() if n.casefold() in nicks]
        self.numeric(N.RPL_ISON, " ".join(online))

    def irc_USERHOST(self, params: list[str]) -> None:
        if not params:
            raise _Refused(N.ERR_NEEDMOREPARAMS, "USERHOST", "Not enough parameters")
        found = []
        for nick in params[:5]:
            member = self.factory.hub.nicks.get(nick.casefold())
            if member is not None:
                who = whoOf(member)
                away = "-" if getattr(member, "awayText", "") else "+"
                found.append(f"{member.nick}={away}{who.user}@{who.host}")
        self.numeric(N.RPL_USERHOST, " ".join(found))

    def irc_LUSERS(self, params: list[str]) -> None:
        hub = self.factory.hub
        users = len(hub.present)
        self.reply(b"".join([
            ircLine(self.server, N.RPL_LUSERCLIENT, self.nick, f"There are {users} users and 0 invisible on 1 servers"),
            ircLine(self.server, N.RPL_LUSEROP, self.nick, "0", "operator(s) online"),
            ircLine(self.server, N.RPL_LUSERCHANNELS, self.nick, str(len(hub.rooms)), "channels formed"),
            ircLine(self.server, N.RPL_LUSERME, self.nick, f"I have {users} clients and 0 servers"),
            ircLine(self.server, RPL_LOCALUSERS, self.nick, f"Current local users: {users}"),
            ircLine(self.server, RPL_GLOBALUSERS, self.nick, f"Current global users: {users}"),
        ]))

    def irc_MOTD(self, params: list[str]) -> None:
        server = self.server
        lines = [ircLine(server, N.RPL_MOTDSTART, self.nick, f"- {server} Message of the day - ")]
        lines += [ircLine(server, N.RPL_MOTD, self.nick, f"- {text}") for text in self.factory.motd]
        lines.append(ircLine(server, N.RPL_ENDOFMOTD, self.nick, "End of /MOTD command."))
        self.reply(b"".join(lines))

    def irc_VERSION(self, params: list[str]) -> None:
        self.numeric(N.RPL_VERSION, f"sockproto-{__version__}.", self.server, "IRC face of the sockproto chat")

    def irc_TIME(self, params: list[str]) -> None:
        self.numeric(N.RPL_TIME, self.server, time.strftime("%A %B %d %Y -- %H:%M:%S +00:00",
                                                            time.gmtime(self.factory.clock.seconds())))

    # -- leaving ----------------------------------------------------------------

    def closeWithError(self, why: str) -> None:
        self.write(ircLine("", "ERROR", f"Closing link: {why}"))
        self.closeConnection()

    def leaveHub(self, reason: str) -> None:
        if self.entered:
            self.entered = False
            if self.registered:
                self.factory.idents.remember(self.nick, self.ident)
                self.factory.rememberGone(self)
            self.factory.hub.leave(self, reason)

    def idleTimedOut(self) -> None:
        self.leaveHub("idle")
        self.closeWithError("Idle too long")

    def serverStopping(self) -> None:
        self.closeWithError("Server shutting down")

    def connectionLost(self, reason: Any = None) -> None:
        if self._lagCall is not None and self._lagCall.active():
            self._lagCall.cancel()
        if self.loginAttempt is not None:
            self.loginAttempt.cancel()
        self.leaveHub("too slow" if self.dropped else "connection closed")
        LineServerProtocol.connectionLost(self, reason)


_BEFORE_REGISTRATION = frozenset({"CAP", "NICK", "USER", "PASS", "AUTHENTICATE", "PING", "PONG", "QUIT"})


@dataclass(frozen=True, slots=True)
class Shown:
    """A member as WHO, WHOIS and WHOWAS show it: its face is in its mask, never its address."""

    nick: str
    user: str
    host: str
    realname: str


def whoOf(member: Any) -> Shown:
    face = getattr(getattr(member, "face", None), "name", None)
    who = Who(member.nick, face or events.UNKNOWN_FACE)
    ident = getattr(member, "ident", None)
    return Shown(member.nick, ident or who.user, who.host, getattr(member, "realname", "") or member.nick)


class IrcFactory(ServerFactory):
    """
    The IRC face's connections.  The chat's own factory (``chat``) gives the
    hub, the login gate and the flood and output limits, so every face
    follows the same rules.
    """

    serviceName = "chat-irc"
    protocol = IrcProtocol
    refusal = b"ERROR :Closing link: server full, try again later\r\n"

    def __init__(
        self,
        clock: IReactorTime,
        hub: ChatHub,
        loginGate: LoginGate | None = None,
        serverName: str = "sockproto",
        network: str = "sockproto",
        floodRate: float = 5.0,
        floodBurst: int = 20,
        maxOutputBuffer: int = 1 << 20,
        keepAlive: bool = True,
        **limits: Any,
    ) -> None:
        ServerFactory.__init__(self, clock, **limits)
        self.hub = hub
        #: The rules of the hub's rooms, and the moderation commands (the one the other faces use).
        self.moderator = hub.rules if isinstance(hub.rules, Moderator) else Moderator(hub)
        self.loginGate = loginGate
        self.serverName = serverName
        self.network = network
        self.floodRate = floodRate
        self.floodBurst = floodBurst
        self.maxOutputBuffer = maxOutputBuffer
        self.keepAlive = keepAlive
        self.idents = IdentBook(hub.nicks)
        self.faces = {False: IrcFace(serverName, False, self.idents), True: IrcFace(serverName, True, self.idents)}
        #: WHOWAS: who went away or changed nick, the latest last.
        self.whowas: deque[tuple[Shown, float]] = deque(maxlen=WHOWAS_KEEP)
        self.capabilities = CAPABILITIES + (("sasl",) if loginGate is not None else ())
        self.created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(clock.seconds()))
        self.motd = (
            f"This is the {network} chat: IRC, line (nc) and browser users share its rooms.",
            f"Its main room is {LOBBY}: /join {LOBBY}.",
        )

    def rememberGone(self, member: IrcProtocol) -> None:
        """``member`` leaves, or leaves its nick: for WHOWAS."""
        self.whowas.append((whoOf(member), self.clock.seconds()))

    def isupport(self) -> list[str]:
        return [
            "CASEMAPPING=ascii",
            "CHANTYPES=#",
            "PREFIX=(ov)@+",
            "CHANMODES=b,k,l,imnt",
            f"NICKLEN={NICKLEN}",
            f"CHANNELLEN={CHANNELLEN}",
            f"TOPICLEN={TOPICLEN}",
            f"NETWORK={self.network}",
            f"CHANLIMIT=#:{CHANLIMIT}",
            f"TARGMAX=PRIVMSG:{MAX_TARGETS},NOTICE:{MAX_TARGETS},JOIN:,PART:,WHOIS:{MAX_TARGETS}",
            "AWAYLEN=300",
            "SAFELIST",
        ]

    @property
    def slowConsumers(self) -> int:
        return self.errors["slow_consumer"]
