# -*- test-case-name: tests.test_package -*-
"""``sockproto example-config [NAME]``: print a config file that ships with sockproto.

The examples are package data of :mod:`sockproto.suite` (``examples/*.toml``),
so a pip install has them as well as a checkout: ``sockproto example-config >
sockproto.toml`` is where a deployment's config begins.  In the checkout they
are links to ``examples/``, the files the docs and ``make local`` use.
"""

from __future__ import annotations

import os
import sys
from importlib.resources import files
from importlib.resources.abc import Traversable

from twisted.python import usage

from sockproto.server.options import showVersion

#: The example printed when no NAME is given: the one that explains every key.
DEFAULT_EXAMPLE = "sockproto"


def _examplesFolder() -> Traversable:
    return files("sockproto.suite") / "examples"


def exampleNames() -> list[str]:
    """The names of the shipped examples, ``sockproto`` for ``sockproto.toml``."""
    return sorted(entry.name.removesuffix(".toml") for entry in _examplesFolder().iterdir()
                  if entry.name.endswith(".toml"))


def exampleText(name: str) -> str:
    """The text of the example ``name``; ``KeyError`` if there is none of that name."""
    if name not in exampleNames():
        raise KeyError(name)
    return (_examplesFolder() / f"{name}.toml").read_text(encoding="utf-8")


def exampleSummary(name: str) -> str:
    """What the example is for: its first line, without ``# NAME.toml:``."""
    first = exampleText(name).splitlines()[0]
    return first.lstrip("# ").removeprefix(f"{name}.toml:").strip().rstrip(".")


class ExampleConfigOptions(usage.Options):
    """``sockproto example-config [NAME]``: print an example config file."""

    synopsis = "[NAME]"

    def __init__(self) -> None:
        super().__init__()
        names = sorted(exampleNames(), key=lambda name: name != DEFAULT_EXAMPLE)
        listed = ", ".join(f"{name} ({exampleSummary(name)})" for name in names)
        self.longdesc = (
            "Print an example config file for 'twistd -n sockproto --config FILE' on standard output, "
            "to begin one from: 'sockproto example-config > sockproto.toml'. "
            f"NAME is one of: {listed}; the default is {DEFAULT_EXAMPLE}, which explains every key."
        )

    def opt_version(self) -> None:
        """Print the version of sockproto and Twisted, and exit."""
        showVersion("sockproto")

    def parseArgs(self, name: str = DEFAULT_EXAMPLE) -> None:
        names = exampleNames()
        if name not in names:
            raise usage.UsageError(f"no example config named {name!r} (there are: {', '.join(names)})")
        self["name"] = name


def runExampleConfig(options: ExampleConfigOptions) -> int:
    text = exampleText(options["name"])
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader had enough (| head): not an error, and nothing left to say at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
