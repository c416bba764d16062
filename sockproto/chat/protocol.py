# -*- test-case-name: tests.test_chat,tests.test_chat_cluster,tests.test_chat_crowd -*-
"""The chat's wire protocol: UTF-8 lines in, commands and messages handed to the hub."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.cred import checkers, credentials, error
from twisted.cred.portal import Portal
from twisted.internet import defer, interfaces
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from sockproto.chat.commands import MODERATION_COMMANDS, ModerationCommands
from sockproto.chat.events import (
    Away,
    ChatEvent,
    Goodbye,
    Help,
    IChatFace,
    IChatMember,
    LoggedIn,
    MemberList,
    Membership,
    Refusal,
    RefusalCode,
    RoomInfo,
    RoomList,
    ServerNotice,
    Welcome,
)
from sockproto.chat.hub import HISTORY_DEFAULT, HISTORY_MAX, ChatError, ChatHub, Room
from sockproto.chat.lineface import LINE_FACE
from sockproto.chat.login import IChatUser, LoginGate, LoginRefused
from sockproto.chat.moderator import Moderator
from sockproto.chat.text import clean, counted, decode
from sockproto.interfaces import IReloadable
from sockproto.privateapi import eagerWriter
from sockproto.server.connections import ServerFactory, setSocketOptions
from sockproto.server.lines import TOO_LONG, LineServerProtocol
from sockproto.server.ratelimit import TokenBucket
from sockproto.server.tls import peerIdentity

log = Logger()

#: Seconds after a line is dropped by flood control before the sender is told how many were (a paste is one count).
FLOOD_REPORT_DELAY = 1.0

#: The commands of /help: usage, and what it does.
COMMANDS = (
    ("text", "say text to your room (//text says /text)"),
    ("/nick NAME", "change your nickname"),
    ("/join #room", "leave your room and enter another"),
    ("/rooms", "list rooms and how many are in each"),
    ("/list, /who", "list the nicknames in your room"),
    ("/msg NICK text", "private message"),
    ("/me text", "action"),
    ("/history [N]", "the last N messages of your room (default 20, at most 500)"),
    *MODERATION_COMMANDS,
    ("/login NAME PASSWORD", "log in, where the server asks for it"),
    ("/quit [reason]", "leave"),
)


def looksBinary(raw: bytes, text: str) -> bool:
    """Junk, not a message: NUL bytes, or mostly bytes that are not UTF-8."""
    if b"\x00" in raw:
        return True
    bad = text.count("\ufffd")
    return bad >= 4 and bad * 4 > len(text)


class Congestible(Protocol):
    """A chat connection of any face, as its gauge sees it."""

    congested: bool
    backlog: int


@implementer(interfaces.IPushProducer)
class OutputGauge:
    """Registered on a chat connection's transport (line or IRC face) to learn when its write buffer is full."""

    __slots__ = ("proto",)  # one per connection: an idle one costs little

    def __init__(self, proto: Congestible) -> None:
        self.proto = proto

    def pauseProducing(self) -> None:
        self.proto.congested = True

    def resumeProducing(self) -> None:
        self.proto.congested = False
        self.proto.backlog = 0

    def stopProducing(self) -> None:
        pass


class BoundedOutput:
    """
    Output of a chat connection of any face (line, web, IRC): written at once
    while the transport takes it; while it is congested (:class:`OutputGauge`)
    counted, and past the factory's ``maxOutputBuffer`` unsent the client is
    dropped as a slow consumer rather than buffered without end.
    """

    #: The face's name in the log line.
    logName = "chat"
    congested = False
    backlog = 0
    dropped = False
    factory: Any
    transport: Any
    peer: str
    nick: str
    #: Writes to the transport (each face makes its eager writer).
    _transmit: Callable[[bytes], None]

    def deliver(self, data: bytes) -> None:
        if self.dropped:
            return
        if self.congested:
            self.backlog += len(data)
            if self.backlog > self.factory.maxOutputBuffer:
                self.dropSlowConsumer()
                return
        self._transmit(data)

    def dropSlowConsumer(self) -> None:
        self.dropped = True
        self.factory.errors["slow_consumer"] += 1
        log.warn(
            "{face} dropping slow consumer {peer} ({nick}): over {limit} bytes unsent",
            face=self.logName,
            peer=self.peer,
            nick=self.nick,
            limit=self.factory.maxOutputBuffer,
        )
        self.transport.abortConnection()


@implementer(IChatMember)
class ChatProtocol(BoundedOutput, ModerationCommands, LineServerProtocol):
    """One chat client (a member of the hub: told events, shown them through its ``face``)."""

    factory: ChatFactory
    #: How what this client is told is rendered (the web face sets its own).
    face: IChatFace = LINE_FACE
    errorPrefix = "!!! "
    nick = ""
    room: Room | None = None
    entered = False
    floodWarned = False
    #: Lines dropped by flood control and not yet reported, and the call that reports them.
    floodDropped = 0
    _floodReport: Any = None
    #: A login, or an answer from the cluster, is awaited: what the client sends meanwhile waits.
    awaiting = False
    heldLines: tuple[Any, ...] = ()
    #: A /login waiting for its check or being checked.
    loginAttempt: defer.Deferred[Any] | None = None
    #: Flood control, made with the first line read (a client that only listens needs none).
    bucket: TokenBucket | None = None

    def connectionMade(self) -> None:
        factory = self.factory
        self.maxLineLength = factory.maxLineLength
        LineServerProtocol.connectionMade(self)
        transport = self.transport
        setSocketOptions(transport, keepAlive=factory.keepAlive)
        if interfaces.IConsumer.providedBy(transport):
            transport.registerProducer(OutputGauge(self), True)
            self._producing = True
        if not interfaces.ISSLTransport.providedBy(transport):
            self.greet()
        # Over TLS, who the client is is known once the handshake is done.

    def handshakeCompleted(self) -> None:
        LineServerProtocol.handshakeCompleted(self)
        self.greet()

    def greet(self) -> None:
        factory = self.factory
        identity = peerIdentity(self.transport)
        if identity is not None:
            self.show(Welcome(identity))
            self._enter(identity)
        elif factory.portal is not None:
            self.show(Welcome(loginRequired=True))
        else:
            self.welcomeGuest()

    def welcomeGuest(self) -> None:
        """
        A guest's welcome, its own arrival and its room's history in one
        write, not three: a crowd arriving at once is that many system calls
        fewer.  (A guest cannot be refused here: nothing closes the
        connection while the output is held.)
        """
        held: list[bytes] = []
        self._transmit = held.append  # type: ignore[method-assign,assignment]
        try:
            self.show(Welcome())
            self._enter(None)
        finally:
            # The writer of later output is made with it (an idle member's costs nothing).
            del self._transmit
            if held:
                eagerWriter(self.transport, self.traffic)(b"".join(held))

    def _enter(self, identity: str | None, greeting: ChatEvent | None = None) -> None:
        # In a cluster the name is decided by Redis: what the client sends
        # meanwhile waits, as it does during a login.
        self.awaiting = True

        def entered(_: Any) -> None:
            self.awaiting = False
            self.entered = True
            if self.closed:
                self.leaveHub("connection closed")
            else:
                self.releaseHeldLines()

        def refused(failure: Any) -> None:
            self.awaiting = False
            if not failure.check(ChatError):
                log.failure("chat could not let {peer} in", failure, peer=self.peer)
            if not self.closed:
                self.refused(failure, "the chat cannot take you now")
                self.closeConnection()

        try:
            d = self.factory.hub.enter(self, identity, greeting)
        except ChatError as e:
            self.awaiting = False
            self.error(str(e), e.code)
            self.closeConnection()
            return
        d.addCallbacks(entered, refused)

    def answer(self, d: defer.Deferred[Any], then: Any = None) -> None:
        """
        The outcome of a request the hub may answer later (in a cluster):
        ``then(result)`` when it is done, the reason when it is refused.
        """

        def refused(failure: Any) -> None:
            if not failure.check(ChatError):
                log.failure("chat request failed for {peer}", failure, peer=self.peer)
            if not self.closed and not self.dropped:
                self.refused(failure, "the server could not do that now")

        def done(result: Any) -> None:
            if then is not None and not self.closed and not self.dropped:
                then(result)

        if d.called:  # a server alone: answered already
            d.addCallbacks(done, refused)
            return
        # What comes after this command is meant for after its answer
        # (lines after /nick are said under the new name).
        self.awaiting = True

        def resume(_: Any) -> None:
            self.awaiting = False
            self.releaseHeldLines()

        d.addCallbacks(done, refused).addBoth(resume)

    # -- output -----------------------------------------------------------------

    def _transmit(self, data: bytes) -> None:
        """
        The first output after the welcome: makes the eager writer, which
        then takes this method's place on the instance.  A member that is
        never written to again (the crowd of a big room, which hears of no
        arrivals) keeps none: some 500 bytes a connection.
        """
        transmit = self._transmit = eagerWriter(self.transport, self.traffic)  # type: ignore[method-assign,assignment]
        transmit(data)

    #: Output from the hub.  A client that does not read is dropped, not buffered without end.
    send = BoundedOutput.deliver

    def show(self, event: ChatEvent) -> None:
        """Tell this client ``event`` at once."""
        self.send(self.face.render(event, self))

    def reply(self, event: ChatEvent) -> None:
        """An answer for this client alone, after what its room said before."""
        if self.room is not None:
            self.factory.hub.tell(self, event)
        else:
            self.show(event)

    def error(self, text: str, code: RefusalCode = RefusalCode.GENERAL) -> None:
        self.reply(Refusal(text, code))

    def refused(self, failure: Any, otherwise: str) -> None:
        """Say why a request failed: the ChatError's words, else ``otherwise`` (the log has the rest)."""
        if failure.check(ChatError):
            self.error(str(failure.value), failure.value.code)
        else:
            self.error(otherwise, RefusalCode.UNAVAILABLE)

    # -- input ------------------------------------------------------------------

    def linesReceived(self, lines: list[Any]) -> None:
        if self.awaiting:
            self.holdUntilAnswered(lines)
            return
        factory = self.factory
        hub = factory.hub
        bucket = self.bucket
        now = factory.clock.seconds()
        if bucket is None and factory.floodRate:
            # Full, as it would be had it been made on connecting and refilled since.
            bucket = self.bucket = TokenBucket(factory.floodRate, factory.floodBurst, now)
        for index, line in enumerate(lines):
            if self.dropped or self.transport.disconnecting:
                return
            if bucket is not None and not bucket.take(now):
                self.floodDrop()
                continue
            self.floodWarned = False
            if line is TOO_LONG:
                self.error(f"line too long (at most {counted(self.maxLineLength, 'byte')}): not sent",
                           RefusalCode.LINE_TOO_LONG)
                continue
            if line[:1] == b"/" and line[:2] != b"//":
                self.command(decode(line))
                if self.awaiting:
                    self.holdUntilAnswered(lines[index + 1 :])
                    return
                continue
            if not self.entered:
                self.error("please log in first: /login NAME PASSWORD", RefusalCode.LOGIN_NEEDED)
                continue
            text = clean(decode(line[1:] if line[:1] == b"/" else line))
            if looksBinary(line, text):
                self.error("that looks like binary data, not text: not sent", RefusalCode.BINARY)
            elif text.strip():
                try:
                    hub.say(self, text)
                except ChatError as e:  # the room's rules (+m, a ban)
                    self.error(str(e), e.code)

    def floodDrop(self) -> None:
        """A line over the flood limit is not sent: say so at once, and a moment later how many in all."""
        if not self.floodWarned:
            self.floodWarned = True
            self.error("rate limited: too many lines, slow down", RefusalCode.FLOOD)
        self.floodDropped += 1
        if self._floodReport is None:
            self._floodReport = self.factory.clock.callLater(FLOOD_REPORT_DELAY, self.reportFloodDrops)

    def reportFloodDrops(self) -> None:
        self._floodReport = None
        dropped, self.floodDropped = self.floodDropped, 0
        if not self.closed and not self.dropped and not self.transport.disconnecting:
            self.error(f"rate limited: {counted(dropped, 'line')} not sent", RefusalCode.FLOOD)

    def command(self, line: str) -> None:
        name, _, rest = line[1:].partition(" ")
        name = name.lower()
        rest = rest.strip()
        handler = getattr(self, f"do_{name}", None) if name.isalnum() else None
        if handler is None:
            self.error(f"unknown command /{clean(name)[:32]} (try /help)", RefusalCode.UNKNOWN_COMMAND)
            return
        if not self.entered and name not in ("login", "help", "quit"):
            self.error("please log in first: /login NAME PASSWORD", RefusalCode.LOGIN_NEEDED)
            return
        try:
            handler(rest)
        except ChatError as e:
            self.error(str(e), e.code)

    def do_help(self, rest: str) -> None:
        self.reply(Help(COMMANDS))

    def do_nick(self, rest: str) -> None:
        if not rest:
            raise ChatError("usage: /nick NAME", RefusalCode.USAGE)
        if self.factory.portal is not None:
            raise ChatError("your nickname is your user name here", RefusalCode.NICK_FIXED)
        self.answer(self.factory.hub.changeNick(self, rest))

    def do_join(self, rest: str) -> None:
        if not rest:
            raise ChatError("usage: /join #room", RefusalCode.USAGE)
        # "/join dev" means #dev, as the page's join box does; a key may follow (+k).
        name, _, key = rest.partition(" ")
        name = name if name.startswith("#") else "#" + name
        self.answer(self.factory.hub.join(self, name, key.strip() or None))

    def do_rooms(self, rest: str) -> None:
        def show(rooms: list[tuple[str, int]]) -> None:
            topicOf = self.factory.moderator.topicOf
            self.reply(RoomList(tuple(RoomInfo(name, count, topicOf(name)) for name, count in rooms)))

        self.answer(self.factory.hub.whenRooms(), show)

    def do_list(self, rest: str) -> None:
        room = self.room.name if self.room else "?"

        def show(names: list[str]) -> None:
            self.reply(MemberList(room, tuple(Membership(nick) for nick in names)))

        self.answer(self.factory.hub.whenNames(self), show)

    do_who = do_list

    def do_msg(self, rest: str) -> None:
        nick, _, text = rest.partition(" ")
        text = clean(text)
        if not nick or not text.strip():
            raise ChatError("usage: /msg NICK text", RefusalCode.USAGE)

        def sent(_: Any) -> None:
            away = self.factory.moderator.awayOf(nick)
            if away is not None:
                self.reply(Away(*away))

        self.answer(self.factory.hub.privateMessage(self, nick, text), sent)

    def do_me(self, rest: str) -> None:
        text = clean(rest)
        if not text.strip():
            raise ChatError("usage: /me text", RefusalCode.USAGE)
        self.factory.hub.act(self, text)

    def do_history(self, rest: str) -> None:
        count = HISTORY_DEFAULT
        if rest:
            if not rest.isdigit() or not 1 <= int(rest) <= HISTORY_MAX:
                raise ChatError(f"usage: /history [N], N from 1 to {HISTORY_MAX}", RefusalCode.USAGE)
            count = int(rest)
        self.factory.hub.replay(self, count)

    def do_quit(self, rest: str) -> None:
        reason = clean(rest)[:200].strip() or "quit"
        self.reply(Goodbye("Goodbye!", "quit"))
        self.leaveHub(reason)
        self.closeConnection()

    def do_login(self, rest: str) -> None:
        gate = self.factory.loginGate
        if gate is None:
            raise ChatError("this server has no logins", RefusalCode.NO_LOGINS)
        if self.entered:
            raise ChatError("you are already logged in", RefusalCode.ALREADY_LOGGED_IN)
        if self.awaiting:
            raise ChatError("a login is already under way", RefusalCode.ALREADY_LOGGED_IN)
        name, _, password = rest.partition(" ")
        if not name or not password:
            raise ChatError("usage: /login NAME PASSWORD", RefusalCode.USAGE)
        self.awaiting = True
        host = str(getattr(self.transport.getPeer(), "host", self.peer))
        creds = credentials.UsernamePassword(name.encode("utf-8"), password.encode("utf-8"))
        # Asked before any password is checked: a host backing off is refused here.
        d = self.loginAttempt = gate.login(host, creds, IChatUser)

        def settle() -> None:
            self.awaiting = False
            self.loginAttempt = None

        def loggedIn(result: Any) -> None:
            _, avatar, _ = result
            settle()
            if self.transport.disconnecting or self.closed:
                return
            log.info("chat login by {user} from {peer}", user=avatar, peer=self.peer)
            # "logged in as" is said once the name is ours (in a cluster, once Redis agrees).
            self._enter(avatar, greeting=LoggedIn(avatar))
            self.releaseHeldLines()

        def refused(failure: Any) -> None:
            failure.trap(error.UnauthorizedLogin, error.UnhandledCredentials, LoginRefused, defer.CancelledError)
            if failure.check(defer.CancelledError):
                return  # the client went away first
            if failure.check(LoginRefused):
                self.factory.errors["login_refused"] += 1
                settle()
                if not self.closed:
                    self.error(f"login refused: {failure.value}", RefusalCode.LOGIN_REFUSED)
                    self.releaseHeldLines()
                return
            self.factory.errors["login_failed"] += 1
            log.info("chat failed login for {user!r} from {peer}", user=name, peer=self.peer)

            def answer() -> None:
                settle()
                if not self.closed:
                    self.error("login failed: wrong name or password", RefusalCode.LOGIN_FAILED)
                    self.releaseHeldLines()

            # Answered once the host may try again: a client that waits for
            # the answer is never refused for trying too soon.
            self.factory.clock.callLater(gate.retryAfter(host), answer)

        def broken(failure: Any) -> None:
            settle()
            log.failure("chat login check failed", failure)
            if not self.closed:
                self.error("login failed: the server could not check it", RefusalCode.UNAVAILABLE)
                self.releaseHeldLines()

        d.addCallbacks(loggedIn, refused).addErrback(broken)

    def serverStopping(self) -> None:
        # Members heard it from the hub; tell the ones not logged in yet too.
        if not self.entered:
            self.show(ServerNotice("the server is going down"))
        self.closeConnection()

    def holdUntilAnswered(self, lines: list[Any]) -> None:
        """
        What a client sends right after /login (or, in a cluster, /nick,
        /join...) is meant for after it: hold it, and stop reading, until the
        answer is known.
        """
        if lines:
            self.heldLines = (*self.heldLines, *lines)
            self.transport.pauseProducing()

    def releaseHeldLines(self) -> None:
        """Go on with what came after the awaited command, and read again."""
        held, self.heldLines = self.heldLines, ()
        if held:
            self.transport.resumeProducing()
            self.linesReceived(list(held))

    # -- leaving ----------------------------------------------------------------

    def leaveHub(self, reason: str) -> None:
        if self.entered:
            self.entered = False
            self.factory.hub.leave(self, reason)

    def idleTimedOut(self) -> None:
        self.reply(Goodbye("idle too long: goodbye", "idle"))
        self.leaveHub("idle")
        self.closeConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self._floodReport is not None and self._floodReport.active():
            self._floodReport.cancel()
        attempt = self.loginAttempt
        if attempt is not None:
            attempt.cancel()  # not yet checked: it never will be
        self.leaveHub("too slow" if self.dropped else "connection closed")
        LineServerProtocol.connectionLost(self, reason)


@implementer(IReloadable)
class ChatFactory(ServerFactory):
    """The chat's line connections (the web and IRC faces use it too): the hub, flood control, limits and logins."""

    serviceName = "chat"
    protocol = ChatProtocol
    refusal = b"!!! server full: too many clients, try again later\n"

    def __init__(
        self,
        clock: IReactorTime,
        hub: ChatHub,
        portal: Portal | None = None,
        loginGate: LoginGate | None = None,
        maxLineLength: int = 512,
        floodRate: float = 5.0,
        floodBurst: int = 20,
        maxOutputBuffer: int = 1 << 20,
        keepAlive: bool = True,
        **limits: Any,
    ) -> None:
        ServerFactory.__init__(self, clock, **limits)
        self.hub = hub
        self.portal = portal
        self.maxLineLength = maxLineLength
        self.floodRate = floodRate
        self.floodBurst = floodBurst
        self.maxOutputBuffer = maxOutputBuffer
        self.keepAlive = keepAlive
        #: The rules of the hub's rooms, and the moderation commands.
        self.moderator = hub.rules if isinstance(hub.rules, Moderator) else Moderator(hub)
        #: Shared by every face of the chat (line, web): a host's backoff holds on all of them.
        self.loginGate = loginGate if loginGate is not None or portal is None else LoginGate(portal, clock)

    @property
    def slowConsumers(self) -> int:
        return self.errors["slow_consumer"]

    def metricsSnapshot(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = {"chat": dict(self.hub.stats(), slowConsumers=self.slowConsumers)}
        cluster = self.hub.bus.stats()
        if cluster:
            snapshot["cluster"] = cluster
        return snapshot

    def stopServing(self, timeout: float) -> defer.Deferred[None]:
        self.hub.shutdown("the server is going down")
        return ServerFactory.stopServing(self, timeout)

    def reload(self) -> list[str]:
        """Read the password files again (SIGHUP); a broken file leaves the users as they were."""
        from sockproto.chat.passwords import HashedPasswordChecker

        done: list[str] = []
        if self.portal is None:
            return done
        for combined in self.portal.checkers.values():
            for checker in getattr(combined, "checkers", [combined]):
                if isinstance(checker, HashedPasswordChecker):
                    checker.reload(force=True)
                    done.append(f"password file {checker.path}: {counted(checker.userCount, 'user')}")
                elif isinstance(checker, checkers.FilePasswordDB):
                    done.append(f"password file {checker.filename} (read at every login)")
        return done
