# -*- test-case-name: tests.test_chat_events,tests.test_chat_cluster,tests.test_chat_crowd -*-
"""
What happened in the chat, as the hub tells its members: structured events.

In the spirit of ``twisted.words.iwords.IChatClient``, the hub does not
speak in finished text.  It tells each member *what happened* with one of the
event classes below (a message, an action, a private message, a join, a
member list, a history replay...) and each *face* of the chat (the line
protocol, the web page, IRC) renders the events its way:

- the line face as the text lines it has always sent
  (:mod:`sockproto.chat.lineface`);
- the web face as JSON objects (``docs/web-chat.rst``);
- an IRC face as IRC lines (numerics, ``nick!user@host`` prefixes),
  without ever parsing text.

The hub's fan-out stays what makes the chat fast: the events of one room in
one reactor turn are a *batch*; each face renders each event of the batch
once (:meth:`IChatFace.render` with no recipient), and the bytes are written
whole to every member of that face in the room.  Events for one member alone
(a private message, an answer to a command, a refusal) are rendered for that
member (``recipient`` given), which is where a face that names its recipient
(IRC numerics do) gets the name from.

Events are values, never changed once made (not frozen dataclasses only
because a frozen one costs four times as much to make, on every message's
path): a face must not keep state about one member in them.  New kinds of
events (moderation: topics, kicks, modes) are new classes, which every face
learns to render (``tests/test_chat_events.py`` checks that each face
renders each kind); the existing kinds keep their rendering, so adding one
changes nothing a client sees of the others.

Identities: every event that names who did something carries a :class:`Who`:
the nick, and the face the member came through.  IRC wants ``nick!user@host``;
ours is ``nick!FACE@FACE.sockproto`` (e.g. ``bob!web@web.sockproto``,
``alice!line@line.sockproto``, ``carol!irc@irc.sockproto``): honest about how
the member is connected, and revealing nothing about the client's address.
A member of another server of a cluster has the face it has there; a name
whose face is not known (a message replayed from the history) has the face
``"sockproto"``.

Times are seconds since the epoch (``float``), as ``IReactorTime.seconds()``
gives them: what IRC's ``server-time`` tag and the web page's ``time`` show.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Protocol

from zope.interface import Attribute, Interface

#: The face of a name whose face is not known (history replayed, an old event).
UNKNOWN_FACE = "sockproto"


@dataclass(slots=True)
class Who:
    """
    Who did something: a member's nick and the face it is connected through.

    :ivar nick: the nickname, as shown (case kept).
    :ivar face: the face's name (``"line"``, ``"web"``, ``"irc"``; ``"sockproto"`` when not known).
    """

    nick: str
    face: str = UNKNOWN_FACE

    @property
    def user(self) -> str:
        """The ``user`` ("ident") part of an IRC prefix: the face's name."""
        return self.face

    @property
    def host(self) -> str:
        """The ``host`` part of an IRC prefix: ``FACE.sockproto``."""
        return self.face if self.face == UNKNOWN_FACE else f"{self.face}.sockproto"

    @property
    def mask(self) -> str:
        """``nick!user@host``, as an IRC prefix shows a member."""
        return f"{self.nick}!{self.user}@{self.host}"


class ChatEvent:
    """
    Something that happened, for members to be told.

    :cvar kind: a short name of the kind of event (``"message"``, ``"join"``...),
        unique per class: faces dispatch on it.
    :cvar roomEvent: True for events of a room, which go to every member
        there in the room's batch; False for events for one member alone.
    :cvar membership: True for events that change who is in a room (joins,
        leaves, nick changes, kicks) or how they are marked (modes: ``@``,
        ``+``): a face that shows member lists refreshes them.
    """

    __slots__ = ()
    kind: ClassVar[str] = ""
    roomEvent: ClassVar[bool] = False
    membership: ClassVar[bool] = False


# -- said in a room -----------------------------------------------------------


@dataclass(slots=True)
class Message(ChatEvent):
    """
    A line said to a room.

    :ivar room: the room (``#name``).
    :ivar sender: who said it.
    :ivar text: what was said (cleaned: one line, printable).
    :ivar time: when the hub took it (seconds since the epoch).
    """

    kind: ClassVar[str] = "message"
    roomEvent: ClassVar[bool] = True
    room: str
    sender: Who
    text: str
    time: float


@dataclass(slots=True)
class Action(ChatEvent):
    """An action (``/me waves``): as :class:`Message`; ``text`` is the action without the nick."""

    kind: ClassVar[str] = "action"
    roomEvent: ClassVar[bool] = True
    room: str
    sender: Who
    text: str
    time: float


@dataclass(slots=True)
class Notice(Message):
    """
    A notice to a room (IRC's ``NOTICE``): a message no program may answer
    automatically.  Faces without notices show it as a :class:`Message`.
    """

    kind: ClassVar[str] = "notice"


@dataclass(slots=True)
class PrivateMessage(ChatEvent):
    """
    A private message (``/msg``), to its recipient, or the copy shown to its sender.

    :ivar sender: who sent it.
    :ivar recipient: the nick it was sent to (as its holder spells it).
    :ivar text: the message.
    :ivar time: when it was sent.
    :ivar echo: True in the copy shown to the sender (``-> *bob* text``),
        False in the one delivered to the recipient (``*alice* text``).
    """

    kind: ClassVar[str] = "private"
    sender: Who
    recipient: str
    text: str
    time: float
    echo: bool = False


@dataclass(slots=True)
class PrivateNotice(PrivateMessage):
    """A private notice (IRC's ``NOTICE`` to a nick); faces without notices show it as a :class:`PrivateMessage`."""

    kind: ClassVar[str] = "private-notice"


@dataclass(slots=True)
class History(ChatEvent):
    """
    A replay of a room's recent messages (on joining it, or asked for with ``/history``).

    :ivar room: the room.
    :ivar entries: the messages, oldest first: :class:`Message` and
        :class:`Action` events (their senders' faces are not known:
        ``UNKNOWN_FACE``).  Empty: the room has no messages yet (the hub
        sends an empty history only when asked, not on joining).
    """

    kind: ClassVar[str] = "history"
    room: str
    entries: tuple[Message | Action, ...]


# -- who comes and goes ---------------------------------------------------------


@dataclass(slots=True)
class Joined(ChatEvent):
    """``who`` entered ``room`` (arriving, or from another room)."""

    kind: ClassVar[str] = "join"
    roomEvent: ClassVar[bool] = True
    membership: ClassVar[bool] = True
    room: str
    who: Who
    time: float


@dataclass(slots=True)
class Parted(ChatEvent):
    """
    ``who`` left ``room`` for another room, or with ``/part``; still connected.

    :ivar reason: the reason given, or ``""``.
    """

    kind: ClassVar[str] = "part"
    roomEvent: ClassVar[bool] = True
    membership: ClassVar[bool] = True
    room: str
    who: Who
    time: float
    reason: str = ""


@dataclass(slots=True)
class Quit(ChatEvent):
    """
    ``who``, who was in ``room``, is gone from the chat.

    :ivar reason: why: ``"quit"``, the reason given with ``/quit``,
        ``"connection closed"``, ``"idle"``, ``"too slow"``, ``"server gone"``...
    """

    kind: ClassVar[str] = "quit"
    roomEvent: ClassVar[bool] = True
    membership: ClassVar[bool] = True
    room: str
    who: Who
    time: float
    reason: str


@dataclass(slots=True)
class NickChanged(ChatEvent):
    """
    ``who`` (its old nick) is now known as ``nick``.

    :ivar room: the member's room, where this is announced; ``None`` when it
        is in none (then only the member itself is told).
    :ivar reason: why, when the member did not ask for it (``"name reserved"``:
        a verified user took the name), else ``""``.
    """

    kind: ClassVar[str] = "nick"
    roomEvent: ClassVar[bool] = True
    membership: ClassVar[bool] = True
    room: str | None
    who: Who
    nick: str
    time: float
    reason: str = ""


# -- room state (for moderation; the hub does not send these yet) ----------------------


@dataclass(slots=True)
class TopicChanged(ChatEvent):
    """``who`` set the topic of ``room`` to ``topic`` (``""``: no topic)."""

    kind: ClassVar[str] = "topic"
    roomEvent: ClassVar[bool] = True
    room: str
    who: Who
    topic: str
    time: float


@dataclass(slots=True)
class Kicked(ChatEvent):
    """``who`` removed ``nick`` from ``room``, for ``reason`` (``""``: none given)."""

    kind: ClassVar[str] = "kick"
    roomEvent: ClassVar[bool] = True
    membership: ClassVar[bool] = True
    room: str
    who: Who
    nick: str
    time: float
    reason: str = ""


@dataclass(slots=True)
class ModeChanged(ChatEvent):
    """
    ``who`` changed the modes of ``room`` (or of members in it).

    :ivar modes: the change as IRC writes it, e.g. ``"+o"``, ``"-t"``, ``"+kl"``.
    :ivar arguments: the mode arguments in order (nicks, key, limit, masks).
    """

    kind: ClassVar[str] = "mode"
    roomEvent: ClassVar[bool] = True
    membership: ClassVar[bool] = True  # operators and voiced are marked in member lists
    room: str
    who: Who
    modes: str
    arguments: tuple[str, ...]
    time: float


@dataclass(slots=True)
class Away(ChatEvent):
    """To one who messaged ``who``: it is away, saying ``text``."""

    kind: ClassVar[str] = "away"
    who: Who
    text: str


# -- lists ----------------------------------------------------------------------------


@dataclass(slots=True)
class Membership:
    """
    One member in a :class:`MemberList`.

    :ivar nick: the member's nick.
    :ivar operator: an operator of the room (IRC's ``@``).
    :ivar voiced: may speak in a moderated room (IRC's ``+``).
    """

    nick: str
    operator: bool = False
    voiced: bool = False

    @property
    def prefix(self) -> str:
        """IRC's prefix for the member's highest status: ``"@"``, ``"+"`` or ``""``."""
        return "@" if self.operator else "+" if self.voiced else ""


@dataclass(slots=True)
class MemberList(ChatEvent):
    """
    Who is in ``room`` (on every server of a cluster), sorted as shown (case-insensitively).

    :ivar members: :class:`Membership` values.
    """

    kind: ClassVar[str] = "members"
    room: str
    members: tuple[Membership, ...]


@dataclass(slots=True)
class RoomInfo:
    """
    One room in a :class:`RoomList`.

    :ivar name: the room (``#name``).
    :ivar count: how many are in it (on every server).
    :ivar topic: its topic (``""``: none).
    """

    name: str
    count: int
    topic: str = ""


@dataclass(slots=True)
class RoomList(ChatEvent):
    """Every room of the chat, sorted by name (``/rooms``)."""

    kind: ClassVar[str] = "rooms"
    rooms: tuple[RoomInfo, ...]


# -- the server speaking --------------------------------------------------------------


@dataclass(slots=True)
class Welcome(ChatEvent):
    """
    The first thing a client is told on connecting.

    :ivar nick: the verified name it is known by (a client certificate),
        or ``None`` (a guest name comes with its :class:`Joined`).
    :ivar loginRequired: the server wants a login before anything else.
    """

    kind: ClassVar[str] = "welcome"
    nick: str | None = None
    loginRequired: bool = False


@dataclass(slots=True)
class LoggedIn(ChatEvent):
    """A login succeeded: the member is ``name`` now (it enters the lobby next)."""

    kind: ClassVar[str] = "login"
    name: str


@dataclass(slots=True)
class Help(ChatEvent):
    """
    The commands of the chat (``/help``).

    :ivar commands: ``(usage, what it does)`` pairs, in the order shown.
    """

    kind: ClassVar[str] = "help"
    commands: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class ServerNotice(ChatEvent):
    """
    The server says something to one member or to all (the server going
    down, the cluster's link lost or restored, a line that did not reach the
    other servers, a name taken meanwhile).

    :ivar text: what it says, one line, no marker (the line face adds ``***``).
    """

    kind: ClassVar[str] = "server"
    text: str


class RefusalCode(StrEnum):
    """
    Why a request was refused, for faces that say it their own way (an IRC
    face: with the numeric given here).  A refusal without a code
    (``GENERAL``) is any other.
    """

    GENERAL = ""
    BAD_NICK = "bad-nick"  # 432 ERR_ERRONEUSNICKNAME
    NICK_IN_USE = "nick-in-use"  # 433 ERR_NICKNAMEINUSE
    NICK_FIXED = "nick-fixed"  # a verified name, or logins: the nick cannot change (484 ERR_RESTRICTED)
    NO_SUCH_NICK = "no-such-nick"  # 401 ERR_NOSUCHNICK
    NOT_DELIVERED = "not-delivered"  # the link to the cluster's other servers is down or slow
    NOT_IN_ROOM = "not-in-room"  # 442 ERR_NOTONCHANNEL
    BAD_ROOM = "bad-room"  # 479 ERR_BADCHANNAME
    ALREADY_IN_ROOM = "already-in-room"  # 443 ERR_USERONCHANNEL
    TOO_MANY_ROOMS = "too-many-rooms"  # 405 ERR_TOOMANYCHANNELS
    USAGE = "usage"  # 461 ERR_NEEDMOREPARAMS
    UNKNOWN_COMMAND = "unknown-command"  # 421 ERR_UNKNOWNCOMMAND
    LOGIN_NEEDED = "login-needed"  # 451 ERR_NOTREGISTERED
    LOGIN_FAILED = "login-failed"  # 904 ERR_SASLFAIL / 464 ERR_PASSWDMISMATCH
    LOGIN_REFUSED = "login-refused"  # too many failures from the host: try later
    NO_LOGINS = "no-logins"  # the server has no logins
    ALREADY_LOGGED_IN = "already-logged-in"  # 462 ERR_ALREADYREGISTERED
    LINE_TOO_LONG = "line-too-long"  # 417 ERR_INPUTTOOLONG
    BINARY = "binary"  # input that is not text
    FLOOD = "flood"  # lines over the flood limit, not sent
    UNAVAILABLE = "unavailable"  # the server could not do it now (a failure, not a rule)
    # rooms with owners (sockproto.chat.moderation)
    NOT_OPERATOR = "not-operator"  # 482 ERR_CHANOPRIVSNEEDED
    NOT_THERE = "not-there"  # 441 ERR_USERNOTINCHANNEL
    BANNED = "banned"  # 474 ERR_BANNEDFROMCHAN
    INVITE_ONLY = "invite-only"  # 473 ERR_INVITEONLYCHAN
    BAD_KEY = "bad-key"  # 475 ERR_BADCHANNELKEY
    ROOM_FULL = "room-full"  # 471 ERR_CHANNELISFULL
    CANNOT_SPEAK = "cannot-speak"  # 404 ERR_CANNOTSENDTOCHAN
    UNKNOWN_MODE = "unknown-mode"  # 472 ERR_UNKNOWNMODE
    BAN_LIST_FULL = "ban-list-full"  # 478 ERR_BANLISTFULL


@dataclass(slots=True)
class Refusal(ChatEvent):
    """
    A request refused or input not taken (a bad command, a nick taken, a
    login failed, flood control): the line face's ``!!!`` line.

    :ivar reason: why, one line, in words.
    :ivar code: why, as a :class:`RefusalCode`.
    :ivar room: the room it was about, if any (an IRC numeric names it).
    :ivar about: what else it was about (a mode letter and its argument, a nick).
    """

    kind: ClassVar[str] = "error"
    reason: str
    code: RefusalCode = RefusalCode.GENERAL
    room: str = ""
    about: tuple[str, ...] = ()


@dataclass(slots=True)
class Goodbye(ChatEvent):
    """
    The member is being disconnected by the server, and why (``/quit``, idle too long).

    :ivar text: what the line face shows after ``***`` (``"Goodbye!"``, ``"idle too long: goodbye"``).
    :ivar reason: the reason in a word or two (``"quit"``, ``"idle"``), for faces that say it their way.
    """

    kind: ClassVar[str] = "goodbye"
    text: str
    reason: str = "quit"


# -- who is told ----------------------------------------------------------------------


class Recipient(Protocol):
    """What a face may use of a member it renders an event for (:class:`IChatMember`, for type checks)."""

    nick: str

    def send(self, data: bytes) -> None: ...


class IChatFace(Interface):
    """
    One way of showing the chat to clients (line text, JSON, IRC): renders events as bytes.

    One face object serves all of its members; the hub groups a room's
    members by face, renders each event of a room's batch once per face, and
    writes the bytes to each member.
    """

    name = Attribute("The face's name, lower case (``line``, ``web``, ``irc``): user and host of its members' masks")

    def render(event: ChatEvent, recipient: Recipient | None) -> bytes:
        """
        The bytes that tell a member of this face about ``event``.

        :param event: what happened.
        :param recipient: the member it is for, when it is for one alone;
            ``None`` for a room's batch, whose rendering must be the same for
            every member of the room (it is written to each of them): then
            nothing of the recipient may go into it.
        :return: whole lines (or frames), possibly empty (not shown on this face).
        """

    def membersChanged(room: str, members: Iterable[Recipient]) -> None:
        """
        A batch written to ``members`` (this face's members of ``room``)
        changed who is in the room (a join, part, quit, nick change, kick).
        Called once per such batch, after it is written, for faces that show
        member lists; others do nothing.
        """


class IChatMember(Interface):
    """A member of the chat, as the hub sees it: a nick, a room, a face, and a way to write."""

    nick = Attribute("The member's nickname (set by the hub)")
    room = Attribute("The member's room (a hub's Room), or None while it is in none (set by the hub)")
    face = Attribute("The IChatFace that renders what this member is told")

    def send(data: bytes) -> None:
        """Write ``data``, rendered by the member's face, to the member (at once, whole)."""


def membershipChanged(events: Iterable[ChatEvent]) -> bool:
    """Whether any of ``events`` changes who is in a room."""
    return any(event.membership for event in events)


# -- moderation: answers to one member (rooms with owners, sockproto.chat.moderation) ----


@dataclass(slots=True)
class TopicIs(ChatEvent):
    """
    The topic of ``room``, told to one member (on joining, ``/topic`` without text):
    IRC's ``RPL_TOPIC``/``RPL_TOPICWHOTIME``, or ``RPL_NOTOPIC`` when ``topic`` is ``""``.

    :ivar setter: who set it (``""``: no topic).
    :ivar time: when it was set (0: no topic).
    """

    kind: ClassVar[str] = "topicis"
    room: str
    topic: str
    setter: str = ""
    time: float = 0.0


@dataclass(slots=True)
class Invited(ChatEvent):
    """
    ``who`` invited ``nick`` into ``room``: told to the invited (IRC's
    ``INVITE``), and, with ``echo``, to the one who invited (``RPL_INVITING``).
    """

    kind: ClassVar[str] = "invite"
    room: str
    who: Who
    nick: str
    echo: bool = False


@dataclass(slots=True)
class ModeIs(ChatEvent):
    """The modes of ``room`` (``/mode #room``): ``"+ntk key"``, ``"+"`` for none (``RPL_CHANNELMODEIS``)."""

    kind: ClassVar[str] = "modes"
    room: str
    modes: str


@dataclass(slots=True)
class BanEntry:
    """One ban of a :class:`BanList`: ``mask``, set by ``setter`` at ``time``."""

    mask: str
    setter: str
    time: float


@dataclass(slots=True)
class BanList(ChatEvent):
    """The bans of ``room`` (``/mode #room +b``; IRC's ``RPL_BANLIST``, ``RPL_ENDOFBANLIST``)."""

    kind: ClassVar[str] = "bans"
    room: str
    bans: tuple[BanEntry, ...]


@dataclass(slots=True)
class WhoisReply(ChatEvent):
    """
    What the chat tells of a member (``/whois``; IRC's ``RPL_WHOISUSER`` and friends).

    :ivar who: its nick and face (its mask).
    :ivar room: the room it is in, with its prefix there (``"@#dev"``), or ``""``.
    :ivar verified: it logged in (or showed a certificate) as this name.
    :ivar serverOperator: a server operator (``RPL_WHOISOPERATOR``).
    :ivar away: its away message, ``""`` if it is not away.
    :ivar server: ``""`` when it is on this server, else which (a cluster's other node).
    """

    kind: ClassVar[str] = "whois"
    who: Who
    room: str
    verified: bool = False
    serverOperator: bool = False
    away: str = ""
    server: str = ""


@dataclass(slots=True)
class AwaySet(ChatEvent):
    """The member is away now, saying ``text`` (``RPL_NOWAWAY``), or back when ``text`` is ``""`` (``RPL_UNAWAY``)."""

    kind: ClassVar[str] = "awayset"
    text: str
