"""The shared bounded line splitter."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sockproto.server.lines import TOO_LONG, LineSplitter


def feedAll(splitter, chunks):
    out = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    return out


def reference(data: bytes, limit: int):
    """What a whole stream must split into, computed the slow, obvious way."""
    out = []
    *lines, _ = data.split(b"\n")
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        out.append(TOO_LONG if len(line) > limit else line)
    return out


class LineSplitterTests(unittest.TestCase):
    def test_linesAndPartial(self):
        """Complete lines come out, a trailing CR goes, a partial line waits for its newline."""
        s = LineSplitter(100)
        self.assertEqual(s.feed(b"one\ntwo\r\nthr"), [b"one", b"two"])
        self.assertEqual(s.pending, b"thr")
        self.assertEqual(s.feed(b"ee\n"), [b"three"])

    def test_byteAtATime(self):
        s = LineSplitter(100)
        data = b"hello\r\nworld\n\n"
        self.assertEqual(feedAll(s, [bytes([b]) for b in data]), [b"hello", b"world", b""])

    def test_onlyTheLastCarriageReturnGoes(self):
        self.assertEqual(LineSplitter(10).feed(b"a\r\r\n\rb\n"), [b"a\r", b"\rb"])

    def test_tooLongReportedOnceAndSkipped(self):
        s = LineSplitter(4)
        out = feedAll(s, [b"ok\n", b"x" * 3, b"x" * 10, b"y" * 10, b"zz\nfine\n"])
        self.assertEqual(out, [b"ok", TOO_LONG, b"fine"])

    def test_tooLongInsideOneChunkKeepsTheRest(self):
        s = LineSplitter(4)
        self.assertEqual(s.feed(b"a\n" + b"b" * 9 + b"\nc\n"), [b"a", TOO_LONG, b"c"])

    def test_limitCountsWithoutTheCarriageReturn(self):
        s = LineSplitter(4)
        self.assertEqual(feedAll(s, [b"abcd\r", b"\n", b"abcde\r\n"]), [b"abcd", TOO_LONG])

    def test_memoryBounded(self):
        s = LineSplitter(1000)
        for _ in range(1000):
            s.feed(b"z" * 10000)
            self.assertLessEqual(len(s.pending), 1001)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r", b"\r\n", b"xxxxxxx", b"\xff"]), max_size=60),
        st.integers(min_value=1, max_value=8),
        st.data(),
    )
    def test_anyChunkingGivesTheSameLines(self, pieces, limit, data):
        stream = b"".join(pieces)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        got = feedAll(LineSplitter(limit), chunks)
        # A too-long partial line is reported early, so compare the sequences of
        # real lines and the count of reports up to the last newline.
        want = reference(stream, limit)
        self.assertEqual([x for x in got if x is not TOO_LONG], [x for x in want if x is not TOO_LONG])
        tail = stream.rsplit(b"\n", 1)[-1] if b"\n" in stream else stream
        extra = 1 if len(tail) > limit + 1 else 0
        self.assertEqual(got.count(TOO_LONG), want.count(TOO_LONG) + extra)
