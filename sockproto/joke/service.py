# -*- test-case-name: tests.test_joke,tests.test_config,tests.test_listen -*-
"""The knock-knock joke service: ``twistd -n sockproto-joke``.

::

    $ nc localhost 6789
    Knock knock!
    >> Who's there?
    Lettuce
    >> Lettuce who?
    Let us in! It's freezing out here!
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.application import service
from twisted.python import usage
from zope.interface import implementer

from sockproto.interfaces import IReloadable, IServerReactor
from sockproto.joke.book import Joke, JokeBookError, JokePicker, isSetupWho, isWhosThere, loadBooks
from sockproto.privateapi import eagerWriter
from sockproto.server.connections import ServerFactory
from sockproto.server.lifecycle import defaultReactor, standalone
from sockproto.server.lines import LineServerProtocol
from sockproto.server.options import ServerOptions, positiveInt

PROMPT = b">> "
MAX_LINE = 1024

ASKING_WHO = 0
ASKING_SETUP_WHO = 1


class KnockKnock(LineServerProtocol):
    """One joke per connection: knock knock, who's there, setup, setup who, punchline."""

    maxLineLength = MAX_LINE
    factory: JokeFactory
    joke: Joke
    stage = ASKING_WHO
    wrongAnswers = 0

    def connectionMade(self) -> None:
        LineServerProtocol.connectionMade(self)
        self.pauseReadingWhenBlocked()
        self.send = eagerWriter(self.transport, self.traffic)
        host = getattr(self.transport.getPeer(), "host", self.peer)
        self.joke = self.factory.picker.pick(str(host))
        self.ask("Knock knock!")

    def say(self, text: str) -> None:
        self.send(text.encode("utf-8") + b"\r\n")

    def ask(self, text: str) -> None:
        self.send(text.encode("utf-8") + b"\r\n" + PROMPT)

    def lineReceived(self, line: bytes) -> None:
        try:
            answer = line.decode("utf-8")
        except UnicodeDecodeError:
            answer = ""  # not text: a wrong answer, never a crash
        if self.stage == ASKING_WHO:
            if isWhosThere(answer):
                self.stage = ASKING_SETUP_WHO
                self.ask(self.joke.setup)
            else:
                self.wrong('Please type "Who\'s there?".')
        elif isSetupWho(answer, self.joke):
            self.say(self.joke.punchline)
            self.closeConnection()
        else:
            self.wrong(f'Please type "{self.joke.setup} who?".')

    def wrong(self, hint: str) -> None:
        self.wrongAnswers += 1
        if self.wrongAnswers >= self.factory.maxAttempts:
            self.say("Too many wrong answers. Goodbye!")
            self.closeConnection()
        else:
            self.ask(hint)

    def lineTooLong(self) -> None:
        self.say(f"That line is longer than {MAX_LINE} bytes. Goodbye!")
        self.closeConnection()

    def idleTimedOut(self) -> None:
        self.say("\r\nToo slow! Goodbye.")
        self.closeConnection()

    def serverStopping(self) -> None:
        self.say("\r\nThe server is going down. Goodbye!")
        self.closeConnection()


@implementer(IReloadable)
class JokeFactory(ServerFactory):
    """The joke service's connections and the joke book they share (reloaded on SIGHUP)."""

    serviceName = "joke"
    protocol = KnockKnock
    refusal = b"Too many people at the door, come back later!\r\n"

    def __init__(
        self,
        clock: Any,
        picker: JokePicker,
        maxAttempts: int = 5,
        books: Sequence[str] = (),
        includeBuiltin: bool = False,
        **limits: Any,
    ) -> None:
        ServerFactory.__init__(self, clock, **limits)
        self.picker = picker
        self.maxAttempts = maxAttempts
        self.books = list(books)
        self.includeBuiltin = includeBuiltin

    def reload(self) -> list[str]:
        """Read the joke books again (SIGHUP); a book with an error leaves the old jokes in place."""
        if not self.books:
            return []
        jokes = loadBooks(self.books, self.includeBuiltin)  # JokeBookError: nothing changes
        self.picker.jokes = list(jokes)
        return [f"{len(jokes)} joke{'' if len(jokes) == 1 else 's'} from {', '.join(self.books)}"]


class Options(ServerOptions):
    """``sockproto-joke``'s options: the joke book, attempts and the random seed."""

    serviceName = "joke"
    defaultPort = 6789
    defaultIdleTimeout = 60.0
    repeatable = ("listen", "jokes")
    longdesc = (
        "Tells a knock-knock joke to whoever connects (try: nc localhost 6789). "
        "Answers are accepted without regard to case, spacing and punctuation."
    )
    optParameters = [
        ["max-attempts", None, 5, "Wrong answers allowed before the server says goodbye.", positiveInt],
        ["random-seed", None, None, "Seed for the choice of jokes, to make it reproducible.", int],
    ]
    optFlags = [
        ["include-builtin", None, "With --jokes, keep the built-in jokes too."],
    ]

    def __init__(self) -> None:
        ServerOptions.__init__(self)
        self["jokes"] = []

    def opt_jokes(self, path: str) -> None:
        """A joke book, TOML or JSON: a list of entries with setup and punchline. Repeatable; the books add up. [default: the built-in book]"""  # noqa: E501
        self["jokes"].append(path)

    def postOptions(self) -> None:
        ServerOptions.postOptions(self)
        try:
            self["book"] = loadBooks(self["jokes"], self["include-builtin"])
        except JokeBookError as e:
            raise usage.UsageError(str(e)) from None


def buildService(options: Options, reactor: IServerReactor | None = None) -> service.IService:
    reactor = defaultReactor(reactor)
    factory = JokeFactory(
        reactor,
        JokePicker(options["book"], seed=options["random-seed"]),
        maxAttempts=options["max-attempts"],
        books=options["jokes"],
        includeBuiltin=options["include-builtin"],
        **options.limits(),
    )
    return options.listeningService(factory, reactor)


makeService = standalone(buildService)
