"""TLS: 'sockproto cert', the mtls: endpoint (mutual TLS) and the chat identity from a certificate."""

import os
import socket
import ssl
import stat
import subprocess
from pathlib import Path

from twisted.internet import endpoints
from twisted.internet.testing import MemoryReactor
from twisted.trial import unittest

from tests.support import PYTHON, ROOT, LineClient, ServiceProcess, recvExactly, tlsClient


def makeCerts(directory, *extra):
    directory = Path(directory).resolve()  # the command runs from the checkout, trial from its temp folder
    subprocess.run([PYTHON, "-m", "sockproto.cli", "cert", str(directory), *extra], check=True, capture_output=True,
                   cwd=ROOT, timeout=60)
    return directory


def mtls(certs, port="0"):
    return f"mtls:{port}:privateKey={certs}/server.key:certKey={certs}/server.crt:caCerts={certs}/ca.crt"


class CertCommandTests(unittest.TestCase):
    def test_filesAndModes(self):
        """'sockproto cert' makes owner-only keys and certificates with the asked names."""
        certs = makeCerts(Path(self.mktemp()), "--host", "example.test", "--host", "::1", "--client-name", "alice")
        for name in ("ca.key", "server.key", "client.key"):
            self.assertEqual(stat.S_IMODE(os.stat(certs / name).st_mode), 0o600, name)
        from cryptography import x509

        server = x509.load_pem_x509_certificate((certs / "server.crt").read_bytes())
        names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["example.test"])
        self.assertEqual([str(a) for a in names.get_values_for_type(x509.IPAddress)], ["::1"])
        client = x509.load_pem_x509_certificate((certs / "client.crt").read_bytes())
        self.assertEqual(client.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value, "alice")

    def test_anExistingCAIsKeptUnlessForced(self):
        """A second 'sockproto cert' on the same folder changes nothing and says why; --force replaces."""
        certs = makeCerts(Path(self.mktemp()))
        before = (certs / "ca.key").read_bytes()
        again = subprocess.run([PYTHON, "-m", "sockproto.cli", "cert", str(certs)], capture_output=True, cwd=ROOT,
                               timeout=60)
        self.assertEqual(again.returncode, 1)
        self.assertIn(b"already has ca.crt, ca.key", again.stderr)
        self.assertEqual((certs / "ca.key").read_bytes(), before)
        makeCerts(certs, "--force")
        self.assertNotEqual((certs / "ca.key").read_bytes(), before)

    def test_mtlsIsAnEndpointForAnyTwistedProgram(self):
        certs = makeCerts(Path(self.mktemp()))
        endpoint = endpoints.serverFromString(MemoryReactor(), mtls(certs, "4433"))
        self.assertIsInstance(endpoint, endpoints.SSL4ServerEndpoint)
        with self.assertRaises(ValueError):
            endpoints.serverFromString(MemoryReactor(), f"mtls:4433:privateKey={certs}/server.key")


class MutualTLSEndToEndTests(unittest.TestCase):
    def setUp(self):
        self.certs = makeCerts(Path(self.mktemp()))

    def test_probeSaysTheServerDemandsAClientCertificate(self):
        """probe without --cert on an mtls: port is not a success: it says a client certificate is demanded."""
        service = ServiceProcess("sockproto-echo", "--listen", mtls(self.certs))
        self.addCleanup(service.stop)
        service.start()
        target = f"tls:localhost:{service.tcpPort()}"
        result = subprocess.run([PYTHON, "-m", "sockproto.cli", "probe", target, "--ca", str(self.certs / "ca.crt")],
                                capture_output=True, text=True, cwd=ROOT, timeout=60)
        self.assertEqual(result.returncode, 3, result)
        self.assertIn("the server demands a client certificate", result.stdout)
        withCertificate = subprocess.run(
            [PYTHON, "-m", "sockproto.cli", "probe", target, "--ca", str(self.certs / "ca.crt"),
             "--cert", str(self.certs / "client.crt"), "--key", str(self.certs / "client.key")],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )
        self.assertEqual(withCertificate.returncode, 0, withCertificate)

    def test_echoOverMutualTLS(self):
        service = ServiceProcess("sockproto-echo", "--listen", mtls(self.certs), "--listen", "tcp:0")
        self.addCleanup(service.stop)
        service.start(endpoints=2)
        port = service.tcpPort(0)
        with tlsClient(port, self.certs, clientCerts=self.certs) as sock:
            sock.sendall(b"secret stuff")
            self.assertEqual(recvExactly(sock, 12), b"secret stuff")
        # No client certificate: refused.
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            with tlsClient(port, self.certs) as sock:
                sock.sendall(b"x")
                if not sock.recv(10):
                    raise ConnectionError("closed")
        # A certificate from another CA: refused.
        strangers = makeCerts(Path(self.mktemp()))
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            context = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
            context.load_cert_chain(str(strangers / "client.crt"), str(strangers / "client.key"))
            with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                     server_hostname="localhost") as sock:
                sock.sendall(b"x")
                if not sock.recv(10):
                    raise ConnectionError("closed")
        # Plain text on the TLS port: refused, and the plain port still works.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"hello\n" * 100)
            self.assertIn(sock.recv(100)[:1], (b"", b"\x15"))  # closed, or a TLS alert
        with socket.create_connection(("127.0.0.1", service.tcpPort(1)), timeout=10) as sock:
            sock.sendall(b"ok")
            self.assertEqual(recvExactly(sock, 2), b"ok")

    def test_chatNicknameFromTheCertificate(self):
        certs = makeCerts(Path(self.mktemp()), "--client-name", "alice")
        service = ServiceProcess("sockproto-chat", "--history", ":memory:", "--listen", mtls(certs),
                                 "--listen", "tcp:0")
        self.addCleanup(service.stop)
        service.start(endpoints=2)
        alice = LineClient(tlsClient(service.tcpPort(0), certs, clientCerts=certs))
        self.addCleanup(alice.close)
        self.assertIn("Welcome to sockproto chat, alice!", alice.line())
        guest = LineClient.tcp(service.tcpPort(1))
        self.addCleanup(guest.close)
        guest.until("Welcome")
        guest.send("/nick alice\n/nick ALICE\n")
        self.assertIn("!!! nickname alice is taken", guest.until("!!!")[-1])
        alice.send("/nick mallory\n")
        self.assertIn("cannot change", alice.until("!!!")[-1])
        alice.send("signed message\n")
        self.assertTrue(guest.until("signed message")[-1].endswith("<alice> signed message"))


def twistedHasTlsServerEndpoint():
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    return any(parser.prefix == "tls" for parser in getPlugins(IStreamServerEndpointStringParser))


class TLSDirectoryEndpointTests(unittest.TestCase):
    def test_echoOverTwistedsTlsEndpoint(self):
        if not twistedHasTlsServerEndpoint():
            raise unittest.SkipTest("this Twisted has no tls: server endpoint (it came in Twisted 26.4)")
        certs = makeCerts(Path(self.mktemp()))
        pems = Path(self.mktemp()).resolve()
        pems.mkdir()
        # tls: serves a directory of PEM files, one per host name (SNI), each key then certificate.
        (pems / "localhost.pem").write_bytes((certs / "server.key").read_bytes() + (certs / "server.crt").read_bytes())
        service = ServiceProcess("sockproto-echo", "--listen", f"tls:{pems}:port=0")
        self.addCleanup(service.stop)
        service.start()
        self.assertTrue(service.addresses[0].startswith("tls:[::ffff:127.0.0.1]:"), service.addresses)
        with tlsClient(service.tcpPort(), certs) as sock:
            sock.sendall(b"sni")
            self.assertEqual(recvExactly(sock, 3), b"sni")
