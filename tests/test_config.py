"""The config file, SIGHUP reloading and the metrics collector, without sockets."""

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from twisted.application import service
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from sockproto import echo
from sockproto.binary.codec import Op, encodeKey, frame
from sockproto.chat import passwords
from sockproto.joke import service as joke
from sockproto.server.lifecycle import ReloadOnHangup, operate
from sockproto.server.metrics import SockprotoCollector
from sockproto.suite import service as suite
from sockproto.suite.config import ConfigError, loadConfig
from tests.support import makeCerts

PEER = IPv4Address("TCP", "127.0.0.1", 4000)
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sockproto.toml"


class ConfigCase(unittest.TestCase):
    def write(self, text):
        path = Path(self.mktemp() + ".toml")
        path.write_text(text)
        return str(path)

    def assertConfigError(self, text, *fragments):
        path = self.write(text)
        with self.assertRaises(ConfigError) as caught:
            loadConfig(path)
        message = str(caught.exception)
        self.assertTrue(message.startswith(path + ": ") or path in message, message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message


class LoadTests(ConfigCase):
    def test_tablesBecomeOptionsAsOnTheCommandLine(self):
        config = loadConfig(
            self.write(
                'shutdown-timeout = 3\nmetrics = "tcp:9100"\n'
                '[echo]\nlisten = ["tcp:0", "unix:/tmp/x.sock"]\nmode = "line"\nmax-connections = 7\n'
                'idle-timeout = 1.5\nudp-rate = 20\nudp-allow-low-ports = true\n'
                '[chat]\nlisten = "tcp:0"\nhistory = ":memory:"\nno-keepalive = true\nmax-clients = 9\n'
                'web-host = ["chat.example.org", "chat.example.net"]\n'
                '[joke]\nrandom-seed = 4\n'
            )
        )
        self.assertEqual([s.name for s in config.services], ["echo", "chat", "joke"])
        echoOptions, chatOptions, jokeOptions = (s.options for s in config.services)
        cli = echo.Options()
        cli.parseOptions(["--listen", "tcp:0", "--listen", "unix:/tmp/x.sock", "--mode", "line",
                          "--max-connections", "7", "--idle-timeout", "1.5", "--udp-rate", "20",
                          "--udp-allow-low-ports"])
        for key in ("listen", "mode", "max-connections", "idle-timeout", "max-line-length", "udp-rate",
                    "udp-allow-low-ports"):
            self.assertEqual(echoOptions[key], cli[key], key)
        self.assertEqual(chatOptions["listen"], ["tcp:0"])
        self.assertTrue(chatOptions["no-keepalive"])
        self.assertEqual(chatOptions["max-connections"], 9)
        self.assertEqual(chatOptions["web-host"], ["chat.example.org", "chat.example.net"])
        self.assertEqual(jokeOptions["listen"], ["tcp:6789:interface=127.0.0.1"], "the default")
        self.assertEqual((config.metrics, config.shutdownTimeout), ("tcp:9100", 3.0))

    def test_theShippedExampleLoads(self):
        # The example names files that exist only where it is deployed: check it where they do.
        text = EXAMPLE.read_text()
        certs = makeCerts(Path(self.mktemp()))
        text = text.replace("/etc/sockproto/", f"{certs}/").replace("/run/sockproto/", f"{certs}/")
        text = text.replace("/var/lib/sockproto/", f"{certs}/")
        (certs / "jokes.toml").write_text('[[jokes]]\nsetup = "Tank"\npunchline = "You are welcome!"\n')
        passwords.setPassword(certs / "chat.passwd", "alice", "secret")
        config = loadConfig(self.write(text))
        self.assertEqual(
            sorted(s.name for s in config.services), ["binary", "chat", "crud", "echo", "joke", "proxy"]
        )

    def test_theExampleDocumentsEveryKey(self):
        from sockproto.suite.config import SERVICES, optionKinds

        text = EXAMPLE.read_text()
        import importlib

        for table, moduleName in SERVICES.items():
            self.assertIn(f"[{table}]", text)
            section = text.split(f"[{table}]", 1)[1].split("\n[", 1)[0]
            for key in optionKinds(importlib.import_module(moduleName).Options()):
                self.assertIn(f"{key} =", section, f"[{table}] {key} is not in the example")

    def test_suiteAppliesProcessSettingsUnlessATableSetsThem(self):
        path = self.write('shutdown-timeout = 2\n[echo]\nlisten = ["tcp:0"]\n[joke]\nlisten = ["tcp:0"]\n'
                          'shutdown-timeout = 5\n')
        options = suite.Options()
        options.parseOptions(["--config", path])
        timeouts = [s.options["shutdown-timeout"] for s in options["loaded"].services]
        self.assertEqual(timeouts, [2.0, 5.0])
        options = suite.Options()
        options.parseOptions(["--config", path, "--shutdown-timeout", "1", "--metrics", "unix:/tmp/m.sock"])
        self.assertEqual([s.options["shutdown-timeout"] for s in options["loaded"].services], [1.0, 5.0])
        self.assertEqual(options["loaded"].metrics, "unix:/tmp/m.sock")


class ErrorTests(ConfigCase):
    def test_unknownTableAndKey(self):
        self.assertConfigError('[eccho]\nlisten = ["tcp:0"]\n', "unknown table 'eccho'", "did you mean 'echo'")
        self.assertConfigError('[echo]\nlisen = ["tcp:0"]\n', "[echo] lisen: unknown key", "'listen'")
        self.assertConfigError('[echo]\nzzz = 1\n', "[echo] zzz: unknown key; known keys:", "max-connections")
        self.assertConfigError('verbose = true\n[echo]\n', "unknown key 'verbose'")
        self.assertConfigError('[echo]\nhelp = true\n', "[echo] help: unknown key")
        self.assertConfigError('[echo]\nmetrics = "tcp:0"\n', "[echo] metrics:", "before the first table")

    def test_wrongTypes(self):
        """A config value of the wrong TOML type is an error naming the table, the key and what was expected."""
        cases = [
            ('[echo]\nlisten = 8124\n', "[echo] listen: expected a string or a list of strings, not a number"),
            ('[echo]\nlisten = [8124]\n', "[echo] listen: expected a string or a list of strings"),
            ('[echo]\nmax-connections = "lots"\n', "[echo] max-connections: expected a number, not a string"),
            ('[echo]\nmax-connections = true\n', "[echo] max-connections: expected a single value, not a boolean"),
            ('[echo]\nmax-connections = [1]\n', "[echo] max-connections: expected a single value, not a list"),
            ('[echo]\nmax-connections = 0\n', "[echo] max-connections: 0 is not a positive whole number"),
            ('[echo]\nidle-timeout = -1\n', "[echo] idle-timeout:", "0 or more"),
            ('[echo]\nmode = "sideways"\n', "[echo] mode: 'sideways': choose one of raw, line, upper"),
            ('[chat]\nhistory = 5\n', "[chat] history: expected a string, not a number"),
            ('[chat]\nno-keepalive = "yes"\n', "[chat] no-keepalive: expected true or false, not a string"),
            ('echo = 5\n', "echo must be a table ([echo]), not a number"),
            ('shutdown-timeout = "soon"\n[echo]\n', "shutdown-timeout: expected a number of seconds"),
            ('metrics = 9100\n[echo]\n', "metrics: expected an endpoint string, not a number"),
            ('[binary]\nfsync = "sometimes"\n', "[binary] fsync: 'sometimes': choose normal or always"),
        ]
        for text, *fragments in cases:
            self.assertConfigError(text, *fragments)

    def test_badEndpointsAndFiles(self):
        self.assertConfigError(
            '[echo]\nlisten = ["tcp:99999"]\n', "[echo] listen: 'tcp:99999': port 99999 is out of range"
        )
        self.assertConfigError('[echo]\nlisten = ["tcpp:1"]\n', "[echo] listen: 'tcpp:1'")
        self.assertConfigError('[joke]\nlisten = ["udp:0"]\n', "[joke] listen:", "UDP")
        missing = self.mktemp()
        self.assertConfigError(
            f'[echo]\nlisten = ["ssl:0:privateKey={missing}.key:certKey={missing}.crt"]\n',
            "[echo] listen:", "No such file",
        )
        self.assertConfigError('metrics = "nope:1"\n[echo]\n', "metrics: 'nope:1'")
        self.assertConfigError(f'[chat]\nauth = ["hashed:{missing}"]\n', "[chat] auth:", "no password file")
        self.assertConfigError(f'[joke]\njokes = ["{missing}.toml"]\n', "[joke]", "cannot read")
        self.assertConfigError('[proxy]\nlisten = ["tcp:0"]\n', "[proxy]", "--connect ENDPOINT is required")
        self.assertConfigError('[proxy]\nlisten = ["tcp:0"]\nconnect = "tcp:127.0.0.1:1"\nlinger = -1\n',
                               "[proxy] linger", "0 or more")

    def test_chatClusterSecretFile(self):
        secret = Path(self.mktemp())
        secret.write_bytes(b"0123456789abcdef0123456789abcdef\n")
        config = loadConfig(self.write(
            f'[chat]\ncluster = "redis://127.0.0.1:1"\ncluster-secret-file = "{secret}"\n'
        ))
        self.assertEqual(config.services[0].options["cluster-secret-file"], str(secret))
        secret.write_bytes(b"short")
        message = self.assertConfigError(
            f'[chat]\ncluster = "redis://127.0.0.1:1"\ncluster-secret-file = "{secret}"\n',
            "[chat] cluster-secret-file:", "a secret needs at least 16",
        )
        self.assertNotIn("short", message.replace("shortest", ""))

    def test_twoServicesOnOneEndpoint(self):
        self.assertConfigError(
            '[echo]\nlisten = ["tcp:7000"]\n[chat]\nlisten = ["tcp:7000:interface=127.0.0.1"]\n',
            "[chat] listen: 'tcp:7000:interface=127.0.0.1' is the same endpoint as 'tcp:7000' of [echo] listen",
        )
        self.assertConfigError(
            '[echo]\nlisten = ["tcp:7000"]\n[chat]\nlisten = ["tcp:7000:interface=0.0.0.0"]\n',
            "same endpoint",
        )
        self.assertConfigError('[echo]\nlisten = ["unix:/tmp/s", "unix:/tmp/../tmp/s"]\n', "same endpoint")
        self.assertConfigError('metrics = "tcp:9000"\n[binary]\n', "metrics: 'tcp:9000' is the same endpoint")
        # Not clashes: other interfaces, other ports, UDP beside TCP, ephemeral ports.
        loadConfig(self.write(
            '[echo]\nlisten = ["tcp:7000", "udp:7000", "tcp:0"]\n'
            '[chat]\nlisten = ["tcp:7000:interface=127.0.0.2", "tcp:0"]\n'
        ))

    def test_everyEndpointKeyIsComparedWithEveryOther(self):
        """The chat's web endpoints against other services' listen, each other and metrics."""
        self.assertConfigError(
            '[echo]\nlisten = ["tcp:7000"]\n[chat]\nlisten = ["tcp:0"]\nweb = ["tcp:7000"]\n',
            "[chat] web: 'tcp:7000' is the same endpoint as 'tcp:7000' of [echo] listen",
        )
        self.assertConfigError(
            '[chat]\nlisten = ["tcp:7001"]\nweb = ["tcp:7001:interface=0.0.0.0"]\n',
            "[chat] web: 'tcp:7001:interface=0.0.0.0' is the same endpoint as 'tcp:7001' of [chat] listen",
        )
        self.assertConfigError('metrics = "tcp:7002"\n[chat]\nlisten = ["tcp:0"]\nweb = ["tcp:7002"]\n',
                               "same endpoint")

    def test_theLocalExampleLoadsAsWritten(self):
        """examples/local.toml on its own ports (make local): no two services on one endpoint."""
        import os

        tmp = Path(self.mktemp()).resolve()
        tmp.mkdir()
        makeCerts(tmp / "certs")
        (tmp / "var").mkdir(mode=0o700)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(tmp)  # its paths are relative to where make local runs
        config = loadConfig(str(EXAMPLE.parent / "local.toml"))
        self.assertEqual(
            sorted(s.name for s in config.services), ["binary", "chat", "crud", "echo", "joke", "proxy"]
        )

    def test_sharedDatabaseMustAgreeOnFsync(self):
        db = self.mktemp()
        self.assertConfigError(
            f'[binary]\ndb = "{db}"\n[crud]\ndb = "{db}"\nfsync = "always"\n',
            "[crud] fsync: 'always' differs from fsync 'normal' of [binary]",
        )

    def test_fileProblems(self):
        """Broken TOML, a file without services and a missing file are clear errors."""
        self.assertConfigError("[echo\n", "not valid TOML")
        self.assertConfigError("# nothing\n", "no service to run")
        with self.assertRaises(ConfigError) as caught:
            loadConfig(self.mktemp())
        self.assertIn("cannot read config file", str(caught.exception))


class ReloadTests(unittest.TestCase):
    def test_jokeBookReloadKeepsConnectionsAndSurvivesBadEdits(self):
        book = Path(self.mktemp() + ".toml")
        book.write_text('[[jokes]]\nsetup = "Boo"\npunchline = "Don\'t cry!"\n')
        options = joke.Options()
        options.parseOptions(["--jokes", str(book)])
        root = joke.buildService(options, MemoryReactorClock())
        factory = root.factory
        proto = factory.buildProtocol(PEER)
        proto.makeConnection(StringTransport(peerAddress=PEER))
        reloader = ReloadOnHangup(root, None)
        book.write_text('[[jokes]]\nsetup = "Lettuce"\npunchline = "Let us in!"\n')
        self.assertEqual(reloader.reloadAll(), [f"joke: 1 joke from {book}"])
        self.assertEqual(factory.picker.pick("x").setup, "Lettuce")
        self.assertFalse(proto.transport.disconnecting)
        book.write_text("[[jokes]]\nsetup = 5\n")
        from twisted.logger import capturedLogs

        with capturedLogs() as events:
            self.assertEqual(reloader.reloadAll(), [])
        said = [event["log_format"] for event in events]
        self.assertIn("{service} could not reload, keeping what it had: {reason}", said)
        self.assertNotIn("SIGHUP: nothing to reload", said, "a failed reload is not 'nothing to reload'")
        self.assertEqual(factory.picker.pick("y").setup, "Lettuce", "the bad book is not taken")
        self.flushLoggedErrors()

    def test_chatPasswordFileReload(self):
        from sockproto.chat import service as chatService

        path = Path(self.mktemp())
        passwords.setPassword(path, "alice", "pw")
        options = chatService.Options()
        options.parseOptions(["--auth", f"hashed:{path}", "--history", ":memory:"])
        root = chatService.buildService(options, MemoryReactorClock())
        passwords.setPassword(path, "bob", "pw")
        self.assertEqual(ReloadOnHangup(root, None).reloadAll(), [f"chat: password file {path}: 2 users"])

    def test_nothingToReload(self):
        options = echo.Options()
        options.parseOptions([])
        self.assertEqual(ReloadOnHangup(echo.buildService(options, MemoryReactorClock()), None).reloadAll(), [])


    def test_aStormOfHangupsIsOneReloadASecond(self):
        """100 SIGHUPs at once: one reload now, one more for the 99 others a second later; one log line each."""
        from twisted.logger import globalLogPublisher

        from sockproto.server.lifecycle import RELOAD_SETTLE

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = MemoryReactorClock()
        options = echo.Options()
        options.parseOptions([])
        reloader = ReloadOnHangup(echo.buildService(options, clock), clock)
        reloads = []
        reloadAll = reloader.reloadAll
        reloader.reloadAll = lambda signals=1: reloads.append(signals) or reloadAll(signals)

        def lines():
            found = [e for e in events if "reload" in e.get("log_format", "")]
            events.clear()
            return found

        for _ in range(100):
            reloader.hangup()
        self.assertEqual(reloads, [1])
        self.assertEqual([e["log_format"] for e in lines()], ["SIGHUP: nothing to reload"])
        clock.advance(RELOAD_SETTLE / 2)
        reloader.hangup()  # just after a reload: gathered too
        clock.advance(RELOAD_SETTLE / 2)
        self.assertEqual(reloads, [1, 100])
        self.assertEqual([e["signals"] for e in lines()], [100])
        clock.advance(RELOAD_SETTLE)
        self.assertEqual(reloads, [1, 100], "nothing came since: no reload")
        reloader.hangup()
        self.assertEqual(reloads, [1, 100, 1], "once the storm is over, a SIGHUP reloads at once")
        reloader.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])


class CollectorTests(unittest.TestCase):
    def test_countersBecomeMetrics(self):
        from sockproto.binary import service as binaryService

        clock = MemoryReactorClock()
        options = binaryService.Options()
        options.parseOptions(["--db", ":memory:"])
        root = service.MultiService()
        built = binaryService.buildService(options, clock)
        built.setServiceParent(root)
        factory = [s for s in built][-1].factory
        proto = factory.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        proto.makeConnection(transport)
        request = frame(Op.CREATE, 1, encodeKey(b"k") + b"v") + frame(Op.READ, 2, encodeKey(b"nope"))
        proto.dataReceived(request)
        clock.advance(0)
        clock.advance(0)
        registry = CollectorRegistry()
        registry.register(SockprotoCollector(root, clock))
        text = generate_latest(registry).decode()
        expected = [
            'sockproto_connections_open{service="binary",transport="tcp"} 1.0',
            f'sockproto_received_bytes_total{{service="binary",transport="tcp"}} {float(len(request))}',
            f'sockproto_sent_bytes_total{{service="binary",transport="tcp"}} {float(len(transport.value()))}',
            'sockproto_binary_operations_total{op="create",service="binary"} 1.0',
            'sockproto_binary_request_duration_seconds_count{op="read",service="binary"} 1.0',
            'sockproto_errors_total{kind="not_found",service="binary"} 1.0',
            'sockproto_store_keys{service="binary"} 1.0',
            'sockproto_store_refusing_writes{service="binary"} 0.0',
        ]
        for line in expected:
            self.assertIn(line, text)

    def test_operateAddsMetricsFirstAndReloadLast(self):
        options = echo.Options()
        options.parseOptions([])
        top = operate(echo.buildService(options, MemoryReactorClock()), MemoryReactorClock(), "tcp:0")
        self.assertEqual([child.name for child in top], ["metrics", "echo", "reload"])

