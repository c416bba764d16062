"""What a pip install has: the example configs as package data, ``sockproto example-config``, help without the checkout.

``make package-check`` (tests/package_check.py) builds the sdist and the wheel
and tries them in a fresh venv; these tests need no build.
"""

import io
import os
import sys
from pathlib import Path

from twisted.trial import unittest

from sockproto.cli.examples import exampleNames, exampleText
from sockproto.cli.main import main
from sockproto.suite import service as suite

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


class ExampleConfigTests(unittest.TestCase):
    def run_(self, *argv):
        """``sockproto ARGV``: (status, standard output, standard error)."""
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        status = main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def test_thePackageShipsTheRepositorysExamples(self):
        """Every file of examples/ is package data, with the same text (in an sdist they are copies)."""
        names = sorted(path.stem for path in EXAMPLES.glob("*.toml"))
        self.assertIn("sockproto", names)
        self.assertEqual(exampleNames(), names)
        for name in names:
            self.assertEqual(exampleText(name), (EXAMPLES / f"{name}.toml").read_text(), name)

    def test_printsTheExampleThatExplainsEveryKey(self):
        status, out, err = self.run_("example-config")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, (EXAMPLES / "sockproto.toml").read_text())

    def test_printsTheNamedExample(self):
        status, out, err = self.run_("example-config", "local")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, (EXAMPLES / "local.toml").read_text())

    def test_anUnknownNameIsAUsageErrorListingTheNames(self):
        status, out, err = self.run_("example-config", "sockproto.toml")
        self.assertEqual((status, out), (2, ""))
        self.assertIn("example-config: no example config named 'sockproto.toml' (there are: local, sockproto)\n", err)

    def test_helpListsTheExamples(self):
        from sockproto.cli.examples import ExampleConfigOptions

        help = str(ExampleConfigOptions())
        self.assertIn("sockproto example-config > sockproto.toml", " ".join(help.split()))
        for name in exampleNames():
            self.assertIn(f"{name} (", help)

    def test_aReaderThatStopsEarlyIsNoError(self):
        """``sockproto example-config | head``: no traceback, status 0, and nothing more written at exit."""
        readEnd, writeEnd = os.pipe()
        os.close(readEnd)
        stdout = open(writeEnd, "w")  # closed by the cleanup
        self.addCleanup(stdout.close)
        self.patch(sys, "stdout", stdout)
        self.assertEqual(main(["example-config"]), 0)
        stdout.write("more")
        stdout.flush()  # would raise BrokenPipeError if the pipe were still there


class HelpTests(unittest.TestCase):
    """The help of the sockproto plugin works for a pip install: no examples/ folder, no make."""

    def assertHelpsAPipUser(self, text):
        text = " ".join(text.split())
        self.assertIn("sockproto example-config", text)
        self.assertNotIn("examples/", text)
        self.assertNotIn("make run", text)
        for port in ("echo 8124", "chat 5000", "joke 6789", "binary 9000", "crud 9001", "8000"):
            self.assertIn(port, text)

    def test_thePluginsDescription(self):
        from twisted.plugins.sockproto_plugins import sockprotoSuite

        self.assertHelpsAPipUser(sockprotoSuite.description)

    def test_theSuitesHelp(self):
        self.assertHelpsAPipUser(str(suite.Options()))


class PreReleaseTests(unittest.TestCase):
    def test_onlyAPreReleaseNewerThanEveryRelease(self):
        """make test-prerelease runs on 27.1.0rc1 beside 26.10.0, and on nothing when the newest is a release."""
        from tests.twisted_prerelease import newerPreRelease

        self.assertEqual(newerPreRelease(["26.10.0", "27.1.0rc1", "26.10.0rc2", "24.7.0"]), "27.1.0rc1")
        self.assertIsNone(newerPreRelease(["26.10.0", "26.10.0rc2", "26.4.0"]))
        self.assertIsNone(newerPreRelease(["26.10.0"]))
        self.assertEqual(newerPreRelease(["27.1.0rc2", "not a version", "27.1.0rc10"]), "27.1.0rc10")


class NewsFragmentTests(unittest.TestCase):
    """changelog.d/: the news of what is not released yet, as towncrier reads it."""

    def test_everyFragmentIsOfAKnownType(self):
        import re

        news = Path(__file__).resolve().parent.parent / "changelog.d"
        fragments = [p.name for p in news.iterdir() if p.name != ".gitignore"]
        self.assertTrue(fragments)
        for name in fragments:
            self.assertRegex(name, re.compile(r"^(\d+|\+[\w-]+)\.(feature|bugfix|misc)\.rst$"), name)

    def test_towncrierBuildsThem(self):
        import shutil
        import subprocess

        towncrier = shutil.which("towncrier", path=str(Path(sys.executable).parent))
        if towncrier is None:
            raise unittest.SkipTest("towncrier is a dev extra (make install has it); this venv has not")
        root = Path(__file__).resolve().parent.parent
        draft = subprocess.run([towncrier, "build", "--draft", "--version", "0.0.0"], cwd=root,
                               capture_output=True, text=True, timeout=120)
        self.assertEqual(draft.returncode, 0, draft.stderr)
        for heading in ("Features", "Fixes", "Changes"):
            self.assertIn(heading, draft.stdout)
