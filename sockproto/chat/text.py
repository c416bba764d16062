# -*- test-case-name: tests.test_chat,tests.test_chat_rooms -*-
"""Text rules of the chat: what is shown of a message, which names are valid, timestamps."""

from __future__ import annotations

import re
import time
import unicodedata

#: Nicknames: IRC's letters, digits and specials (RFC 2812 2.3.1), so an IRC user's usual nick
#: (``[alice]``, ``bob|away``) is valid on every face; compared case-insensitively in ASCII
#: (the IRC face's ``CASEMAPPING=ascii``: ``[`` and ``{`` are different).
NICK_RE = re.compile(r"[A-Za-z0-9_\-\[\]\\`^{}|]{1,24}")
#: What NICK_RE allows, in words.
NICK_RULE = "1 to 24 of A-Z a-z 0-9 _ - [ ] \\ ` ^ { } |"
ROOM_RE = re.compile(r"#[a-z0-9_-]{1,32}")

# Terminal escape sequences: CSI (ESC [ or the C1 byte 0x9b ... final byte),
# OSC/DCS/APC/PM/SOS strings (ending in BEL or ESC \), and two-byte escapes.
_ESCAPES = re.compile(
    r"""
      (?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?          # CSI
    | (?:\x1b[\]P^_X]|[\x90\x9d\x9e\x9f\x98])     # OSC, DCS, PM, APC, SOS ...
      [^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?       # ... up to their terminator
    | \x1b[ -/]*[0-~]?                            # other escapes
    """,
    re.VERBOSE,
)


def clean(text: str) -> str:
    """
    What others may see of ``text``: no control characters, terminal escape
    sequences, bidirectional overrides or invisible (zero-width, format)
    characters.  Tabs and unusual spaces become plain spaces.
    """
    if text.isprintable():  # the common case, checked in C
        return text
    text = _ESCAPES.sub("", text)
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif char == "\t" or unicodedata.category(char) == "Zs":
            out.append(" ")
        # Everything else not printable (Cc, Cf, Cs, Co, Cn, Zl, Zp) is dropped.
    return "".join(out)


def decode(line: bytes) -> str:
    """Bytes from the wire as text; invalid UTF-8 becomes U+FFFD, never an error."""
    return line.decode("utf-8", "replace")


def counted(count: int, noun: str) -> str:
    """``"1 message"``, ``"2 messages"``: a count and its noun, singular for one."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def validNick(nick: str) -> bool:
    return NICK_RE.fullmatch(nick) is not None


def validRoom(room: str) -> bool:
    return ROOM_RE.fullmatch(room) is not None


class Stamper:
    """``"[HH:MM:SS] "`` for a time, formatted once per second (it is on every message's path)."""

    def __init__(self) -> None:
        self._second = -1
        self._stamp = ""

    def __call__(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("[%H:%M:%S] ", time.localtime(second))
        return self._stamp
