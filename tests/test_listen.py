"""The machinery every service shares: --listen strings, options, the listening service."""

import os
import stat
import tempfile

from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogLevel, capturedLogs
from twisted.python import usage
from twisted.trial import unittest

from sockproto import echo
from sockproto.privateapi import leanDispatch
from sockproto.server.endpointstrings import DEFAULT_BACKLOG, checkEndpoint, parseUDP, withSafeDefaults
from sockproto.server.listen import DescriptorLimitReport, ListenError


def parse(*argv):
    options = echo.Options()
    options.parseOptions(list(argv))
    return options


class EndpointStringTests(unittest.TestCase):
    def test_defaultsAdded(self):
        self.assertEqual(withSafeDefaults("tcp:80"), f"tcp:80:interface=127.0.0.1:backlog={DEFAULT_BACKLOG}")
        self.assertEqual(
            withSafeDefaults("tls:/d:port=1"), rf"tls:/d:port=1:interface=\:\:ffff\:127.0.0.1:backlog={DEFAULT_BACKLOG}"
        )
        self.assertEqual(withSafeDefaults("unix:/x.sock"), f"unix:/x.sock:backlog={DEFAULT_BACKLOG}:mode=600")

    def test_userSettingsKept(self):
        self.assertEqual(withSafeDefaults("tcp:80:backlog=5:interface=0.0.0.0"), "tcp:80:backlog=5:interface=0.0.0.0")
        self.assertEqual(withSafeDefaults("unix:/x:mode=660:backlog=7"), "unix:/x:mode=660:backlog=7")

    def test_otherTypesUntouched(self):
        self.assertEqual(withSafeDefaults("systemd:domain=INET:index=0"), "systemd:domain=INET:index=0")

    def test_systemdWithoutSocketsSaysSo(self):
        with self.assertRaises(usage.UsageError) as caught:
            checkEndpoint("systemd:domain=INET:index=0")
        self.assertIn("LISTEN_FDS", str(caught.exception))

    def test_badStringsAreUsageErrorsNamingTheString(self):
        bad_strings = ["tcp:notaport", "nosuchtype:1", "tcp:80:bogus=1", "", "unix:", "tcp:70000", "tls:/nonexistent"]
        for bad in [*bad_strings, "ssl:443:privateKey=/no/such.pem"]:
            with self.assertRaises(usage.UsageError) as caught:
                checkEndpoint(bad)
            self.assertIn(repr(bad), str(caught.exception))

    def test_udpOnlyWhereAllowed(self):
        self.assertRaises(usage.UsageError, checkEndpoint, "udp:5000")
        self.assertEqual(checkEndpoint("udp:5000", allowUDP=True), "udp:5000")
        self.assertEqual(parseUDP("udp:5000"), (5000, "127.0.0.1"))
        self.assertEqual(parseUDP(r"udp:port=7:interface=\:\:1"), (7, "::1"))
        for bad in ["udp:", "udp:x", "udp:70000", "udp:1:2", "udp:1:foo=2"]:
            self.assertRaises(usage.UsageError, checkEndpoint, bad, allowUDP=True)


class OptionsTests(unittest.TestCase):
    def test_defaultIsLoopbackOnTheServicePort(self):
        self.assertEqual(parse()["listen"], ["tcp:8124:interface=127.0.0.1"])

    def test_everyServiceHasAPortOfItsOwn(self):
        """No two services default to one port: the proxy's README example runs beside make run."""
        from sockproto import proxy
        from sockproto.binary import crud
        from sockproto.binary import service as binary
        from sockproto.chat import service as chat
        from sockproto.joke import service as joke

        ports = [module.Options.defaultPort for module in (echo, chat, joke, binary, crud, proxy)]
        ports.append(8000)  # the web chat of make run (sockproto/suite/service.py)
        self.assertEqual(len(ports), len(set(ports)), ports)

    def test_listenRepeatable(self):
        options = parse("--listen", "tcp:0", "-l", "unix:/tmp/x.sock")
        self.assertEqual(options["listen"], ["tcp:0", "unix:/tmp/x.sock"])

    def test_badValues(self):
        """Each bad option value is a usage error."""
        for argv in [
            ["--max-connections", "0"],
            ["--max-connections", "many"],
            ["--idle-timeout", "-1"],
            ["--idle-timeout", "nan"],
            ["--idle-timeout", "soon"],
            ["--mode", "shout"],
            ["--max-line-length", "0"],
            ["--listen", "tcp:x"],
        ]:
            self.assertRaises(usage.UsageError, parse, *argv)

    def test_helpMentionsDefaults(self):
        text = str(echo.Options())
        self.assertIn("tcp:8124:interface=127.0.0.1", text)
        self.assertIn("[default: 300]", text)


class UDPMemoryReactor(MemoryReactor):
    """MemoryReactor with listenUDP recorded too."""

    def __init__(self):
        super().__init__()
        self.udpServers = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import _FakePort

        self.udpServers.append((port, protocol, interface))
        return _FakePort(IPv4Address("UDP", interface, port))


class FailingReactor(MemoryReactor):
    """Binds the first TCP port and fails the second."""

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if self.tcpServers:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return MemoryReactor.listenTCP(self, port, factory, backlog, interface)


class ListeningServiceTests(unittest.TestCase):
    def makeService(self, reactor, *listen):
        options = parse(*[a for d in listen for a in ("--listen", d)])
        return echo.buildService(options, reactor)

    def test_listensEverywhereWithSafeDefaults(self):
        reactor = UDPMemoryReactor()
        path = os.path.join(tempfile.mkdtemp(), "e.sock")
        service = self.makeService(reactor, "tcp:0:interface=127.0.0.1", f"unix:{path}", "tcp:9:backlog=3", "udp:0")
        with capturedLogs() as events:
            service.privilegedStartService()
            service.startService()
        self.assertEqual([s[2] for s in reactor.tcpServers], [DEFAULT_BACKLOG, 3])
        self.assertEqual([s[3] for s in reactor.tcpServers], ["127.0.0.1", "127.0.0.1"])
        self.assertEqual(reactor.unixServers[0][3], 0o600)
        self.assertEqual(len(reactor.udpServers), 1)
        listening = [e for e in events if e.get("log_format") == "{service} listening on {address}"]
        self.assertEqual(len(listening), 4)
        self.assertEqual(listening[1]["address"], f"unix:{path}")
        self.assertRegex(listening[0]["address"], r"^tcp:[0-9.]+:[0-9]+$")

    def test_allOrNothing(self):
        reactor = FailingReactor()
        service = self.makeService(reactor, "tcp:1234", "tcp:1235")
        with capturedLogs() as events:
            with self.assertRaises(ListenError) as caught:
                service.privilegedStartService()
        self.assertIn("tcp:1235", str(caught.exception))
        self.assertIn("Address already in use", str(caught.exception))
        self.assertEqual(service.ports, [])
        self.assertIn(LogLevel.error, [e["log_level"] for e in events], events)

    def test_stopServiceStopsListening(self):
        reactor = MemoryReactor()
        service = self.makeService(reactor, "tcp:1234")
        service.startService()
        self.assertEqual(len(service.ports), 1)
        self.successResultOf(service.stopService())
        self.assertEqual(service.ports, [])


class RealUNIXModeTests(unittest.TestCase):
    def test_unixSocketIsOwnerOnly(self):
        from twisted.internet import reactor

        path = os.path.join(tempfile.mkdtemp(), "e.sock")
        service = echo.buildService(parse("--listen", f"unix:{path}"), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_leanDispatchOnlyForEpoll(self):
        self.assertFalse(leanDispatch(MemoryReactor()))


class VersionTests(unittest.TestCase):
    def test_everyPluginAndTheCommandSayTheirVersion(self):
        """--version prints sockproto's and Twisted's versions and exits 0, for each plugin and the command."""
        import io
        import sys

        import twisted
        from sockproto import __version__
        from sockproto.cli.main import Options as CommandOptions
        from sockproto.echo import Options as EchoOptions
        from sockproto.suite.service import Options as SuiteOptions

        for options, program in ((EchoOptions(), "sockproto-echo"), (SuiteOptions(), "sockproto"),
                                 (CommandOptions(), "sockproto")):
            out = io.StringIO()
            self.patch(sys, "stdout", out)
            with self.assertRaises(SystemExit) as exited:
                options.parseOptions(["--version"])
            self.assertEqual(exited.exception.code, 0)
            self.assertEqual(out.getvalue(), f"{program} {__version__} (Twisted {twisted.__version__})\n")


class ErrorMessageTests(unittest.TestCase):
    """A bad option is one line naming the option, the value and what is expected, never Python's insides."""

    def assertUsageError(self, optionsClass, argv, expected):
        from twisted.python import usage

        with self.assertRaises(usage.UsageError) as caught:
            optionsClass().parseOptions(argv)
        self.assertEqual(str(caught.exception), expected)

    def test_endpointsAndNumbers(self):
        from sockproto.echo import Options as EchoOptions
        from sockproto.proxy import Options as ProxyOptions

        missing = self.mktemp()
        cases = [
            (EchoOptions, ["--listen", "tcp:"],
             "bad --listen 'tcp:': the port must be a number from 0 to 65535 (e.g. tcp:8124), not ''"),
            (EchoOptions, ["--max-connections", "0"], "bad --max-connections '0': 0 is not a positive whole number"),
            (EchoOptions, ["--max-connections", "many"],
             "bad --max-connections 'many': expected a positive whole number"),
            (EchoOptions, ["--metrics", "bogus"], "bad --metrics 'bogus': Unknown endpoint type: 'bogus'"),
            (EchoOptions, ["--listen", f"unix:{missing}/x.sock"],
             f"bad --listen 'unix:{missing}/x.sock': the folder {os.path.abspath(missing)} does not exist"),
            (ProxyOptions, ["--connect", "tcp:localhost"],
             "bad --connect 'tcp:localhost': missing port; expected tcp:HOST:PORT (client) or tcp:PORT (server)"),
            (ProxyOptions, ["--connect", "tls:localhost:1", "--ca", __file__],
             f"bad --connect 'tls:localhost:1': --ca {__file__}: not a PEM file (expected a CA certificate)"),
            (ProxyOptions, ["--connect", "tls:localhost:1", "--linger", "-1"],
             "bad --linger '-1': -1 is not a number of seconds, 0 or more"),
        ]
        for optionsClass, argv, expected in cases:
            self.assertUsageError(optionsClass, argv, expected)

    def test_chatLogins(self):
        from sockproto.chat.service import Options as ChatOptions

        missing = self.mktemp()
        self.assertUsageError(ChatOptions, ["--auth", f"hashed:{missing}"],
                              f"bad --auth 'hashed:{missing}': no password file {missing!r}")
        self.assertUsageError(ChatOptions, ["--auth", f"file:{missing}"],
                              f"bad --auth 'file:{missing}': no such file {missing!r}")
        self.assertUsageError(ChatOptions, ["--auth", "nosuch:x"],
                              "bad --auth 'nosuch:x': Auth plugin not recognized: nosuch")


class DescriptorLimitReportTests(unittest.TestCase):
    def test_oneSummaryLineASecond(self):
        """Thousands of clients refused at the descriptor limit: counted, and one log line a second."""
        from collections import Counter

        from twisted.internet.task import Clock

        clock, errors = Clock(), Counter()
        report = DescriptorLimitReport(clock, "echo", b"busy\n", errors)
        with capturedLogs() as events:
            for _ in range(1000):
                report.refused(2)
            report.couldNotAccept("EMFILE")
            self.assertEqual(events, [], "said once the second is over")
            clock.advance(1)
            report.refused(1)
            clock.advance(0.5)
            report.couldNotAccept("ENFILE")
            report.couldNotAccept("ENFILE")
            clock.advance(0.5)
            clock.advance(5)
        self.assertEqual([(e["refused"], e["failed"]) for e in events],
                         [(2000, "; accept failed 1 EMFILE, those clients wait"),
                          (1, "; accept failed 2 ENFILE, those clients wait")])
        self.assertEqual(events[0]["log_level"], LogLevel.warn)
        self.assertEqual(errors["refused_descriptor_limit"], 2001)
        report.refused(1)
        report.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class WorkerSettingsTests(unittest.TestCase):
    def test_whatTheParentSaysIsParsedOnce(self):
        """The environment a worker gets round-trips, and is parsed once however many ask."""
        from sockproto.server import workers

        settings = workers.WorkerSettings(2, {"echo": [[7, 2, "stream"]]}, "/tmp/w-2.sock", 9)
        self.assertEqual(workers.WorkerSettings.decode(settings.encode()), settings)
        self.addCleanup(workers.workerSettings.cache_clear)
        self.addCleanup(os.environ.pop, workers.ENVIRONMENT, None)
        workers.workerSettings.cache_clear()
        os.environ[workers.ENVIRONMENT] = settings.encode()
        first = workers.workerSettings()
        os.environ[workers.ENVIRONMENT] = "not JSON: not read again"
        self.assertIs(workers.workerSettings(), first)
        self.assertEqual(first, settings)


class IPv6InterfaceTests(unittest.TestCase):
    def test_unescapedColonsGetTheStringToWrite(self):
        with self.assertRaises(usage.UsageError) as caught:
            checkEndpoint("tcp:8000:interface=::")
        self.assertIn(r"interface=\:\:", str(caught.exception))
