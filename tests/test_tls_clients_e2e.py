"""Every TLS endpoint as the clients people use reach it: offering ALPN, as browsers, curl and openssl do.

Twisted 25+ fails a handshake whose client offers ALPN protocols the server
does not speak (see ``privateapi.serveClientsOfferingALPN``); a client that
offers none, like ``sockproto connect``, never saw it.  The external clients
(``openssl``, ``curl``) are used where installed, and the test says so where not.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

from twisted.trial import unittest

from tests.support import ServiceProcess, makeCerts, recvExactly

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
SOCAT = shutil.which("socat")
BROWSER_PROTOCOLS = ["h2", "http/1.1"]


def twistedHasTlsServerEndpoint() -> bool:
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    return any(parser.prefix == "tls" for parser in getPlugins(IStreamServerEndpointStringParser))


def alpnClient(port: int, certs: Path, clientCerts: Path | None = None) -> ssl.SSLSocket:
    """A verifying TLS client that offers ALPN the way a browser does."""
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.set_alpn_protocols(BROWSER_PROTOCOLS)
    if clientCerts is not None:
        context.load_cert_chain(str(clientCerts / "client.crt"), str(clientCerts / "client.key"))
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")


class EchoOverEveryTLSEndpointTests(unittest.TestCase):
    def setUp(self) -> None:
        self.certs = makeCerts(Path(self.mktemp()))
        c = self.certs
        listen = [
            "--listen", f"ssl:0:privateKey={c}/server.key:certKey={c}/server.crt",
            "--listen", f"mtls:0:privateKey={c}/server.key:certKey={c}/server.crt:caCerts={c}/ca.crt",
        ]
        self.kinds = ["ssl", "mtls"]
        if twistedHasTlsServerEndpoint():
            pems = Path(self.mktemp()).resolve()
            pems.mkdir()
            (pems / "localhost.pem").write_bytes((c / "server.key").read_bytes() + (c / "server.crt").read_bytes())
            listen += ["--listen", f"tls:{pems}:port=0"]
            self.kinds.append("tls")
        self.echo = ServiceProcess("sockproto-echo", *listen)
        self.addCleanup(self.echo.stop)
        self.echo.start(len(self.kinds))

    def test_aClientOfferingALPNIsServed(self) -> None:
        """Python's ssl offering h2 and http/1.1 gets its echo on ssl:, mtls: and tls:, with no protocol chosen."""
        for index, kind in enumerate(self.kinds):
            clientCerts = self.certs if kind == "mtls" else None
            with alpnClient(self.echo.tcpPort(index), self.certs, clientCerts) as sock:
                sock.sendall(b"alpn")
                self.assertEqual(recvExactly(sock, 4), b"alpn", kind)
                self.assertIsNone(sock.selected_alpn_protocol(), kind)

    def test_opensslWithALPN(self) -> None:
        """openssl s_client -alpn h2,http/1.1 on every TLS endpoint: the handshake completes and the line comes back."""
        if OPENSSL is None:
            raise unittest.SkipTest("openssl is not installed")
        for index, kind in enumerate(self.kinds):
            extra = ("-cert", str(self.certs / "client.crt"), "-key", str(self.certs / "client.key")) \
                if kind == "mtls" else ()
            result = self._opensslUntilEcho(self.echo.tcpPort(index), extra)
            self.assertIn(b"hello over tls", result, kind)

    def _opensslUntilEcho(self, port: int, extra: tuple[str, ...]) -> bytes:
        # Read s_client's output until the echo, instead of guessing a delay.
        assert OPENSSL is not None
        process = subprocess.Popen(
            [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", "-CAfile",
             str(self.certs / "ca.crt"), "-verify_return_error", "-alpn", ",".join(BROWSER_PROTOCOLS), "-quiet",
             *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(b"hello over tls\n")
        process.stdin.flush()
        line = process.stdout.readline()
        process.kill()  # -quiet implies -ign_eof: s_client would wait for the server to close
        process.wait(30)
        return line

    def test_socatAtTheEndOfItsInput(self) -> None:
        """socat closes TLS as soon as its input ends, often with the request: the reply still comes back."""
        if SOCAT is None:
            raise unittest.SkipTest("socat is not installed")
        port = self.echo.tcpPort(self.kinds.index("ssl"))
        for _ in range(5):
            result = subprocess.run(
                [SOCAT, "-", f"OPENSSL:localhost:{port},cafile={self.certs / 'ca.crt'}"],
                input=b"hello over tls\n", capture_output=True, timeout=30,
            )
            self.assertEqual(result.stdout, b"hello over tls\n", result.stderr)

    def test_aHandshakeTheServerAbortsIsLogged(self) -> None:
        """mtls: without a client certificate: refused, and the server's log says why, once."""
        port = self.echo.tcpPort(self.kinds.index("mtls"))
        for _ in range(3):
            with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
                with alpnClient(port, self.certs) as sock:
                    sock.sendall(b"x")
                    if not sock.recv(10):
                        raise ConnectionError("closed")
        self.echo.waitForLog("aborted by this server: peer did not return a certificate")
        self.assertEqual(self.echo.log.count("aborted by this server"), 1, self.echo.log)


class WebChatOverHTTPSTests(unittest.TestCase):
    def test_curl(self) -> None:
        """curl over HTTPS (it offers h2 and http/1.1) gets the page over HTTP/1.1."""
        if CURL is None:
            raise unittest.SkipTest("curl is not installed")
        certs = makeCerts(Path(self.mktemp()))
        chat = ServiceProcess("sockproto-chat", "--listen", "tcp:0", "--history", ":memory:", "--web",
                              f"ssl:0:privateKey={certs}/server.key:certKey={certs}/server.crt")
        self.addCleanup(chat.stop)
        chat.start(2)
        url = f"https://localhost:{chat.port('chat-web', 'ssl')}/"
        result = subprocess.run(
            [CURL, "-sS", "--max-time", "20", "--cacert", str(certs / "ca.crt"), "-w", "\n%{http_version} %{http_code}",
             "--resolve", f"localhost:{chat.port('chat-web', 'ssl')}:127.0.0.1", url],
            capture_output=True, text=True, timeout=30,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("<!doctype html>", result.stdout)
        self.assertTrue(result.stdout.endswith("\n1.1 200"), result.stdout[-40:])
        # Untrusted by a client: its refusal is logged as the client's.
        refused = subprocess.run([CURL, "-sS", "--max-time", "20", url], capture_output=True, text=True, timeout=30)
        self.assertNotEqual(refused.returncode, 0)
        chat.waitForLog("refused by the client")
