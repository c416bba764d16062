# -*- test-case-name: tests.test_listen,tests.test_package -*-
"""The ``sockproto`` command: tools around the services."""

from __future__ import annotations

import getopt
import getpass
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.python import usage

from sockproto.cli.examples import ExampleConfigOptions, runExampleConfig
from sockproto.cli.run import EXIT_STATUSES, interrupted
from sockproto.privateapi import nameOptionsInErrors
from sockproto.server.options import showVersion


def out(text: str) -> None:
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("expected a number of seconds above 0") from None
    if not 0 < number < 86400:
        raise ValueError(f"{value} is not a number of seconds above 0")
    return number


_seconds.coerceDoc = "Seconds."  # type: ignore[attr-defined]


class GnuOptions(usage.Options):
    """Options that may also come after the arguments (``sockproto cert DIR --host x``)."""

    def __init__(self) -> None:
        super().__init__()
        nameOptionsInErrors(self)

    def opt_version(self) -> None:
        """Print the version of sockproto and Twisted, and exit."""
        showVersion("sockproto")

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        if options is None:
            options = sys.argv[1:]
        try:
            found, arguments = getopt.gnu_getopt(list(options), self.shortOpt, self.longOpt)
        except getopt.error as e:
            raise usage.UsageError(str(e)) from None
        reordered: list[str] = []
        for option, value in found:
            if option.startswith("--"):
                takesValue = option[2:] + "=" in self.longOpt
                reordered.append(f"{option}={value}" if takesValue else option)
            else:
                reordered.extend([option, value] if value else [option])
        super().parseOptions([*reordered, "--", *arguments] if arguments else reordered)


class PasswdOptions(GnuOptions):
    """``sockproto passwd FILE NAME``: add or change a chat user in a hashed password file."""

    synopsis = "FILE NAME"
    longdesc = (
        "Add a chat user, or change its password, in a scrypt-hashed password file "
        "(created owner-only if missing). The password is asked for on a terminal, "
        "or read as one line from standard input. Serve it with --auth hashed:FILE."
    )

    def parseArgs(self, path: str, name: str) -> None:  # type: ignore[override]  # usage.Options reads the argument count from the signature
        self["path"] = path
        self["name"] = name


def runPasswd(options: PasswdOptions) -> int:
    from sockproto.chat.passwords import PasswordFileError, setPassword
    from sockproto.chat.text import validNick

    name = options["name"]
    if not validNick(name):
        err(f"sockproto passwd: {name!r} cannot be a chat name (1-24 of A-Z a-z 0-9 _ -)")
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {name}: ")
        if password != getpass.getpass("Again: "):
            err("sockproto passwd: the passwords differ")
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        err("sockproto passwd: empty password refused")
        return 1
    try:
        setPassword(options["path"], name, password)
    except (OSError, PasswordFileError) as e:
        err(f"sockproto passwd: {e}")
        return 1
    out(f"sockproto passwd: {name} saved in {options['path']}")
    return 0


class CertOptions(GnuOptions):
    """``sockproto cert DIR``: development CA, server and client certificates."""

    synopsis = "DIR [--host NAME ...]"
    longdesc = (
        "Make a development CA, a server certificate for the given host names and IP addresses "
        "(subjectAltNames; default localhost and 127.0.0.1) and a client certificate, as PEM files in DIR: "
        "ca.crt, ca.key, server.crt, server.key, client.crt, client.key. Private keys are owner-only. "
        "Use them with --listen ssl:PORT:privateKey=DIR/server.key:certKey=DIR/server.crt, or "
        "mtls:PORT:...:caCerts=DIR/ca.crt to require client certificates."
    )
    optParameters = [
        ["client-name", None, "client", "Common name of the client certificate (the chat nickname over mtls:)."],
        ["days", None, 365, "Days the certificates are valid.", int],
    ]
    optFlags = [["force", "f", "Replace certificates and keys already in DIR (they are kept otherwise)."]]

    def __init__(self) -> None:
        super().__init__()
        self["hosts"] = []

    def opt_host(self, name: str) -> None:
        """A host name or IP address for the server certificate. Repeatable."""
        self["hosts"].append(name)

    def parseArgs(self, directory: str) -> None:  # type: ignore[override]  # usage.Options reads the argument count from the signature
        self["directory"] = directory

    def postOptions(self) -> None:
        if not self["hosts"]:
            self["hosts"] = ["localhost", "127.0.0.1"]
        if self["days"] < 1:
            raise usage.UsageError("--days must be at least 1")


def runCert(options: CertOptions) -> int:
    from sockproto.server.tls import DEVELOPMENT_FILES, makeDevelopmentCertificates

    existing = [name for name in DEVELOPMENT_FILES if (Path(options["directory"]) / name).exists()]
    if existing and not options["force"]:
        err(
            f"sockproto cert: {options['directory']} already has {', '.join(existing)}; "
            "nothing was changed (--force replaces them, and whatever they signed stops being trusted)"
        )
        return 1
    try:
        paths = makeDevelopmentCertificates(options["directory"], options["hosts"], options["client-name"],
                                            options["days"])
    except (OSError, ValueError) as e:
        err(f"sockproto cert: {e}")
        return 1
    out(f"sockproto cert: wrote {', '.join(str(p) for p in paths.values())}")
    return 0


class ClientOptions(GnuOptions):
    """TLS and timeout options of the client tools."""

    optParameters: list[list[Any]] = [
        ["ca", None, None, "CA certificate file the server's certificate must chain to (default: the system's)."],
        ["cert", None, None, "Client certificate to present (mutual TLS)."],
        ["key", None, None, "Private key of --cert (default: in the --cert file)."],
        ["timeout", "t", 10.0, "Seconds to wait for the connection (and the TLS handshake).", _seconds],
    ]
    optFlags = [["insecure", "k", "Do not verify the server's certificate or name (testing only)."]]


class ConnectOptions(ClientOptions):
    """``sockproto connect ENDPOINT``: an interactive client like nc, with TLS verified."""

    synopsis = "ENDPOINT [options]"
    longdesc = (
        "An interactive client like nc: standard input goes to the server, the server's bytes to standard output. "
        "ENDPOINT is a Twisted client endpoint string: tcp:HOST:PORT, unix:PATH, tls:HOST:PORT. "
        "The end of standard input half-closes the connection. " + EXIT_STATUSES
    )
    optFlags: list[list[Any]] = [["keepalive", None, "Turn on TCP keep-alive."]]
    optParameters: list[list[Any]] = [
        ["linger", None, 2.0, "Over TLS, which cannot half-close: seconds of quiet from the server after the end of "
         "standard input before closing.", _seconds],
    ]

    def parseArgs(self, endpoint: str) -> None:  # type: ignore[override]  # usage.Options reads the argument count from the signature
        self["endpoint"] = endpoint


class ProbeOptions(ClientOptions):
    """``sockproto probe ENDPOINT...``: reachability, timings, addresses and certificates."""

    synopsis = "ENDPOINT [ENDPOINT ...] [options]"
    longdesc = (
        "For each target: reachable or not, time to connect and to finish the TLS handshake, local and remote "
        "addresses, and for TLS the certificate's subject, issuer, names and expiry. "
        "Exit status 3 if any target is unreachable. " + EXIT_STATUSES
    )
    optFlags = [["json", "j", "Machine-readable output."]]

    def parseArgs(self, *targets: str) -> None:
        if not targets:
            raise usage.UsageError("at least one ENDPOINT is needed")
        self["endpoints"] = list(targets)


class ScanOptions(GnuOptions):
    """``sockproto scan HOST``: which TCP ports accept connections."""

    synopsis = "HOST [--ports 1-1024] [options]"
    longdesc = (
        "Which TCP ports of HOST accept connections, with a bounded number of attempts in flight. " + EXIT_STATUSES
    )
    optParameters = [
        ["ports", "p", "1-1024", "Ports: ranges and lists, e.g. 1-1024,8080."],
        ["concurrency", "c", 100, "Connection attempts in flight at once.", int],
        ["timeout", "t", 1.0, "Seconds to wait for each port.", _seconds],
    ]
    optFlags = [["json", "j", "Machine-readable output."]]

    def parseArgs(self, host: str) -> None:  # type: ignore[override]  # usage.Options reads the argument count from the signature
        self["host"] = host

    def postOptions(self) -> None:
        from sockproto.cli.net import parsePorts

        try:
            self["ports"] = parsePorts(self["ports"])
        except ValueError as e:
            raise usage.UsageError(f"bad --ports: {e}") from None
        if not 1 <= self["concurrency"] <= 10000:
            raise usage.UsageError("--concurrency must be from 1 to 10000")


def _runTool(name: str) -> Any:
    def run(options: Any) -> int:
        from sockproto.cli import net

        return getattr(net, name)(options)

    return run


KV_COMMANDS = {"create": 2, "read": 1, "update": 2, "delete": 1, "list": (0, 1), "stats": 0, "ping": 0}


class KvOptions(GnuOptions):
    """``sockproto kv ENDPOINT COMMAND``: the SPB/1 client for the shell."""

    synopsis = "ENDPOINT create KEY [VALUE] | read KEY | update KEY [VALUE] | delete KEY | list [PREFIX] | stats | ping"
    longdesc = (
        "Talk SPB/1 to sockproto-binary. ENDPOINT is a Twisted client endpoint string "
        "(tcp:localhost:9000, unix:/path/kv.sock). Without VALUE, create and update read it from standard input. "
        + EXIT_STATUSES
    )
    optParameters = [["timeout", "t", 10.0, "Seconds to wait for the connection and the reply.", float]]

    def parseArgs(self, endpoint: str, command: str, *args: str) -> None:  # type: ignore[override]  # usage.Options reads the argument count from the signature
        if endpoint in KV_COMMANDS and command not in KV_COMMANDS:
            raise usage.UsageError(
                f"the ENDPOINT comes first: sockproto kv tcp:localhost:9000 {' '.join((endpoint, command, *args))}"
            )
        wanted = KV_COMMANDS.get(command)
        if wanted is None:
            raise usage.UsageError(f"unknown kv command {command!r} (commands: {', '.join(KV_COMMANDS)})")
        counts = wanted if isinstance(wanted, tuple) else (wanted,)
        if command in ("create", "update"):
            counts = (1, 2)
        if len(args) not in counts:
            raise usage.UsageError(f"wrong number of arguments for {command}")
        self["endpoint"], self["command"], self["args"] = endpoint, command, args


def runKv(options: KvOptions) -> int:
    from sockproto.cli.kv import run

    return run(options)


class Options(usage.Options):
    """The ``sockproto`` command: its subcommands."""

    synopsis = "sockproto COMMAND [options]"

    def getSynopsis(self) -> str:
        # A command's usage begins with this: "sockproto kv ENDPOINT ...", not "sockproto COMMAND [options] kv ...".
        return "sockproto" if self.subCommand else super().getSynopsis()

    def opt_version(self) -> None:
        """Print the version of sockproto and Twisted, and exit."""
        showVersion("sockproto")

    subCommands = [
        ["passwd", None, PasswdOptions, "Add or change a chat user in a hashed password file."],
        ["kv", None, KvOptions, "Create, read, update, delete and list keys of sockproto-binary."],
        ["cert", None, CertOptions, "Make a development CA, server and client certificates."],
        ["connect", None, ConnectOptions, "Interactive client, like nc, with TLS verified."],
        ["probe", None, ProbeOptions, "Reachability, timings, addresses and certificates of endpoints."],
        ["scan", None, ScanOptions, "Concurrent TCP port scanner."],
        ["example-config", None, ExampleConfigOptions, "Print an example config file (sockproto.toml)."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a command is needed")


RUNNERS = {
    "passwd": runPasswd,
    "kv": runKv,
    "cert": runCert,
    "connect": _runTool("runConnect"),
    "probe": _runTool("runProbe"),
    "scan": _runTool("runScan"),
    "example-config": runExampleConfig,
}


def main(argv: Sequence[str] | None = None) -> int:
    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        # The error alone, last: above the usage it would scroll away.
        command = f"sockproto {options.subCommand}" if options.subCommand else "sockproto"
        err(f"{command}: {e}\n({command} --help lists the options)")
        return 2
    except BrokenPipeError:  # --help into a pager or head that stopped reading
        return 0
    try:
        return RUNNERS[str(options.subCommand)](options.subOptions)
    except KeyboardInterrupt:
        return interrupted()


if __name__ == "__main__":
    sys.exit(main())
