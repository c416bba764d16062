# -*- test-case-name: tests.test_joke -*-
"""Knock-knock jokes: the built-in book, books loaded from TOML or JSON, and fair picking.

Plain objects: nothing here knows about sockets or the reactor.
"""

from __future__ import annotations

import json
import random
import re
import tomllib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Joke:
    """One knock-knock joke: what the door says after "Who's there?" and the punchline."""

    setup: str
    punchline: str


BUILTIN_JOKES: tuple[Joke, ...] = tuple(
    Joke(setup, punchline)
    for setup, punchline in [
        # The seeds' three.
        ("Boo", "Don't cry...it's only a joke!"),
        ("Lettuce", "Let us in! It's freezing out here!"),
        ("A little old lady", "Wow, I didn't know you could yodel!"),
        ("Orange", "Orange you glad I didn't say banana?"),
        ("Cow says", "No silly, a cow says mooooo!"),
        ("Interrupting cow", "MOO!"),
        ("Tank", "You're welcome!"),
        ("Atch", "Bless you!"),
        ("Olive", "Olive you and I miss you!"),
        ("Harry", "Harry up, it's cold out here!"),
        ("Wooden shoe", "Wooden shoe like to hear another joke?"),
        ("Nobel", "No bell, that's why I knocked!"),
        ("Hawaii", "I'm fine, Hawaii you?"),
        ("Justin", "Justin time for dinner!"),
        ("Dishes", "Dishes the police, open up!"),
        ("Figs", "Figs the doorbell, it's broken!"),
        ("Ice cream", "Ice cream if you don't let me in!"),
        ("Luke", "Luke through the peephole and find out!"),
        ("Water", "Water you doing? Just open the door!"),
        ("Cash", "No thanks, I prefer peanuts!"),
        ("Broken pencil", "Never mind, it's pointless."),
        ("Beets", "Beets me, I forgot the joke!"),
        ("Candice", "Candice door open, or what?"),
        ("Canoe", "Canoe help me with my homework?"),
        ("Europe", "No, you're a poo!"),
        ("Howard", "Howard I know? I forgot my key!"),
        ("Annie", "Annie thing you can do, I can do better!"),
        ("Amos", "A mosquito bit me!"),
        ("Spell", "W-H-O."),
        ("Yah", "No thanks, I use Google."),
    ]
)


class JokeBookError(ValueError):
    """A joke file that cannot be used; the message names the file and the entry."""


_LIMIT = 500  # characters in a setup or punchline: one line on a terminal, give or take


def loadJokes(path: str | Path) -> list[Joke]:
    """
    Load a joke book from TOML or JSON: a list of entries with ``setup`` and ``punchline``.

    TOML: ``[[jokes]]`` tables.  JSON: a list of objects, or ``{"jokes": [...]}``.
    The format is chosen by the file's suffix (``.toml`` or ``.json``).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise JokeBookError(f"{path}: cannot read: {e.strerror or e}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            document: object = tomllib.loads(raw.decode("utf-8"))
        elif suffix == ".json":
            document = json.loads(raw.decode("utf-8"))
        else:
            raise JokeBookError(f"{path}: unknown format {suffix or '(none)'!r}: use .toml or .json")
    except UnicodeDecodeError as e:
        raise JokeBookError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise JokeBookError(f"{path}: bad {suffix[1:].upper()} syntax: {e}") from None
    if isinstance(document, dict):
        if set(document) - {"jokes"}:
            unknown = sorted(set(document) - {"jokes"})[0]
            raise JokeBookError(f"{path}: unknown key {unknown!r} (expected only 'jokes')")
        document = document.get("jokes", [])
    if not isinstance(document, list):
        raise JokeBookError(f"{path}: expected a list of jokes")
    jokes = [_entry(path, number, entry) for number, entry in enumerate(document, 1)]
    if not jokes:
        raise JokeBookError(f"{path}: holds no jokes")
    return jokes


def _entry(path: Path, number: int, entry: object) -> Joke:
    where = f"{path}: joke {number}"
    if not isinstance(entry, dict):
        raise JokeBookError(f"{where}: expected a table with 'setup' and 'punchline'")
    for field in ("setup", "punchline"):
        if field not in entry:
            raise JokeBookError(f"{where}: missing {field!r}")
        value = entry[field]
        if not isinstance(value, str) or not value.strip():
            raise JokeBookError(f"{where}: {field!r} must be non-empty text")
        if len(value) > _LIMIT or any(ord(c) < 32 or c == "\x7f" for c in value):
            raise JokeBookError(f"{where}: {field!r} must be one line of at most {_LIMIT} characters")
    unknown = set(entry) - {"setup", "punchline"}
    if unknown:
        raise JokeBookError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    if not normalize(entry["setup"]):
        raise JokeBookError(f"{where}: 'setup' must contain letters or digits")
    return Joke(entry["setup"].strip(), entry["punchline"].strip())


def loadBooks(paths: Iterable[str | Path], includeBuiltin: bool = False) -> list[Joke]:
    """The jokes of several books added up (the built-in one when no file is given)."""
    jokes: list[Joke] = list(BUILTIN_JOKES) if includeBuiltin else []
    paths = list(paths)
    for path in paths:
        jokes.extend(loadJokes(path))
    return jokes if paths else list(BUILTIN_JOKES)


_APOSTROPHES = str.maketrans("", "", "'\u2019\u2018`\u00b4")
_NOT_WORD = re.compile(r"[^\w\s]+")


def normalize(text: str) -> str:
    """Lower case, apostrophes and punctuation gone, runs of spaces made one."""
    text = _NOT_WORD.sub(" ", text.casefold().translate(_APOSTROPHES))
    return " ".join(text.replace("_", " ").split())


def _squeezed(text: str) -> str:
    # Spacing does not matter at all: "who 's there" and "whos there" are one answer.
    return normalize(text).replace(" ", "")


_WHOS_THERE = frozenset({"whosthere", "whoisthere"})


def isWhosThere(answer: str) -> bool:
    return _squeezed(answer) in _WHOS_THERE


def isSetupWho(answer: str, joke: Joke) -> bool:
    return _squeezed(answer) == _squeezed(joke.setup) + "who"


class JokePicker:
    """
    Picks a joke per connection.

    Reproducible with a seed; a peer that comes back does not get the joke it
    had last time (the last pick of the most recent ``memory`` peers is kept).
    """

    def __init__(self, jokes: Sequence[Joke], seed: int | None = None, memory: int = 4096) -> None:
        if not jokes:
            raise ValueError("no jokes to tell")
        self.jokes = list(jokes)
        self.random = random.Random(seed)
        self.memory = memory
        self._recent: OrderedDict[str, int] = OrderedDict()

    def pick(self, peer: str) -> Joke:
        last = self._recent.pop(peer, None)
        count = len(self.jokes)
        if last is not None and count > 1 and last < count:
            # Uniform over the others: draw from count-1 and step over the last one.
            index = self.random.randrange(count - 1)
            if index >= last:
                index += 1
        else:
            index = self.random.randrange(count)
        self._recent[peer] = index
        if len(self._recent) > self.memory:
            self._recent.popitem(last=False)
        return self.jokes[index]
