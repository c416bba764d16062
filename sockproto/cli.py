"""The ``sockproto`` command: tools around the services."""

from __future__ import annotations

import getopt
import getpass
import sys
from collections.abc import Sequence

from twisted.python import usage


def out(text: str) -> None:
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    sys.stderr.write(text + "\n")


class GnuOptions(usage.Options):
    """Options that may also come after the arguments (``sockproto cert DIR --host x``)."""

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
    synopsis = "FILE NAME"
    longdesc = (
        "Add a chat user, or change its password, in a scrypt-hashed password file "
        "(created owner-only if missing). The password is asked for on a terminal, "
        "or read as one line from standard input. Serve it with --auth hashed:FILE."
    )

    def parseArgs(self, path: str, name: str) -> None:
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

    def __init__(self) -> None:
        super().__init__()
        self["hosts"] = []

    def opt_host(self, name: str) -> None:
        """A host name or IP address for the server certificate. Repeatable."""
        self["hosts"].append(name)

    def parseArgs(self, directory: str) -> None:
        self["directory"] = directory

    def postOptions(self) -> None:
        if not self["hosts"]:
            self["hosts"] = ["localhost", "127.0.0.1"]
        if self["days"] < 1:
            raise usage.UsageError("--days must be at least 1")


def runCert(options: CertOptions) -> int:
    from sockproto.tls import makeDevelopmentCertificates

    try:
        paths = makeDevelopmentCertificates(options["directory"], options["hosts"], options["client-name"],
                                            options["days"])
    except (OSError, ValueError) as e:
        err(f"sockproto cert: {e}")
        return 1
    out(f"sockproto cert: wrote {', '.join(str(p) for p in paths.values())}")
    return 0


KV_COMMANDS = {"create": 2, "read": 1, "update": 2, "delete": 1, "list": (0, 1), "stats": 0, "ping": 0}


class KvOptions(GnuOptions):
    synopsis = "ENDPOINT create KEY [VALUE] | read KEY | update KEY [VALUE] | delete KEY | list [PREFIX] | stats | ping"
    longdesc = (
        "Talk SPB/1 to sockproto-binary. ENDPOINT is a Twisted client endpoint string "
        "(tcp:localhost:9000, unix:/path/kv.sock). Without VALUE, create and update read it from standard input. "
        "Exit status: 0 success, 1 not found or already exists, 2 usage, 3 connection failure or server error."
    )
    optParameters = [["timeout", "t", 10.0, "Seconds to wait for the connection and the reply.", float]]

    def parseArgs(self, endpoint: str, command: str, *args: str) -> None:
        wanted = KV_COMMANDS.get(command)
        if wanted is None:
            raise usage.UsageError(f"unknown kv command {command!r}")
        counts = wanted if isinstance(wanted, tuple) else (wanted,)
        if command in ("create", "update"):
            counts = (1, 2)
        if len(args) not in counts:
            raise usage.UsageError(f"wrong number of arguments for {command}")
        self["endpoint"], self["command"], self["args"] = endpoint, command, args


def runKv(options: KvOptions) -> int:
    from sockproto.binary.kvcli import run

    return run(options)


class Options(usage.Options):
    synopsis = "sockproto COMMAND [options]"
    subCommands = [
        ["passwd", None, PasswdOptions, "Add or change a chat user in a hashed password file."],
        ["kv", None, KvOptions, "Create, read, update, delete and list keys of sockproto-binary."],
        ["cert", None, CertOptions, "Make a development CA, server and client certificates."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a command is needed")


RUNNERS = {"passwd": runPasswd, "kv": runKv, "cert": runCert}


def main(argv: Sequence[str] | None = None) -> int:
    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        err(f"{options}\nsockproto: {e}")
        return 2
    return RUNNERS[options.subCommand](options.subOptions)


if __name__ == "__main__":
    sys.exit(main())
