# -*- test-case-name: tests.test_cli_e2e -*-
"""``sockproto connect``, ``probe`` and ``scan``: the seeds' clients, done with Twisted endpoints."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from OpenSSL import SSL
from twisted.internet import defer, endpoints, error, interfaces, protocol, stdio, task
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from sockproto.cli.run import FAILED, OK, UNREACHABLE, USAGE, runReactor, wasInterrupted
from sockproto.interfaces import IServerReactor
from sockproto.server.connections import setSocketOptions
from sockproto.server.endpointstrings import describeAddress, endpointErrorText
from sockproto.server.targets import Target, TLSSettings, canHalfClose, clientTarget, describeCertificate, halfClose


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _why(failure: Any) -> str:
    value = failure.value if hasattr(failure, "value") else failure
    if isinstance(value, SSL.Error):
        return f"TLS handshake failed: {_sslReason(value)}"
    if isinstance(value, (defer.TimeoutError, error.TimeoutError)):
        return "timed out"
    if isinstance(value, error.ConnectionRefusedError):
        return "connection refused"
    if hasattr(failure, "getErrorMessage"):
        return failure.getErrorMessage()
    return str(value)


def _sslReason(value: Any) -> str:
    try:
        return "; ".join(part[2] for part in value.args[0] if part[2]) or str(value)
    except Exception:
        return str(value)


def tlsSettings(options: Any) -> TLSSettings:
    return TLSSettings(ca=options["ca"], cert=options["cert"], key=options["key"], insecure=options["insecure"])


def _target(reactor: IServerReactor, description: str, options: Any) -> Target | None:
    try:
        return clientTarget(reactor, description, tlsSettings(options), options["timeout"])
    except Exception as e:
        _err(f"sockproto: bad endpoint {description!r}: {endpointErrorText(e, description)}")
        return None


# -- connect ----------------------------------------------------------------------------


@implementer(interfaces.IHandshakeListener)
class _Remote(protocol.Protocol):
    """The server side of ``connect``: everything it sends goes to standard output."""
    transport: Any  # connected: never None while the protocol runs

    def __init__(self, done: defer.Deferred[Any], clock: IReactorTime, linger: float) -> None:
        self.done = done
        self.clock = clock
        self.linger = linger
        self.reason: Any = None
        self.handshook = False
        self.closingByUs = False
        self._lingering: Any = None

    def dataReceived(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        if self._lingering is not None and self._lingering.active():
            self._lingering.reset(self.linger)

    def handshakeCompleted(self) -> None:
        self.handshook = True

    def inputEnded(self) -> None:
        """Standard input is done: half-close; over TLS (no half-close in Twisted), close once the server is quiet."""
        transport = self.transport
        if transport is None or not transport.connected:
            return
        if canHalfClose(transport):
            halfClose(transport)
            return
        self._lingering = self.clock.callLater(self.linger, self._closeNow)

    def _closeNow(self) -> None:
        self.closingByUs = True
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        if self._lingering is not None and self._lingering.active():
            self._lingering.cancel()
        if not self.done.called:
            self.done.callback(None)


class _Keyboard(protocol.Protocol):
    """Standard input: copied to the server; its end half-closes the connection."""
    transport: Any  # connected: never None while the protocol runs

    def __init__(self, remote: _Remote) -> None:
        self.remote = remote

    def dataReceived(self, data: bytes) -> None:
        if self.remote.transport is not None:
            self.remote.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.remote.inputEnded()


def runConnect(options: Any) -> int:
    async def main(reactor: IServerReactor) -> int:
        target = _target(reactor, options["endpoint"], options)
        if target is None:
            return USAGE
        done: defer.Deferred[Any] = defer.Deferred()
        remote = _Remote(done, reactor, options["linger"])
        connecting = target.endpoint.connect(protocol.Factory.forProtocol(lambda: remote))
        connecting.addTimeout(options["timeout"], reactor)
        try:
            await connecting
        except Exception as e:
            _err(f"sockproto connect: cannot connect to {options['endpoint']}: {_why(e)}")
            return UNREACHABLE
        if options["keepalive"]:
            setSocketOptions(remote.transport, keepAlive=True)
        keyboard = stdio.StandardIO(_Keyboard(remote), reactor=reactor)
        await done
        reason = remote.reason
        keyboard.loseConnection()
        value = getattr(reason, "value", None)
        if target.tlsHost is not None and not remote.handshook:
            why = _why(value) if isinstance(value, SSL.Error) else (
                f"TLS handshake failed: the server's certificate is not trusted or does not name {target.tlsHost}"
            )
            _err(f"sockproto connect: {options['endpoint']}: {why}")
            return UNREACHABLE
        if remote.closingByUs or wasInterrupted():
            return OK  # (runReactor answers 130 for a Ctrl-C, which is no lost connection)
        if _demandsClientCertificate(value):
            # TLS 1.3: the client's side of the handshake is done before the server checks for a certificate.
            _err(f"sockproto connect: {options['endpoint']}: {_NEEDS_CERTIFICATE}")
            return UNREACHABLE
        if isinstance(value, SSL.Error):
            _err(f"sockproto connect: connection lost: {_why(value)}")
            return FAILED
        if value is not None and not isinstance(value, error.ConnectionDone):
            _err(f"sockproto connect: connection lost: {reason.getErrorMessage()}")
            return FAILED
        return OK

    return runReactor(main)


# -- probe ------------------------------------------------------------------------------


@implementer(interfaces.IHandshakeListener)
class _Probe(protocol.Protocol):
    transport: Any  # connected: never None while the protocol runs
    def __init__(self) -> None:
        self.handshake: defer.Deferred[None] = defer.Deferred()
        self.lost: defer.Deferred[Any] = defer.Deferred()

    def handshakeCompleted(self) -> None:
        if not self.handshake.called:
            self.handshake.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        if not self.handshake.called:
            self.handshake.errback(reason)
        self.lost.callback(None)


#: Seconds to wait after a TLS handshake for a server that refuses it afterwards.
CLIENT_CERTIFICATE_GRACE = 0.3
_NEEDS_CERTIFICATE = "the server demands a client certificate (give one with --cert and --key)"


def _demandsClientCertificate(value: Any) -> bool:
    if not isinstance(value, SSL.Error):
        return False
    text = str(value).lower()
    return "certificate required" in text or "handshake failure" in text or "peer did not return" in text


async def probeOne(reactor: IServerReactor, description: str, options: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"target": description, "reachable": False}
    target = _target(reactor, description, options)
    if target is None:
        result["error"] = "bad endpoint"
        return result
    probe = _Probe()
    started = time.perf_counter()
    connecting = target.endpoint.connect(protocol.Factory.forProtocol(lambda: probe))
    connecting.addTimeout(options["timeout"], reactor)
    try:
        await connecting
        result["connect_ms"] = round((time.perf_counter() - started) * 1000, 3)
        if target.tlsHost is not None:
            probe.handshake.addTimeout(options["timeout"], reactor)
            await probe.handshake
            result["tls_ms"] = round((time.perf_counter() - started) * 1000, 3)
            if not options["cert"]:
                # With TLS 1.3 a server that demands a client certificate says
                # so only after the client's side of the handshake is done.
                await defer.DeferredList(
                    [probe.lost, task.deferLater(reactor, CLIENT_CERTIFICATE_GRACE, lambda: None)],
                    fireOnOneCallback=True,
                )
                if probe.lost.called:
                    value = getattr(getattr(probe, "reason", None), "value", None)
                    result["error"] = _NEEDS_CERTIFICATE if _demandsClientCertificate(value) else (
                        "the server closed the connection right after the TLS handshake"
                    )
                    return result
    except Exception as e:
        if not options["cert"] and _demandsClientCertificate(e):
            result["error"] = _NEEDS_CERTIFICATE
            return result
        result["error"] = _why(e)
        if probe.transport is not None:
            probe.transport.abortConnection()
        return result
    transport = probe.transport
    kind = "unix" if target.kind == "unix" else "tcp"
    result["reachable"] = True
    result["local"] = describeAddress(kind, transport.getHost())
    result["remote"] = describeAddress(kind, transport.getPeer())
    if target.tlsHost is not None:
        result["tls_version"] = transport.getHandle().get_protocol_version_name() if hasattr(
            transport, "getHandle") else None
        certificate = transport.getPeerCertificate()
        if certificate is not None:
            result["certificate"] = describeCertificate(certificate)
    transport.loseConnection()
    await probe.lost
    return result


def runProbe(options: Any) -> int:
    async def main(reactor: IServerReactor) -> int:
        results = [await probeOne(reactor, d, options) for d in options["endpoints"]]
        if options["json"]:
            sys.stdout.write(json.dumps(results, indent=2) + "\n")
        else:
            for r in results:
                sys.stdout.write(_probeText(r))
        if any(r.get("error") == "bad endpoint" for r in results):
            return USAGE  # a string to write otherwise (said above): not a target found unreachable
        return OK if all(r["reachable"] for r in results) else UNREACHABLE

    return runReactor(main)


def _probeText(r: dict[str, Any]) -> str:
    if not r["reachable"]:
        return f"{r['target']}: unreachable: {r.get('error')}\n"
    lines = [f"{r['target']}: reachable in {r['connect_ms']} ms, {r['local']} -> {r['remote']}"]
    if "tls_ms" in r:
        lines.append(f"  TLS {r.get('tls_version')} after {r['tls_ms']} ms")
    cert = r.get("certificate")
    if cert:
        lines.append(f"  subject {cert['subject']}; issuer {cert['issuer']}")
        lines.append(f"  names {', '.join(cert['names']) or '(none)'}; expires {cert['expires']} "
                     f"({cert['days_left']} days)")
    return "\n".join(lines) + "\n"


# -- scan -------------------------------------------------------------------------------


def parsePorts(text: str) -> list[int]:
    """``1-1024,8080`` -> sorted unique ports.  Raises ValueError."""
    ports: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        start, end = int(low), int(high or low)
        if not (1 <= start <= end <= 65535):
            raise ValueError(f"bad port range {part!r} (ports are 1 to 65535)")
        ports.update(range(start, end + 1))
    if not ports:
        raise ValueError("no ports")
    return sorted(ports)


async def _resolveOnce(reactor: IServerReactor, host: str) -> str:
    """An address for ``host``, looked up once rather than once per port."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return await reactor.resolve(host)


def runScan(options: Any) -> int:
    async def main(reactor: IServerReactor) -> int:
        host, ports = options["host"], options["ports"]
        try:
            address = await _resolveOnce(reactor, host)
        except Exception as e:
            _err(f"sockproto scan: cannot resolve {host}: {_why(e)}")
            return UNREACHABLE
        endpointClass = endpoints.TCP6ClientEndpoint if ":" in address else endpoints.TCP4ClientEndpoint
        gate = defer.DeferredSemaphore(options["concurrency"])
        openPorts: list[int] = []
        done = [0]
        showProgress = sys.stderr.isatty() and not options["json"]

        async def check(port: int) -> None:
            endpoint = endpointClass(reactor, address, port, timeout=options["timeout"])
            try:
                attempt = endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol))
                attempt.addTimeout(options["timeout"], reactor)
                proto: Any = await attempt
                openPorts.append(port)
                proto.transport.abortConnection()
            except Exception:
                pass
            done[0] += 1
            if showProgress and (done[0] % 25 == 0 or done[0] == len(ports)):
                sys.stderr.write(f"\rscanned {done[0]}/{len(ports)}, {len(openPorts)} open")
                sys.stderr.flush()

        # Each port's coroutine is made when its turn comes: made up front, those still
        # waiting at a Ctrl-C would be reported as never awaited.
        def checkInTurn(port: int) -> defer.Deferred[None]:
            return defer.ensureDeferred(check(port))

        await defer.gatherResults([gate.run(checkInTurn, port) for port in ports])
        if showProgress:
            sys.stderr.write("\n")
        openPorts.sort()
        if options["json"]:
            sys.stdout.write(json.dumps({"host": host, "scanned": len(ports), "open": openPorts}) + "\n")
        else:
            sys.stdout.write("".join(f"{port} open\n" for port in openPorts))
            scanned = f"{len(ports)} port" + ("" if len(ports) == 1 else "s")
            sys.stdout.write(f"{host}: {scanned} scanned, {len(openPorts)} open\n")
        return OK

    return runReactor(main)
