"""A port that cannot be bound stops the process at once, in every way it can be started.

Nothing is left listening, no pidfile stays behind, the exit status is not
zero and the message names the endpoint, whether or not a database is open,
metrics are served, or twistd runs in the foreground or as a daemon.
"""

import os
import socket
import subprocess
import time
from pathlib import Path

from twisted.trial import unittest

from tests.support import PYTHON, ROOT, freePort

TWISTD = str(Path(PYTHON).with_name("twistd"))


class BindFailureTests(unittest.TestCase):
    def setUp(self):
        self.busy = socket.socket()
        self.busy.bind(("127.0.0.1", 0))
        self.busy.listen()
        self.addCleanup(self.busy.close)
        self.port = self.busy.getsockname()[1]
        self.tmp = Path(self.mktemp()).resolve()
        self.tmp.mkdir()

    def run_(self, *argv):
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, cwd=self.tmp, stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        self.assertNotEqual(result.returncode, 0, result)
        self.assertNotIn("Traceback", result.stderr)
        return result

    def assertNoPidfileSoon(self, path):
        """The daemon removes its pidfile just after telling the starting process; give it a moment."""
        deadline = time.monotonic() + 10
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(path.exists())

    def assertNothingListensOn(self, port):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # would fail with EADDRINUSE if still held

    def test_foregroundWithAStoreAndMetrics(self):
        """python -m twisted: an open SQLite store and a metrics endpoint no longer keep the process alive."""
        metrics = freePort()
        result = self.run_(
            PYTHON, "-m", "twisted", "--log-format", "text", "sockproto-binary", "--db", str(self.tmp / "kv.db"),
            "--metrics", f"tcp:{metrics}", "--listen", f"tcp:{self.port}",
        )
        self.assertIn(f"cannot listen on tcp:{self.port}", result.stdout + result.stderr)
        self.assertNothingListensOn(metrics)

    def test_twistdInTheForegroundWithAConfig(self):
        """twistd -n sockproto --config with [binary] and [crud] on one database."""
        config = self.tmp / "sockproto.toml"
        config.write_text(
            f'[crud]\nlisten = ["tcp:0"]\ndb = "{self.tmp}/kv.db"\n'
            f'[binary]\nlisten = ["tcp:{self.port}"]\ndb = "{self.tmp}/kv.db"\n'
        )
        result = self.run_(TWISTD, "-n", "--pidfile", str(self.tmp / "twistd.pid"), "sockproto", "--config",
                           str(config))
        self.assertIn(f"cannot listen on tcp:{self.port}", result.stdout + result.stderr)
        self.assertFalse((self.tmp / "twistd.pid").exists())

    def test_daemon(self):
        """twistd without -n: the starting process reports the failure and exits; the pidfile is removed."""
        result = self.run_(
            TWISTD, "--pidfile", str(self.tmp / "twistd.pid"), "--logfile", str(self.tmp / "twistd.log"),
            "sockproto-echo", "--listen", f"tcp:{self.port}",
        )
        self.assertIn("cannot listen on", result.stderr)
        self.assertNoPidfileSoon(self.tmp / "twistd.pid")
        self.assertIn(f"cannot listen on tcp:{self.port}", (self.tmp / "twistd.log").read_text())

    def test_daemonWithAStore(self):
        """The same as a daemon with a database open."""
        result = self.run_(
            TWISTD, "--pidfile", str(self.tmp / "twistd.pid"), "--logfile", str(self.tmp / "twistd.log"),
            "sockproto-binary", "--db", str(self.tmp / "kv.db"), "--listen", f"tcp:{self.port}",
        )
        self.assertIn("cannot listen on", result.stderr)
        self.assertNoPidfileSoon(self.tmp / "twistd.pid")
