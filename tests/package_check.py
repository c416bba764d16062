"""``make package-check``: the sdist and the wheel work where the checkout is not.

Builds both with ``python -m build`` (the wheel from the sdist, as pip does),
checks that the sdist holds the whole project (so an unpacked sdist runs its
own tests) and that neither ships a ``dropin.cache``, installs the wheel into a
fresh venv in a temporary folder and, from a folder outside the checkout:
finds every plugin, runs sockproto-echo and echoes a line, fetches the web
chat's page, and checks that what ``sockproto example-config`` prints passes
the ``sockproto`` plugin's own config check.

Run with the checkout's venv (it has ``build``): ``.venv/bin/python
tests/package_check.py``.  pip's cache makes a second run fast.  Any failure
ends it with ``package-check: FAILED:`` and what went wrong, status 1.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
import zipfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "twisted" / "plugins" / "sockproto_plugins.py"

#: What issue 24 found missing from the sdist: checked even where git cannot list the checkout's files.
MUST_SHIP = (
    "LICENSE",
    "README.rst",
    "CHANGELOG.rst",
    "Makefile",
    "setup.cfg",
    "pyproject.toml",
    "MANIFEST.in",
    "docs/operations.rst",
    "examples/sockproto.toml",
    "examples/local.toml",
    "tests/__init__.py",
    "tests/support.py",
    "tests/redisserver.py",
    "tests/wsclient.py",
    "twisted/plugins/sockproto_plugins.py",
)
#: Files of the repository that are not part of the project's source.
NOT_SHIPPED = frozenset({".gitignore"})
_GENERATED = re.compile(r"(^|/)(dropin\.cache|__pycache__)(/|$)|\.py[cod]$")
_LISTENING = re.compile(r"(\S+) listening on tcp:127\.0\.0\.1:(\d+)")


class CheckFailed(Exception):
    """What went wrong, for the one line (and the output) printed before exiting 1."""


def say(text: str) -> None:
    print(f"package-check: {text}", flush=True)


def run(
    argv: Sequence[str | Path], *, cwd: Path, env: dict[str, str] | None = None, input: str | None = None,
    timeout: float = 120.0,
) -> str:
    """Run a command to its end; its standard output, or CheckFailed with everything it said."""
    command = " ".join(str(arg) for arg in argv)
    try:
        result = subprocess.run(
            [str(arg) for arg in argv], cwd=cwd, env=env, input=input, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{command} took more than {timeout:.0f} s") from None
    if result.returncode != 0:
        raise CheckFailed(f"{command} (in {cwd}) exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result.stdout


def expectedPlugins() -> dict[str, list[str]]:
    """The plugins twisted/plugins/sockproto_plugins.py declares: tap names, auth types, endpoint prefixes."""
    found: dict[str, list[str]] = {"services": [], "auth": [], "endpoints": []}
    for node in ast.walk(ast.parse(PLUGINS.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ServiceMaker":
            tapname = node.args[3]
            assert isinstance(tapname, ast.Constant)
            found["services"].append(str(tapname.value))
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in ("authType", "prefix"):
                    found["auth" if target.id == "authType" else "endpoints"].append(str(node.value.value))
    if "sockproto-echo" not in found["services"] or not found["auth"] or not found["endpoints"]:
        raise CheckFailed(f"cannot read the plugins of {PLUGINS}: {found}")
    return {kind: sorted(names) for kind, names in found.items()}


def gitFiles(*options: str) -> list[str] | None:
    """``git ls-files OPTIONS`` of the checkout; None outside a git checkout (e.g. in an unpacked sdist)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        return None
    listed = run(["git", "ls-files", "-z", *options], cwd=ROOT).split("\0")
    return sorted(name for name in listed if name)


def repositoryFiles() -> list[str]:
    """The files git tracks, but for those that are not the project's source."""
    return [name for name in gitFiles() or [] if name not in NOT_SHIPPED]


def sourceTree(temporary: Path) -> Path:
    """
    A copy of the checkout's source (its files, tracked or not, but for what git ignores) to build from.

    setuptools adds whatever an old ``sockproto.egg-info/SOURCES.txt`` lists to a
    new sdist, so a build in the checkout could pass here and still ship an
    incomplete sdist from a clean clone.
    """
    names = gitFiles("--cached", "--others", "--exclude-standard")
    if names is None:
        return ROOT
    tree = temporary / "source"
    for name in names:
        source, target = ROOT / name, tree / name
        if os.path.lexists(source):  # not a deletion that is not committed yet
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    # What every used checkout has (make install writes the plugin cache): none of it may be shipped.
    (tree / "twisted" / "plugins" / "dropin.cache").write_bytes(b"stale")
    (tree / "sockproto" / "__pycache__").mkdir(exist_ok=True)
    (tree / "sockproto" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"stale")
    return tree


def checkSdist(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        members = {member.name.split("/", 1)[1]: member for member in archive.getmembers() if "/" in member.name}
        missing = sorted(set(MUST_SHIP).union(repositoryFiles()) - set(members))
        if missing:
            raise CheckFailed(f"the sdist {sdist.name} lacks {', '.join(missing)} (MANIFEST.in)")
        generated = sorted(name for name in members if _GENERATED.search(name))
        if generated:
            raise CheckFailed(f"the sdist {sdist.name} ships generated files: {', '.join(generated)}")
        # examples/ and the package's copies (links in the checkout) must be files, the same files.
        for name in sorted(members):
            if name.startswith("examples/") and name.endswith(".toml"):
                copy = f"sockproto/suite/examples/{name.removeprefix('examples/')}"
                if copy not in members or not (members[name].isfile() and members[copy].isfile()):
                    raise CheckFailed(f"the sdist's {name} and {copy} are not both files")
                original, packaged = (archive.extractfile(members[n]) for n in (name, copy))
                assert original is not None and packaged is not None
                if original.read() != packaged.read():
                    raise CheckFailed(f"the sdist's {copy} differs from its {name}")


def checkWheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    wanted = {
        "twisted/plugins/sockproto_plugins.py",
        "sockproto/py.typed",
        "sockproto/chat/static/index.html",
        *(f"sockproto/suite/examples/{path.name}" for path in (ROOT / "examples").glob("*.toml")),
    }
    missing = sorted(wanted - names)
    if missing:
        raise CheckFailed(f"the wheel {wheel.name} lacks {', '.join(missing)} (setup.cfg package_data)")
    if not any(name.endswith(".dist-info/licenses/LICENSE") for name in names):
        raise CheckFailed(f"the wheel {wheel.name} has no LICENSE (setup.cfg license_files)")
    generated = sorted(name for name in names if _GENERATED.search(name))
    if generated:
        raise CheckFailed(f"the wheel {wheel.name} ships generated files: {', '.join(generated)}")


_FIND_PLUGINS = """
import json, sockproto
from twisted.application.service import IServiceMaker
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import getPlugins
def ours(plugin):
    return type(plugin).__module__ == "twisted.plugins.sockproto_plugins"
print(json.dumps({
    "sockproto": sockproto.__file__,
    "services": sorted(p.tapname for p in getPlugins(IServiceMaker) if p.tapname.startswith("sockproto")),
    "auth": sorted(p.authType for p in getPlugins(ICheckerFactory) if ours(p)),
    "endpoints": sorted(p.prefix for p in getPlugins(IStreamServerEndpointStringParser) if ours(p)),
}))
"""

_CHECK_CONFIG = """
import json, sys
from sockproto.suite.service import Options
options = Options()
options.parseOptions(["--config", sys.argv[1]])
print(json.dumps(sorted(entry.name for entry in options["loaded"].services)))
"""


class Installed:
    """The wheel in a fresh venv, used from a folder outside the checkout."""

    def __init__(self, venv: Path, work: Path) -> None:
        self.bin = venv / "bin"
        self.python = self.bin / "python"
        self.work = work
        self.env = {key: value for key, value in os.environ.items()
                    if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH")}
        self.env["PATH"] = f"{self.bin}{os.pathsep}{self.env.get('PATH', '')}"

    def run(self, *argv: str | Path, cwd: Path | None = None, input: str | None = None) -> str:
        return run(argv, cwd=cwd or self.work, env=self.env, input=input, timeout=60)

    def checkPlugins(self, venv: Path) -> None:
        found = json.loads(self.run(self.python, "-c", _FIND_PLUGINS))
        where = Path(found.pop("sockproto")).resolve()
        if not where.is_relative_to(venv.resolve()):
            raise CheckFailed(f"the venv imports sockproto from {where}, not from the wheel")
        expected = expectedPlugins()
        if found != expected:
            raise CheckFailed(f"the installed wheel finds the plugins {found}; twisted/plugins declares {expected}")
        usage = self.run(self.bin / "twistd", "--help")
        absent = [name for name in expected["services"] if not re.search(rf"^\s+{re.escape(name)}\s", usage, re.M)]
        if absent:
            raise CheckFailed(f"twistd --help does not list {', '.join(absent)}:\n{usage}")

    def start(self, plugin: str, *args: str, endpoints: int = 1) -> tuple[subprocess.Popen[str], dict[str, int]]:
        """Start a plugin with ``python -m twisted``; the port of each service once all are listening."""
        process = subprocess.Popen(
            [str(self.python), "-m", "twisted", "--log-format", "text", plugin, *args],
            cwd=self.work, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        ports: dict[str, int] = {}
        ready = threading.Event()

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                match = _LISTENING.search(line)
                if match:
                    ports[match.group(1)] = int(match.group(2))
                    if len(ports) == endpoints:
                        ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(30) or len(ports) < endpoints:
            process.kill()
            process.wait()
            raise CheckFailed(f"{plugin} did not log {endpoints} 'listening on' line(s) in 30 s:\n{''.join(lines)}")
        return process, ports

    def stop(self, process: subprocess.Popen[str], plugin: str) -> None:
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise CheckFailed(f"{plugin} did not stop within 15 s of SIGTERM") from None
        if status not in (0, -signal.SIGTERM):  # twist ends by the signal it was stopped with
            raise CheckFailed(f"{plugin} exited {status} on SIGTERM")

    def checkEcho(self) -> None:
        process, ports = self.start("sockproto-echo", "--listen", "tcp:0:interface=127.0.0.1")
        try:
            line = b"hello from the wheel\n"
            with socket.create_connection(("127.0.0.1", ports["echo"]), timeout=10) as sock:
                sock.sendall(line)
                sock.shutdown(socket.SHUT_WR)
                received = b""
                while chunk := sock.recv(4096):
                    received += chunk
            if received != line:
                raise CheckFailed(f"sockproto-echo answered {received!r} to {line!r}")
        finally:
            if process.poll() is None:
                self.stop(process, "sockproto-echo")

    def checkWebChat(self) -> None:
        """The page is package data: served from the wheel."""
        process, ports = self.start(
            "sockproto-chat", "--listen", "tcp:0:interface=127.0.0.1", "--web", "tcp:0:interface=127.0.0.1",
            "--history", ":memory:", endpoints=2,
        )
        try:
            with socket.create_connection(("127.0.0.1", ports["chat-web"]), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                received = b""
                while chunk := sock.recv(65536):
                    received += chunk
            status = received.split(b"\r\n", 1)[0]
            if b" 200 " not in status or b"<html" not in received.lower():
                raise CheckFailed(f"the web chat's page: {status!r}, {len(received)} bytes")
        finally:
            if process.poll() is None:
                self.stop(process, "sockproto-chat")

    def checkExampleConfigs(self, certs: Path) -> None:
        """What ``sockproto example-config`` prints is the repository's file, and the plugin's config check takes it."""
        for example in sorted((ROOT / "examples").glob("*.toml")):
            name = example.stem
            text = self.run("sockproto", "example-config", *([] if name == "sockproto" else [name]))
            if text != example.read_text():
                raise CheckFailed(f"sockproto example-config {name} does not print examples/{example.name}")
            folder = self.work / name
            folder.mkdir()
            # Where the example expects its files (relative ones, or the /etc and /var of a deployment), they are here.
            for prefix in ("/etc/sockproto/", "/run/sockproto/", "/var/lib/sockproto/"):
                text = text.replace(prefix, f"{certs}/")
            shutil.copytree(certs, folder / "certs")
            (folder / "var").mkdir(mode=0o700)
            (folder / example.name).write_text(text)
            loaded = json.loads(self.run(self.python, "-c", _CHECK_CONFIG, example.name, cwd=folder))
            tables = sorted(key for key, value in tomllib.loads(text).items() if isinstance(value, dict))
            if loaded != tables:
                raise CheckFailed(f"the config check of example-config {name} loaded {loaded}, not {tables}")


def check(temporary: Path) -> None:
    dist, venv, work = temporary / "dist", temporary / "venv", temporary / "work"
    work.mkdir()
    say(f"building the sdist and the wheel into {dist}")
    run([sys.executable, "-m", "build", "--outdir", dist, sourceTree(temporary)], cwd=work, timeout=300)
    built = sorted(dist.iterdir())
    sdists, wheels = [p for p in built if p.name.endswith(".tar.gz")], [p for p in built if p.suffix == ".whl"]
    if len(sdists) != 1 or len(wheels) != 1:
        raise CheckFailed(f"python -m build made {[p.name for p in built]}, not one sdist and one wheel")
    sdist, wheel = sdists[0], wheels[0]
    checkSdist(sdist)
    checkWheel(wheel)
    say(f"installing {wheel.name} into a fresh venv")
    run([sys.executable, "-m", "venv", venv], cwd=work)
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel], cwd=work,
        timeout=300)
    installed = Installed(venv, work)
    say(f"trying it from {work}: plugins, sockproto-echo, the web chat, example-config")
    installed.checkPlugins(venv)
    installed.checkEcho()
    installed.checkWebChat()
    certs = work / "certs"
    installed.run("sockproto", "cert", certs)
    (certs / "jokes.toml").write_text('[[jokes]]\nsetup = "Tank"\npunchline = "You are welcome!"\n')
    installed.run("sockproto", "passwd", certs / "chat.passwd", "alice", input="a password\n")
    installed.checkExampleConfigs(certs)


def main() -> int:
    started = time.monotonic()
    temporary = Path(tempfile.mkdtemp(prefix="sockproto-package-check-")).resolve()
    if temporary.is_relative_to(ROOT):
        print(f"package-check: FAILED: the temporary folder {temporary} is inside the checkout", file=sys.stderr)
        return 1
    try:
        check(temporary)
    except CheckFailed as e:
        print(f"package-check: FAILED: {e}\n(kept for a look: {temporary})", file=sys.stderr)
        return 1
    shutil.rmtree(temporary)
    say(f"OK in {time.monotonic() - started:.0f} s: the sdist is whole, the wheel works outside the checkout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
