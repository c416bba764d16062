"""The web chat in a real headless Chromium (Debian's chromium and chromium-driver), driven by selenium.

Over HTTPS, as people reach it: Chromium offers ALPN (h2, http/1.1), which
is what once made every TLS port refuse browsers.  It trusts the test's
server key by its SPKI hash, as a pinned certificate.

Skipped, saying why, where Chromium or its driver is missing (``.ci/run``
installs them).  ``SOCKPROTO_SCREENSHOT=FILE`` saves the screenshot there
(``make screenshot`` refreshes docs/images/web-chat.png); else it goes to the
test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from twisted.trial import unittest

from tests.support import LineClient, ServiceProcess, makeCerts

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - a test extra
    webdriver = None

XSS = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'


class BrowserChatTests(unittest.TestCase):
    if webdriver is None or not CHROMIUM or not DRIVER:
        skip = "the browser test needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"

    def setUp(self) -> None:
        self.certs = makeCerts(Path(self.mktemp()))
        self.chat = ServiceProcess(
            "sockproto-chat", "--listen", "tcp:0", "--web", self.https("0"), "--history", ":memory:",
            "--flood-rate", "0",
        )
        self.addCleanup(self.chat.stop)
        self.chat.start(2)
        self.url = f"https://localhost:{self.chat.port('chat-web', 'ssl')}/"

    def https(self, port: str) -> str:
        return f"ssl:{port}:privateKey={self.certs}/server.key:certKey={self.certs}/server.crt"

    def serverKeyPin(self) -> str:
        """The server key's SPKI hash, as Chromium's --ignore-certificate-errors-spki-list takes it."""
        import base64
        import hashlib

        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        certificate = x509.load_pem_x509_certificate((self.certs / "server.crt").read_bytes())
        spki = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def browser(self) -> webdriver.Chrome:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        profile = tempfile.mkdtemp(prefix="sockproto-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        for argument in (
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1100,700", f"--user-data-dir={profile}",
            f"--ignore-certificate-errors-spki-list={self.serverKeyPin()}",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
        self.addCleanup(driver.quit)
        driver.get(self.url)
        self.waitFor(driver, lambda d: "you are" in self.texts(d, "#who")[0])
        return driver

    def waitFor(self, driver: webdriver.Chrome, condition, timeout: float = 15) -> None:
        WebDriverWait(driver, timeout).until(condition)

    def say(self, driver: webdriver.Chrome, text: str) -> None:
        box = driver.find_element(By.ID, "say")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def texts(self, driver: webdriver.Chrome, selector: str) -> list[str]:
        # In one call: the page may replace the list between two element reads.
        return driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent)", selector
        )

    def messages(self, driver: webdriver.Chrome) -> list[str]:
        return self.texts(driver, "#messages li")

    def members(self, driver: webdriver.Chrome) -> list[str]:
        return self.texts(driver, "#members li")

    def test_browsersAndALineClientChat(self) -> None:
        alice, bob = self.browser(), self.browser()
        line = LineClient.tcp(self.chat.port("chat"))
        self.addCleanup(line.close)
        line.until("joined #lobby")
        self.say(alice, "/nick alice")
        self.say(bob, "/nick bob")
        line.send("/nick carol\n")
        for driver in (alice, bob):
            self.waitFor(driver, lambda d: sorted(self.members(d)) == ["alice", "bob", "carol"])

        self.say(alice, "hello from the browser")
        self.assertRegex(line.until("hello from the browser")[-1], r"<alice> hello from the browser$")
        self.waitFor(bob, lambda d: any("<alice>" in m and "hello from the browser" in m for m in self.messages(d)))
        line.send("hi browsers, from nc\n")
        for driver in (alice, bob):
            self.waitFor(driver, lambda d: any("hi browsers, from nc" in m for m in self.messages(d)))

        # A nick change shows in the member list.
        self.say(bob, "/nick robert")
        self.waitFor(alice, lambda d: sorted(self.members(d)) == ["alice", "carol", "robert"])

        # Hostile text is shown as text and runs nothing.
        line.send(XSS + "\njavascript:alert(1)\n")
        for driver in (alice, bob):
            self.waitFor(driver, lambda d: any("javascript:alert(1)" in m for m in self.messages(d)))
            self.assertTrue(any(XSS in m for m in self.messages(driver)), self.messages(driver))
            self.assertEqual(driver.find_elements(By.CSS_SELECTOR, "#messages img, #messages script"), [])
            self.assertEqual(driver.title, "sockproto chat")

        # A private message, marked as one.
        self.say(alice, "/msg robert just between us")
        self.waitFor(bob, lambda d: d.find_elements(By.CSS_SELECTOR, "#messages li.private"))
        self.assertIn("just between us", self.texts(bob, "#messages li.private")[-1])

        time.sleep(0.3)  # let the last line scroll into view
        shot = os.environ.get("SOCKPROTO_SCREENSHOT") or str(Path(self.mktemp() + ".png").resolve())
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        self.assertTrue(alice.save_screenshot(shot))
        self.assertGreater(Path(shot).stat().st_size, 10_000)

    def test_topicAndOperatorMarks(self) -> None:
        """
        A room's topic is above its messages (set from the page's box or by a
        line client); its operator is marked @ in the member list, a voiced
        member +; the commands typed in the box are the line chat's.
        """
        driver = self.browser()
        self.say(driver, "/nick alice")
        self.say(driver, "/join #dev")
        self.waitFor(driver, lambda d: self.members(d) == ["@alice"])
        self.assertTrue(driver.find_element(By.ID, "topic").get_attribute("hidden"))
        self.say(driver, "/topic Release day")
        self.waitFor(driver, lambda d: self.texts(d, "#topic") == ["Release day"])
        self.assertIsNone(driver.find_element(By.ID, "topic").get_attribute("hidden"))
        line = LineClient.tcp(self.chat.port("chat"))
        self.addCleanup(line.close)
        line.until("joined #lobby")
        line.send("/nick bob\n/join #dev\n")
        self.assertIn("*** topic of #dev: Release day (set by alice)", line.until("topic of #dev"))
        self.waitFor(driver, lambda d: self.members(d) == ["@alice", "bob"])
        self.say(driver, "/voice bob")
        self.waitFor(driver, lambda d: self.members(d) == ["@alice", "+bob"])
        line.send("/topic Ship it\n")
        self.waitFor(driver, lambda d: self.texts(d, "#topic") == ["Ship it"])
        self.assertEqual(self.texts(driver, "#members .operator"), ["@alice"])
        self.say(driver, "/kick bob enough")
        self.assertIn("*** bob was kicked from #dev by alice (enough)", line.until("kicked"))
        self.waitFor(driver, lambda d: self.members(d) == ["@alice"])

    def test_aLineTooLongInBytesIsRefusedByThePage(self) -> None:
        """1,200 of "中" fit the input (2,000 characters) but are 3,600 bytes: the page says so and keeps them."""
        alice = self.browser()
        text = "中" * 1200
        alice.execute_script("document.getElementById('say').value = arguments[0]", text)
        alice.find_element(By.ID, "say").send_keys(Keys.ENTER)
        self.waitFor(alice, lambda d: any("line too long (3600 bytes" in m for m in self.messages(d)))
        self.assertIn("at most 512)", self.messages(alice)[-1])
        self.assertEqual(alice.find_element(By.ID, "say").get_attribute("value"), text)
        alice.find_element(By.ID, "say").clear()
        self.say(alice, "/nick alice")  # still connected, the same user: the next line goes
        self.waitFor(alice, lambda d: "you are alice" in self.texts(d, "#who")[0])
        self.assertFalse(any("connection lost" in m for m in self.messages(alice)), self.messages(alice))

    def test_afterLoadInARoomWithHistory(self) -> None:
        """
        Right after the page loads in a room with history: the Members and
        Rooms panels are filled, times are HH:MM:SS as nc shows them, and
        nothing failed to load (the icon included).
        """
        line = LineClient.tcp(self.chat.port("chat"))
        self.addCleanup(line.close)
        line.until("joined #lobby")
        line.send("/nick carol\nsaid before you came\n/history 1\n")
        stamp = line.until("said before you came")[-1][1:9]
        driver = self.browser()
        me = self.texts(driver, "#who")[0].removeprefix("you are ")
        self.waitFor(driver, lambda d: sorted(self.members(d)) == sorted(["carol", me]), timeout=5)
        self.waitFor(driver, lambda d: self.texts(d, "#rooms li") == ["#lobby (2)"], timeout=5)
        replayed = [m for m in self.messages(driver) if "said before you came" in m]
        self.assertEqual(len(replayed), 1, self.messages(driver))
        self.assertTrue(replayed[0].startswith(stamp + "<carol>"), (replayed, stamp))
        self.assertRegex(self.texts(driver, "#messages li .time")[0], r"^\d\d:\d\d:\d\d$")
        problems = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        self.assertEqual(problems, [])

    def test_thePageReconnectsByItself(self) -> None:
        driver = self.browser()
        port = self.chat.port("chat-web", "ssl")
        self.chat.stop()
        self.waitFor(driver, lambda d: "reconnecting" in self.texts(d, "#status")[0])
        self.chat = ServiceProcess(
            "sockproto-chat", "--listen", "tcp:0", "--web", self.https(str(port)), "--history", ":memory:"
        )
        self.addCleanup(self.chat.stop)
        self.chat.start(2)
        self.waitFor(driver, lambda d: self.texts(d, "#status")[0] == "connected", timeout=30)
        self.assertTrue(any("reconnected" in m for m in self.messages(driver)))
