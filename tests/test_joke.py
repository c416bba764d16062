"""The knock-knock dialog and the joke book, without sockets."""

import json
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial import unittest

from sockproto.joke import service as joke
from sockproto.joke.book import (
    BUILTIN_JOKES,
    Joke,
    JokeBookError,
    JokePicker,
    isSetupWho,
    isWhosThere,
    loadBooks,
    loadJokes,
)

LETTUCE = Joke("Lettuce", "Let us in! It's freezing out here!")
OLD_LADY = Joke("A little old lady", "Wow, I didn't know you could yodel!")


def dialog(jokes=(LETTUCE,), clock=None, maxAttempts=5, idleTimeout=60, host="127.0.0.1"):
    clock = clock or Clock()
    factory = joke.JokeFactory(clock, JokePicker(list(jokes), seed=1), maxAttempts=maxAttempts, idleTimeout=idleTimeout)
    peer = IPv4Address("TCP", host, 5555)
    proto = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    proto.makeConnection(transport)
    return proto, transport


def send(proto, text, byteAtATime=False):
    data = text if isinstance(text, bytes) else text.encode()
    if byteAtATime:
        for i in range(len(data)):
            proto.dataReceived(data[i : i + 1])
    else:
        proto.dataReceived(data)


class DialogTests(unittest.TestCase):
    def test_wholeJoke(self):
        """The dialog from knock-knock to the punchline, prompt by prompt."""
        proto, transport = dialog()
        self.assertEqual(transport.value(), b"Knock knock!\r\n>> ")
        send(proto, "Who's there?\r\n")
        self.assertEqual(transport.value(), b"Knock knock!\r\n>> Lettuce\r\n>> ")
        send(proto, "Lettuce who?\r\n")
        self.assertEqual(
            transport.value(),
            b"Knock knock!\r\n>> Lettuce\r\n>> Let us in! It's freezing out here!\r\n",
        )
        self.assertTrue(transport.disconnecting)

    def test_byteAtATimeAndAllInOneChunk(self):
        for byteAtATime in (True, False):
            proto, transport = dialog()
            send(proto, "who's there\nlettuce who\n", byteAtATime)
            self.assertTrue(transport.value().endswith(b"Let us in! It's freezing out here!\r\n"))
            self.assertTrue(transport.disconnecting)

    def test_wrongAnswersGetHints(self):
        proto, transport = dialog()
        send(proto, "hello\n")
        self.assertTrue(transport.value().endswith(b'Please type "Who\'s there?".\r\n>> '))
        send(proto, "who's there\n")
        transport.clear()
        send(proto, "cabbage who\n")
        self.assertEqual(transport.value(), b'Please type "Lettuce who?".\r\n>> ')
        self.assertFalse(transport.disconnecting)

    def test_attemptsRunOut(self):
        proto, transport = dialog(maxAttempts=3)
        send(proto, "a\n\nc\nwho's there\n")
        out = transport.value()
        self.assertEqual(out.count(b"Please type"), 2)
        self.assertTrue(out.endswith(b"Too many wrong answers. Goodbye!\r\n"))
        self.assertTrue(transport.disconnecting)
        self.assertNotIn(b"Lettuce", out)

    def test_emptyLineAndNonUTF8AreWrongAnswers(self):
        proto, transport = dialog()
        send(proto, b"\n\xff\xfe\xfd\n")
        self.assertEqual(transport.value().count(b'Please type "Who\'s there?"'), 2)
        self.assertFalse(transport.disconnecting)

    def test_longLineCloses(self):
        proto, transport = dialog()
        send(proto, b"w" * 2000)
        self.assertIn(b"longer than 1024 bytes", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_idleTimeout(self):
        clock = Clock()
        proto, transport = dialog(clock=clock, idleTimeout=60)
        clock.pump([5] * 11)
        self.assertFalse(transport.disconnecting)
        clock.pump([5] * 5)
        self.assertTrue(transport.value().endswith(b"Too slow! Goodbye.\r\n"))
        self.assertTrue(transport.disconnecting)

    def test_multiWordSetup(self):
        proto, transport = dialog(jokes=[OLD_LADY])
        send(proto, "WHO IS THERE?!\n  a  little,  OLD lady who?? \n")
        self.assertTrue(transport.value().endswith(b"Wow, I didn't know you could yodel!\r\n"))


class ToleranceTests(unittest.TestCase):
    def test_whosThere(self):
        """'Who's there?' is recognised in its common spellings and nothing else."""
        accepted = ["Who's there?", "who’s there", "WHOS THERE", "  who 's   there ! ", "who is there?", "Who`s there"]
        for answer in accepted:
            self.assertTrue(isWhosThere(answer), answer)
        for answer in ["", "who", "who there", "whose there", "who's where", "who's there there"]:
            self.assertFalse(isWhosThere(answer), answer)

    def test_setupWho(self):
        """'<setup> who?' is recognised in its common spellings and nothing else."""
        for answer in ["Lettuce who?", "lettuce who", "LETTUCE   WHO!!", " lettuce, who? "]:
            self.assertTrue(isSetupWho(answer, LETTUCE), answer)
        for answer in ["lettuce", "who", "lettuce who who", "let us who"]:
            self.assertFalse(isSetupWho(answer, LETTUCE), answer)


class BookTests(unittest.TestCase):
    def write(self, name, text):
        path = Path(self.mktemp())
        path.mkdir()
        path = path / name
        path.write_text(text)
        return str(path)

    def test_builtin(self):
        """The built-in book has the classics and is what no book gives."""
        self.assertGreaterEqual(len(BUILTIN_JOKES), 25)
        setups = {j.setup for j in BUILTIN_JOKES}
        self.assertTrue({"Boo", "Lettuce", "A little old lady"} <= setups)
        self.assertEqual(loadBooks([]), list(BUILTIN_JOKES))

    def test_tomlAndJsonAddUp(self):
        """Joke books in TOML and JSON (a list or a 'jokes' table) add up in order."""
        toml = self.write("a.toml", '[[jokes]]\nsetup = "Tank"\npunchline = "You\'re welcome!"\n')
        js = self.write("b.json", json.dumps([{"setup": "Boo", "punchline": "Don't cry!"}]))
        wrapped = self.write("c.json", json.dumps({"jokes": [{"setup": "Atch", "punchline": "Bless you!"}]}))
        self.assertEqual(
            loadBooks([toml, js, wrapped]),
            [Joke("Tank", "You're welcome!"), Joke("Boo", "Don't cry!"), Joke("Atch", "Bless you!")],
        )
        self.assertEqual(len(loadBooks([toml], includeBuiltin=True)), len(BUILTIN_JOKES) + 1)

    def assertBookError(self, path, *fragments):
        with self.assertRaises(JokeBookError) as caught:
            loadJokes(path)
        for fragment in (str(path), *fragments):
            self.assertIn(fragment, str(caught.exception))

    def test_badBooks(self):
        """A missing, malformed or unknown-format book, or a joke without a punchline, names the problem."""
        self.assertBookError("/no/such/book.toml", "cannot read")
        self.assertBookError(self.write("bad.toml", "[[jokes]\nsetup="), "bad TOML syntax")
        self.assertBookError(self.write("bad.json", "[{"), "bad JSON syntax")
        self.assertBookError(self.write("x.yaml", "- a"), "unknown format")
        self.assertBookError(
            self.write("m.json", json.dumps([{"setup": "A", "punchline": "B"}, {"setup": "C"}])),
            "joke 2",
            "missing 'punchline'",
        )
        notText = json.dumps([{"setup": 3, "punchline": "B"}])
        self.assertBookError(self.write("t.json", notText), "joke 1", "'setup'")
        self.assertBookError(self.write("n.json", json.dumps([{"setup": "a\nb", "punchline": "B"}])), "one line")
        self.assertBookError(self.write("e.json", "[]"), "no jokes")
        self.assertBookError(self.write("k.json", json.dumps({"joke": []})), "unknown key 'joke'")
        self.assertBookError(self.write("p.json", json.dumps([{"setup": "?!", "punchline": "x"}])), "letters")

    def test_optionsReportBadBooks(self):
        options = joke.Options()
        with self.assertRaises(usage.UsageError) as caught:
            options.parseOptions(["--jokes", "/no/such.toml"])
        self.assertIn("/no/such.toml", str(caught.exception))


class PickerTests(unittest.TestCase):
    def test_seedIsReproducible(self):
        a = JokePicker(BUILTIN_JOKES, seed=42)
        b = JokePicker(BUILTIN_JOKES, seed=42)
        peers = [f"10.0.0.{i % 7}" for i in range(50)]
        self.assertEqual([a.pick(p) for p in peers], [b.pick(p) for p in peers])

    def test_noRepeatForAReturningPeer(self):
        picker = JokePicker(BUILTIN_JOKES[:3], seed=7)
        picks = [picker.pick("127.0.0.1") for _ in range(200)]
        self.assertTrue(all(x != y for x, y in zip(picks, picks[1:], strict=False)))
        self.assertEqual(len(set(picks)), 3)

    def test_memoryBounded(self):
        picker = JokePicker(BUILTIN_JOKES, memory=10)
        for i in range(1000):
            picker.pick(f"peer{i}")
        self.assertEqual(len(picker._recent), 10)

    def test_oneJokeBook(self):
        """With one joke, the picker still picks it."""
        picker = JokePicker([LETTUCE])
        self.assertEqual({picker.pick("x") for _ in range(5)}, {LETTUCE})
