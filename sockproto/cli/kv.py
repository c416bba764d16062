# -*- test-case-name: tests.test_cli_e2e -*-
"""``sockproto kv``: the SPB/1 client for the shell."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from twisted.internet import defer, endpoints

from sockproto.binary.client import Exists, NotFound, SPBClientProtocol, SPBError
from sockproto.cli.run import FAILED, NO, OK, UNREACHABLE, USAGE, runReactor
from sockproto.interfaces import IServerReactor
from sockproto.server.endpointstrings import endpointErrorText
from sockproto.server.targets import clientDescription


def run(options: Any) -> int:
    args = options["args"]
    if options["command"] in ("create", "update") and len(args) == 1:
        # Read the value before the reactor runs: a blocking read inside it
        # would hold Ctrl-C back.
        options["args"] = (args[0], sys.stdin.buffer.read())
    return runReactor(lambda reactor: talk(reactor, options))


async def talk(reactor: IServerReactor, options: Any) -> int:
    try:
        endpoint = endpoints.clientFromString(reactor, clientDescription(options["endpoint"]))
    except Exception as e:
        why = endpointErrorText(e, options["endpoint"])
        sys.stderr.write(f"sockproto kv: bad endpoint {options['endpoint']!r}: {why}\n")
        return USAGE
    timeout = options["timeout"]
    try:
        connecting = endpoint.connect(_factory())
        connecting.addTimeout(timeout, reactor)
        proto = await connecting
    except defer.TimeoutError:
        sys.stderr.write(f"sockproto kv: cannot connect to {options['endpoint']}: timed out after {timeout:g} s\n")
        return UNREACHABLE
    except Exception as e:
        sys.stderr.write(f"sockproto kv: cannot connect to {options['endpoint']}: {e}\n")
        return UNREACHABLE
    command, args = options["command"], list(options["args"])
    try:
        if command in ("create", "update") and isinstance(args[1], str):
            args[1] = args[1].encode("utf-8")
        started = time.monotonic()
        call = getattr(proto, command)(*args)
        call.addTimeout(timeout, reactor)
        result = await call
    except (NotFound, Exists) as e:
        sys.stderr.write(f"sockproto kv: {e.message}\n")
        return NO
    except SPBError as e:
        sys.stderr.write(f"sockproto kv: {e}\n")
        return FAILED
    except defer.TimeoutError:
        sys.stderr.write(f"sockproto kv: no reply within {timeout:g} s\n")
        return FAILED
    finally:
        if proto.connected:
            closed = proto.whenClosed()
            proto.transport.loseConnection()
            await closed
    out = sys.stdout.buffer
    if command == "read":
        out.write(result)
        if sys.stdout.isatty() and not result.endswith(b"\n"):
            out.write(b"\n")
    elif command == "list":
        out.write(b"".join(key + b"\n" for key in result))
    elif command == "ping":
        out.write(f"pong from {options['endpoint']} in {(time.monotonic() - started) * 1000:.1f} ms\n".encode())
    elif command == "stats":
        out.write(json.dumps(result, indent=2).encode() + b"\n")
    out.flush()
    return OK


def _factory() -> Any:
    from twisted.internet.protocol import Factory

    return Factory.forProtocol(SPBClientProtocol)
