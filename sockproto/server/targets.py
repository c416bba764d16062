# -*- test-case-name: tests.test_cli_e2e -*-
"""Client endpoints for the tools and the proxy: Twisted strings, with TLS verified properly.

``tls:HOST:PORT`` (or ``ssl:``) connects with ``optionsForClientTLS``: the
server's certificate must chain to the given CA (``ca``, else the system's
trust store) and name HOST (service-identity), TLS 1.2 at least; ``cert`` and
``key`` present a client certificate for mutual TLS.  Every other type
(``tcp:``, ``unix:``, ...) is Twisted's own ``clientFromString``.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from twisted.internet import endpoints, interfaces, ssl
from twisted.python.filepath import FilePath

from sockproto.interfaces import IServerReactor
from sockproto.server.endpointstrings import splitDescription


@dataclass(frozen=True)
class TLSSettings:
    """How a client verifies a TLS target (``--ca``) and which certificate it shows (``--cert``, ``--key``)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class Target:
    """A client endpoint, the host name its certificate must name (TLS) and its type."""

    endpoint: Any
    tlsHost: str | None  # the name checked against the certificate, for TLS targets
    kind: str


# tcp:[::1]:9000, as addresses are written in URLs and as probe prints them.
_BRACKETED = re.compile(r"^(tcp|tcp6|tls|ssl):\[([^\]]+)\]:(.*)$", re.IGNORECASE)
# localhost:8124, 127.0.0.1:80, [::1]:9000: a host and port without a type.
_UNTYPED = re.compile(r"^(?:\[[^\]]+\]|[A-Za-z0-9._-]+):\d+$")


def clientDescription(description: str) -> str:
    """
    A client endpoint string as Twisted's parser takes it: a bracketed IPv6
    host (``tcp:[::1]:9000``) gets Twisted's escaped colons (``tcp:\\:\\:1:9000``).
    Raises ValueError, with the string to write instead, for a host and port
    without an endpoint type (``localhost:8124``).
    """
    bracketed = _BRACKETED.match(description)
    if bracketed:
        kind, host, rest = bracketed.groups()
        return f"{kind}:{host.replace(':', chr(92) + ':')}:{rest}"
    if _UNTYPED.match(description):
        raise ValueError(f"no endpoint type; write tcp:{description} (or tls:{description} for TLS)")
    return description


def clientTarget(
    reactor: IServerReactor, description: str, tls: TLSSettings = TLSSettings(), timeout: float = 10.0
) -> Target:
    """
    An endpoint for ``description``.  Raises ValueError (or OSError for a
    certificate file) with a readable message.
    """
    description = clientDescription(description)
    kind, args, kwargs = splitDescription(description)
    if kind in ("tls", "ssl"):
        host = args[0] if args else kwargs.pop("host", None)
        port = args[1] if len(args) > 1 else kwargs.pop("port", None)
        if not host or not port:
            raise ValueError(f"expected {kind}:HOST:PORT")
        options = tlsOptions(host, tls)
        inner = endpoints.HostnameEndpoint(reactor, host, int(port), timeout=timeout)
        return Target(endpoints.wrapClientTLS(options, inner), host, kind)
    if kind == "tcp" and "timeout" not in kwargs:
        description += f":timeout={timeout:g}"
    return Target(endpoints.clientFromString(reactor, description), None, kind)


def _readPEM(option: str, path: str, what: str) -> bytes:
    """The bytes of a PEM file given as ``option``, or a ValueError saying what is wrong with it."""
    try:
        content = FilePath(path).getContent()
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot read it ({e.strerror})") from None
    if b"-----BEGIN " not in content:
        raise ValueError(f"{option} {path}: not a PEM file (expected {what})")
    return content


def tlsOptions(host: str, tls: TLSSettings) -> Any:
    client = None
    if tls.cert:
        keyOption = "--key" if tls.key else "--cert"
        keyPEM = _readPEM(keyOption, tls.key or tls.cert, "a private key")
        certPEM = _readPEM("--cert", tls.cert, "a certificate")
        try:
            client = ssl.PrivateCertificate.loadPEM(keyPEM + b"\n" + certPEM)
        except Exception:
            raise ValueError(
                f"--cert {tls.cert}: no certificate and matching private key found (give the key with --key)"
            ) from None
    if tls.insecure:
        extra = {}
        if client is not None:
            extra = {"privateKey": client.privateKey.original, "certificate": client.original}
        return ssl.CertificateOptions(verify=False, raiseMinimumTo=ssl.TLSVersion.TLSv1_2, **extra)
    trustRoot: Any = ssl.platformTrust()
    if tls.ca:
        try:
            trustRoot = ssl.Certificate.loadPEM(_readPEM("--ca", tls.ca, "a CA certificate"))
        except ValueError:
            raise
        except Exception:
            raise ValueError(f"--ca {tls.ca}: not a PEM certificate") from None
    return ssl.optionsForClientTLS(host, trustRoot=trustRoot, clientCertificate=client)


def canHalfClose(transport: Any) -> bool:
    # A TLS transport forwards unknown attributes to the TCP one under it, so
    # it seems to have loseWriteConnection; using it would cut TLS off.
    return not interfaces.ISSLTransport.providedBy(transport) and hasattr(transport, "loseWriteConnection")


def halfClose(transport: Any) -> None:
    """
    Stop writing but keep reading where the transport can (TCP, UNIX); else
    (TLS) close once flushed.  A producer registered to feed the transport
    is let go first: TLS's ``loseConnection`` waits for it to be
    unregistered before it sends its close, and nothing more will come
    from it.
    """
    if canHalfClose(transport):
        transport.loseWriteConnection()
    else:
        transport.unregisterProducer()
        transport.loseConnection()


def describeCertificate(x509: Any) -> dict[str, Any]:
    """Subject, issuer, names and expiry of a pyOpenSSL certificate."""
    crypto = x509.to_cryptography()
    from cryptography import x509 as cx

    try:
        san = crypto.extensions.get_extension_for_class(cx.SubjectAlternativeName).value
        names = [str(n) for n in san.get_values_for_type(cx.DNSName)]
        names += [str(n) for n in san.get_values_for_type(cx.IPAddress)]
    except cx.ExtensionNotFound:
        names = []
    expires = crypto.not_valid_after_utc
    return {
        "subject": crypto.subject.rfc4514_string(),
        "issuer": crypto.issuer.rfc4514_string(),
        "names": names,
        "expires": expires.isoformat(),
        "days_left": (expires - datetime.datetime.now(datetime.UTC)).days,
    }
