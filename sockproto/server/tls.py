# -*- test-case-name: tests.test_connections -*-
"""TLS helpers: the ``mtls:`` server endpoint (mutual TLS) and development certificates.

``mtls:PORT:privateKey=server.key:certKey=server.crt:caCerts=ca.pem`` listens
like ``ssl:`` but requires every client to present a certificate signed by
one of the CAs in ``caCerts``; TLS 1.2 is the minimum.  It is registered as a
Twisted endpoint plugin, so any program using ``serverFromString`` gets it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from twisted.internet import endpoints, interfaces, ssl
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from sockproto.interfaces import IServerReactor
from sockproto.server.ratelimit import Episodes

log = Logger()


def _certificates(path: str) -> list[ssl.Certificate]:
    """Every certificate in a PEM file."""
    data = FilePath(path).getContent()
    marker = b"-----END CERTIFICATE-----"
    pieces = [p + marker for p in data.split(marker) if b"-----BEGIN CERTIFICATE-----" in p]
    if not pieces:
        raise ValueError(f"no certificate in {path}")
    return [ssl.Certificate.loadPEM(piece) for piece in pieces]


def mutualTLSOptions(privateKey: str, certKey: str | None, caCerts: str) -> ssl.CertificateOptions:
    """Server options that demand and verify a client certificate signed by ``caCerts``."""
    keyPEM = FilePath(privateKey).getContent()
    certPEM = FilePath(certKey or privateKey).getContent()
    server = ssl.PrivateCertificate.loadPEM(keyPEM + b"\n" + certPEM)
    return ssl.CertificateOptions(
        privateKey=server.privateKey.original,
        certificate=server.original,
        verify=True,
        requireCertificate=True,
        caCerts=[c.original for c in _certificates(caCerts)],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


class MutualTLSServerParser:
    """``mtls:PORT:privateKey=KEY:certKey=CERT:caCerts=CA[:interface=ADDR][:backlog=N]``."""

    prefix = "mtls"

    def parseStreamServer(
        self,
        reactor: IServerReactor,
        port: str,
        privateKey: str = "server.pem",
        certKey: str | None = None,
        caCerts: str | None = None,
        interface: str = "127.0.0.1",
        backlog: str = "4096",
    ) -> Any:
        if not caCerts:
            raise ValueError("mtls: needs caCerts=FILE, the CA that signs client certificates")
        from sockproto.privateapi import serveClientsOfferingALPN

        serveClientsOfferingALPN()  # any program may use this parser: its clients may offer ALPN
        options = mutualTLSOptions(privateKey, certKey, caCerts)
        return endpoints.SSL4ServerEndpoint(reactor, int(port), options, backlog=int(backlog), interface=interface)


def peerIdentity(transport: Any) -> str | None:
    """
    The common name of the peer's certificate, where the server verified one.

    Only ``mtls:`` endpoints demand and verify client certificates; on others
    a certificate is not asked for and this is None.
    """
    if not interfaces.ISSLTransport.providedBy(transport):
        return None
    try:
        certificate: Any = transport.getPeerCertificate()
    except Exception:
        return None
    if certificate is None:
        return None
    name = certificate.get_subject().commonName
    return name or None


# -- failed handshakes -------------------------------------------------------------

# OpenSSL's words for an alert that the peer sent ("tlsv1 alert unknown ca").
_PEER_ALERT = re.compile(r"\b(?:sslv3|tlsv1|tlsv13) alert\b")


def handshakeFailure(reason: Failure | None) -> tuple[str, bool] | None:
    """
    What ended a TLS connection, if OpenSSL did: (its words, whether the
    peer sent the alert that ended it).  None for anything else (a plain
    close, a reset).
    """
    from OpenSSL import SSL

    if reason is None or not reason.check(SSL.Error):
        return None
    details = reason.value.args[0] if reason.value.args else None
    if isinstance(details, list) and details and all(isinstance(d, tuple) and d for d in details):
        words = "; ".join(str(d[-1]) for d in details if d[-1]) or str(reason.value)
    else:
        words = str(reason.value) or type(reason.value).__name__
    return words, bool(_PEER_ALERT.search(words))


def logHandshakeFailure(
    episodes: Episodes, now: float, service: str, peer: str, reason: Failure | None
) -> bool:
    """
    Log a TLS handshake that failed, at most once a minute for each cause
    (with how many were not logged meanwhile): a warning where this server
    aborted it (a client certificate missing or not trusted, no common
    protocol version or cipher), info where the client did (it does not
    trust this server's certificate).  Returns whether ``reason`` was one.
    """
    failure = handshakeFailure(reason)
    if failure is None:
        return False
    words, byPeer = failure
    unsaid = episodes.due((service, words), now)
    if unsaid is None:
        return True
    more = Episodes.unsaidNote(unsaid)
    if byPeer:
        log.info("{service} TLS handshake from {peer} refused by the client: {why}" + more,
                 service=service, peer=peer, why=words)
    else:
        log.warn("{service} TLS handshake from {peer} aborted by this server: {why}" + more,
                 service=service, peer=peer, why=words)
    return True


# -- development certificates -------------------------------------------------------


def _write(path: Path, data: bytes, private: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600 if private else 0o644)


#: What :func:`makeDevelopmentCertificates` writes into its directory.
DEVELOPMENT_FILES = ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key")


def makeDevelopmentCertificates(
    directory: str | Path, hosts: list[str], clientName: str = "client", days: int = 365
) -> dict[str, Path]:
    """
    A CA, a server certificate for ``hosts`` (as subjectAltNames: DNS names
    and IP addresses) and a client certificate for ``clientName``, as PEM
    files; private keys are readable by the owner only.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sockproto development"),
                x509.NameAttribute(NameOID.COMMON_NAME, common),
            ]
        )

    def pemKey(key: Any) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    caKey = ec.generate_private_key(ec.SECP256R1())
    caName = name("sockproto development CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(caName)
        .issuer_name(caName)
        .public_key(caKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(caKey, hashes.SHA256())
    )

    def leaf(common: str, usage: Any, alternatives: list[Any]) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(caName)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if alternatives:
            builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        return key, builder.sign(caKey, hashes.SHA256())

    alternatives: list[Any] = []
    for host in hosts:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alternatives.append(x509.DNSName(host))
    serverKey, server = leaf(hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, alternatives)
    clientKey, client = leaf(clientName, ExtendedKeyUsageOID.CLIENT_AUTH, [])

    pem = serialization.Encoding.PEM
    files = {
        "ca.crt": (ca.public_bytes(pem), False),
        "ca.key": (pemKey(caKey), True),
        "server.crt": (server.public_bytes(pem), False),
        "server.key": (pemKey(serverKey), True),
        "client.crt": (client.public_bytes(pem), False),
        "client.key": (pemKey(clientKey), True),
    }
    paths = {}
    for filename, (data, private) in files.items():
        path = directory / filename
        _write(path, data, private)
        paths[filename] = path
    return paths
