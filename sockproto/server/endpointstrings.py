# -*- test-case-name: tests.test_listen -*-
"""
Endpoint strings: splitting, checking, safer defaults, and errors in the user's terms.

Every sockproto service takes ``--listen ENDPOINT`` (repeatable) with any
Twisted server endpoint string.  Strings are checked when the options are
parsed and hardened with safer defaults (loopback unless told, a listen
backlog of 4096, UNIX sockets 0600); :mod:`sockproto.server.listen` binds them.
"""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.internet import endpoints
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.python import usage

from sockproto.privateapi import parseEndpointDescription

#: Twisted's own default of 50 drops connection bursts; 1024 dropped a crowd of 10,000 arriving at once
#: (docs/scaling.rst).  The kernel caps it at net.core.somaxconn.
DEFAULT_BACKLOG = 4096
#: Owner-only, whatever the umask says.
DEFAULT_UNIX_MODE = "600"
# Endpoint types whose parsers take ``backlog=``.
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "ssl", "tls", "unix", "mtls"})
#: Loopback for each network endpoint type, used when the string names no
#: interface (Twisted's own default is every interface).  tls: listens on an
#: IPv6 socket, where the v4-mapped loopback also takes 127.0.0.1 clients.
LOOPBACK = {
    "tcp": "127.0.0.1",
    "ssl": "127.0.0.1",
    "mtls": "127.0.0.1",
    "tcp6": r"\:\:1",
    "tls": r"\:\:ffff\:127.0.0.1",
}


def splitDescription(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    Split an endpoint string the way Twisted does: (type, args, kwargs).

    Raises ValueError for an empty string.
    """
    args, kwargs = parseEndpointDescription(description)
    if not args or not args[0]:
        raise ValueError("no endpoint type")
    return args[0].lower(), list(args[1:]), kwargs


def withSafeDefaults(description: str) -> str:
    """
    Add sockproto's defaults to an endpoint string, unless it sets them.

    A listen backlog of :data:`DEFAULT_BACKLOG` where the type takes one,
    mode 0600 for UNIX sockets, and the loopback interface for network
    endpoints that name none: listening on every interface must be asked for
    (``interface=0.0.0.0`` or ``interface=\\:\\:``).
    """
    kind, _, kwargs = splitDescription(description)
    if kind in LOOPBACK and "interface" not in kwargs:
        description += f":interface={LOOPBACK[kind]}"
    if kind in _BACKLOG_TYPES and "backlog" not in kwargs:
        description += f":backlog={DEFAULT_BACKLOG}"
    if kind == "unix" and "mode" not in kwargs:
        description += f":mode={DEFAULT_UNIX_MODE}"
    return description


def parseUDP(description: str) -> tuple[int, str]:
    """
    Parse ``udp:PORT[:interface=ADDR]`` into (port, interface).

    The interface defaults to loopback, as every sockproto default does.
    """
    kind, args, kwargs = splitDescription(description)
    if kind != "udp":
        raise ValueError("not a udp: endpoint")
    unknown = set(kwargs) - {"port", "interface"}
    if unknown:
        raise ValueError(f"unknown parameter {sorted(unknown)[0]!r}")
    portText = args[0] if args else kwargs.get("port")
    if portText is None or len(args) > 1:
        raise ValueError("expected udp:PORT[:interface=ADDRESS]")
    port = int(portText)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return port, kwargs.get("interface", "127.0.0.1")


def _checkingReactor() -> Any:
    # Endpoint parsers only store the reactor; a memory reactor lets options be
    # checked without touching the global one.
    from twisted.internet.testing import MemoryReactor

    return MemoryReactor()


def checkEndpoint(description: str, allowUDP: bool = False, option: str = "--listen") -> str:
    """
    Check a ``--listen`` string (with sockproto's defaults added) and return it as given.

    Raises UsageError naming the string for an unknown endpoint type, a bad
    parameter or a missing file (Twisted raises TypeError, ValueError or
    OSError for those).
    """
    try:
        kind, args, kwargs = splitDescription(description)
        if kind == "udp":
            if not allowUDP:
                raise ValueError("this service does not speak UDP")
            parseUDP(description)
            return description
        _checkCommonMistakes(kind, args, kwargs)
        try:
            endpoints.serverFromString(_checkingReactor(), withSafeDefaults(description))
        except (IndexError, KeyError):
            if kind != "systemd":
                raise
            which = f"named {kwargs['name']!r}" if "name" in kwargs else f"at index {kwargs.get('index')}"
            raise ValueError(f"systemd passed no socket {which} (see LISTEN_FDS and LISTEN_FDNAMES)") from None
    except Exception as e:
        # TypeError/ValueError for bad parameters, OSError or an SSL error for
        # a certificate that cannot be loaded.
        raise usage.UsageError(f"bad {option} {description!r}: {endpointErrorText(e, description)}") from None
    return description


def _checkCommonMistakes(kind: str, args: list[str], kwargs: dict[str, str]) -> None:
    # Twisted accepts these and fails only when binding; say so up front.
    if kind == "unix":
        path = args[0] if args else kwargs.get("address")
        if not path:
            raise ValueError("the socket path is empty")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ValueError(f"the folder {folder} does not exist")
    if kind in ("tcp", "tcp6", "ssl", "mtls"):
        port = args[0] if args else kwargs.get("port", "")
        if not port.isdigit():
            raise ValueError(f"the port must be a number from 0 to 65535 (e.g. {kind}:8124), not {port!r}")
        if int(port) > 65535:
            raise ValueError(f"port {port} is out of range")
    if kind == "tls":
        path = args[0] if args else kwargs.get("path", "")
        if not os.path.isdir(path):
            raise ValueError(f"{path!r} is not a directory of PEM files")


#: What each endpoint type's string looks like, for errors.
_SHAPES = {
    "tcp": "tcp:HOST:PORT (client) or tcp:PORT (server)",
    "tcp6": "tcp6:HOST:PORT (client) or tcp6:PORT (server)",
    "unix": "unix:PATH",
    "ssl": "ssl:HOST:PORT (client) or ssl:PORT:privateKey=KEY:certKey=CERT (server)",
    "tls": "tls:HOST:PORT (client) or tls:DIRECTORY (server)",
    "mtls": "mtls:PORT:privateKey=KEY:certKey=CERT:caCerts=CA",
}


def endpointErrorText(error: BaseException, description: str = "") -> str:
    """
    What was wrong with an endpoint string, in the user's terms rather than
    Python's: Twisted's parsers fail with the TypeError or ValueError of the
    function they call.
    """
    text = str(error) or type(error).__name__
    kind = description.split(":", 1)[0].lower()
    shape = _SHAPES.get(kind)
    missing = re.search(r"missing \d+ required (?:positional |keyword-only )?arguments?: (.+)", text)
    if missing:
        names = missing.group(1).replace("'", "")
        text = f"missing {names}" + (f"; expected {shape}" if shape else "")
    elif "invalid literal for int()" in text:
        text = "a port or number is not a number" + (f"; expected {shape}" if shape else "")
    elif re.search(r"multiple values for (?:keyword )?argument 'interface'", text):
        # interface=:: splits at its colons.
        text = "an IPv6 address needs its colons escaped with a backslash: interface=\\:\\: (interface=\\:\\:1)"
    elif isinstance(error, TypeError) and "argument" in text:
        # "_parseTCP() got an unexpected keyword argument 'prot'" -> the useful part
        text = text.split(") ", 1)[-1]
    return text


def describeAddress(kind: str, address: object) -> str:
    """Render a listening or peer address: ``tcp:127.0.0.1:8124``, ``unix:/run/x.sock``."""
    if isinstance(address, (IPv4Address, IPv6Address)):
        host = f"[{address.host}]" if isinstance(address, IPv6Address) else address.host
        return f"{kind}:{host}:{address.port}"
    if isinstance(address, UNIXAddress):
        raw = address.name
        name = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
        return f"{kind}:{name or '(unnamed)'}"
    return f"{kind}:{address}"
