# -*- test-case-name: tests.test_config -*-
"""The TOML config file of ``twistd -n sockproto --config FILE``.

One table per service (``[echo]``, ``[chat]``, ``[joke]``, ``[binary]``,
``[crud]``, ``[proxy]``); its keys are the service's command-line options
by their long names (``listen = ["tcp:8124", "unix:/run/echo.sock"]``,
``max-connections = 100``, ``no-keepalive = true``).  Keys before the first
table are for the whole process: ``metrics`` and ``shutdown-timeout``.

Every value goes through the same parsing as on the command line, so the
file and the command line accept exactly the same things.  Every error is
found before anything listens, and its message names the file, the table
and the key.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.python import usage

from sockproto.privateapi import optionHandler
from sockproto.server.endpointstrings import LOOPBACK, checkEndpoint, splitDescription
from sockproto.server.options import logLevel, nonNegativeFloat
from sockproto.server.workers import workerCount

#: table -> module with the service's Options and buildService.
SERVICES: dict[str, str] = {
    "echo": "sockproto.echo",
    "chat": "sockproto.chat.service",
    "joke": "sockproto.joke.service",
    "binary": "sockproto.binary.service",
    "crud": "sockproto.binary.crud",
    "proxy": "sockproto.proxy",
}

#: Keys before the first table: settings of the whole process.
PROCESS_KEYS = ("metrics", "shutdown-timeout", "log-level", "workers")

# Command-line options that make no sense in a file.
# (metrics is one per process: a key before the first table.)
_NOT_KEYS = frozenset({"help", "version", "help-auth", "help-auth-type", "metrics", "log-level", "workers"})


class ConfigError(usage.UsageError):
    """A config file that cannot be used; the message names the file, table and key."""


@dataclass
class ServiceConfig:
    """One table of the config file: the service's module and its options as the command line would set them."""

    name: str
    module: Any
    options: usage.Options
    #: The keys the file set (the others have their defaults).
    explicit: set[str] = field(default_factory=set)


@dataclass
class Config:
    """A whole config file: its services and the settings of the process."""

    path: str
    services: list[ServiceConfig] = field(default_factory=list)
    metrics: str | None = None
    shutdownTimeout: float | None = None
    logLevel: str = "info"
    #: Worker processes of the whole process (--workers).
    workers: int = 1
    #: Where the databases of the seed services go (no config file).
    var: Path | None = None


def optionKinds(options: usage.Options) -> dict[str, str]:
    """Long option name -> ``flag``, ``list`` (repeatable) or ``value``."""
    kinds = {}
    for long in options.longOpt:
        name = long.rstrip("=")
        if name in _NOT_KEYS:
            continue
        if not long.endswith("="):
            kinds[name] = "flag"
        elif name in getattr(options, "repeatable", ()):
            kinds[name] = "list"
        else:
            kinds[name] = "value"
    return kinds


def _withoutFlagPrefix(message: str) -> str:
    # "bad --listen 'x': why" reads better under "[echo] listen:" as "'x': why".
    message = re.sub(r"^bad --[\w-]+ ", "", message)
    return message.replace("Parameter type enforcement failed: ", "")


def _typeName(value: Any) -> str:
    return {bool: "a boolean", str: "a string", int: "a number", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def applyTable(options: usage.Options, table: dict[str, Any], where: str) -> None:
    """Set ``options`` from a config table as if given on the command line, then check them."""
    kinds = optionKinds(options)
    for key, value in table.items():
        at = f"{where} {key}"
        if key in ("metrics", "log-level"):  # one per process (a table may set its own shutdown-timeout)
            raise ConfigError(f"{at}: {key} is for the whole process: set it before the first table")
        kind = kinds.get(key)
        if kind is None:
            close = difflib.get_close_matches(key, kinds, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(sorted(kinds))}"
            raise ConfigError(f"{at}: unknown key{hint}")
        if kind == "flag":
            if not isinstance(value, bool):
                raise ConfigError(f"{at}: expected true or false, not {_typeName(value)}")
            if value:
                _setOption(options, key, None, at)
            continue
        values = value if kind == "list" and isinstance(value, list) else [value]
        for item in values:
            if kind == "list":
                if not isinstance(item, str):
                    raise ConfigError(f"{at}: expected a string or a list of strings, not {_typeName(item)}")
            else:
                _checkScalar(options, key, item, at)
            _setOption(options, key, item if isinstance(item, str) else repr(item), at)
    try:
        options.postOptions()
    except (usage.UsageError, ValueError) as e:
        message = str(e)
        named = re.match(r"bad --([\w-]+) (.*)", message, re.S)
        if named:  # "bad --mode 'x': ..." is about the key mode
            raise ConfigError(f"{where} {named[1]}: {named[2]}") from None
        raise ConfigError(f"{where}: {_withoutFlagPrefix(message)}") from None


def _checkScalar(options: usage.Options, key: str, value: Any, at: str) -> None:
    if isinstance(value, (bool, list, dict)) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{at}: expected a single value, not {_typeName(value)}")
    default = options.get(key)
    if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
        raise ConfigError(f"{at}: expected a number, not a string ({value!r})")
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{at}: expected a string, not {_typeName(value)} (put it in quotes)")


def _setOption(options: usage.Options, key: str, value: str | None, at: str) -> None:
    # What usage.Options.parseOptions does for one option, so that an error
    # can be pinned on the key that caused it.
    name = key if key in options.synonyms else key.replace("-", "_")
    name = options.synonyms[name]
    handler = optionHandler(options, name)
    try:
        if isinstance(handler, usage.CoerceParameter) and value is not None:
            # The value alone: the error is pinned on the key, not on a --flag.
            options.opts[name] = handler.coerce(value)
        elif isinstance(handler, usage.CoerceParameter):
            handler.dispatch(name, value)
        else:
            handler(name, value)
    except (usage.UsageError, ValueError, TypeError, OSError) as e:
        raise ConfigError(f"{at}: {_withoutFlagPrefix(str(e))}") from None


def loadConfig(path: str) -> Config:
    """Read and check a config file; raises ConfigError."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    config = Config(path)
    for key, value in document.items():
        if key in SERVICES:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {key} must be a table ([{key}]), not {_typeName(value)}")
            module = importlib.import_module(SERVICES[key])
            options = module.Options()
            applyTable(options, value, f"{path}: [{key}]")
            config.services.append(ServiceConfig(key, module, options, set(value)))
        elif key == "metrics":
            if not isinstance(value, str):
                raise ConfigError(f"{path}: metrics: expected an endpoint string, not {_typeName(value)}")
            try:
                config.metrics = checkEndpoint(value)
            except usage.UsageError as e:
                raise ConfigError(f"{path}: metrics: {_withoutFlagPrefix(str(e))}") from None
        elif key == "log-level":
            try:
                config.logLevel = logLevel(value if isinstance(value, str) else repr(value))
            except ValueError as e:
                raise ConfigError(f"{path}: log-level: {e}") from None
        elif key == "workers":
            try:
                config.workers = workerCount(value if isinstance(value, str) else repr(value))
            except ValueError as e:
                raise ConfigError(f"{path}: workers: {e}") from None
        elif key == "shutdown-timeout":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{path}: shutdown-timeout: expected a number of seconds, not {_typeName(value)}")
            try:
                config.shutdownTimeout = nonNegativeFloat(str(value))
            except ValueError as e:
                raise ConfigError(f"{path}: shutdown-timeout: {e}") from None
        else:
            known = [*SERVICES, *PROCESS_KEYS]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"
            what = "table" if isinstance(value, dict) else "key"
            raise ConfigError(f"{path}: unknown {what} {key!r}{hint}")
    if not config.services:
        raise ConfigError(f"{path}: no service to run: add a table such as [echo] with listen = [...]")
    checkEndpointsAreDistinct(config)
    checkSharedDatabases(config)
    return config


def endpointIdentity(description: str) -> tuple[Any, ...] | None:
    """
    What two endpoints must not share: (family, port, interface) or
    ("unix", path).  None where a clash cannot be told beforehand (port 0,
    systemd sockets chosen by index).
    """
    kind, args, kwargs = splitDescription(description)
    if kind in ("tcp", "tcp6", "ssl", "mtls", "tls", "udp"):
        if kind == "tls":
            port = kwargs.get("port", "443")
        else:
            port = args[0] if args else kwargs.get("port", "")
        if not port.isdigit() or int(port) == 0:
            return None
        loopback = LOOPBACK.get(kind, "127.0.0.1").replace("\\", "")
        interface = kwargs.get("interface", loopback).replace("\\", "")
        family = "udp" if kind == "udp" else "tcp"
        return (family, int(port), interface)
    if kind == "unix":
        address = args[0] if args else kwargs.get("address", "")
        return ("unix", os.path.realpath(address))
    if kind == "systemd":
        return ("systemd", kwargs.get("index"), kwargs.get("name"))
    return None


_WILDCARDS = frozenset({"", "0.0.0.0", "::", "::ffff:0.0.0.0"})


def _clash(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    if a == b:
        return True
    if a[0] in ("tcp", "udp") and a[:2] == b[:2]:
        return a[2] in _WILDCARDS or b[2] in _WILDCARDS
    return False


def checkEndpointsAreDistinct(config: Config) -> None:
    """Two services (or one twice) on one endpoint: an error naming both."""
    seen: list[tuple[tuple[Any, ...], str, str]] = []
    uses = []
    for entry in config.services:
        # Every endpoint the service listens on: --listen, and the others (the chat's --web).
        for listener, descriptions in entry.options.listeners():  # type: ignore[attr-defined]
            key = "listen" if listener == entry.options.serviceName else listener.split("-", 1)[-1]  # type: ignore[attr-defined]
            uses += [(f"[{entry.name}] {key}", d) for d in descriptions]
    if config.metrics:
        uses.append(("metrics", config.metrics))
    for where, description in uses:
        identity = endpointIdentity(description)
        if identity is None:
            continue
        for other, otherWhere, otherDescription in seen:
            if _clash(identity, other):
                raise ConfigError(
                    f"{config.path}: {where}: {description!r} is the same endpoint as {otherDescription!r} "
                    f"of {otherWhere}"
                )
        seen.append((identity, where, description))


def checkSharedDatabases(config: Config) -> None:
    """Services sharing a database share its store, so they must agree on --fsync."""
    from sockproto.binary.service import databaseKey

    first: dict[str, tuple[str, str]] = {}
    for entry in config.services:
        if "db" not in entry.options or "fsync" not in entry.options:
            continue
        key = databaseKey(entry.options["db"])
        fsync = entry.options["fsync"]
        if key in first and first[key][1] != fsync:
            other, otherFsync = first[key]
            raise ConfigError(
                f"{config.path}: [{entry.name}] fsync: {fsync!r} differs from fsync {otherFsync!r} of [{other}], "
                f"which uses the same database {entry.options['db']!r}"
            )
        first.setdefault(key, (entry.name, fsync))
