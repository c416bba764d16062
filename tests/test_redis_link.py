"""The Redis link's command encoder: the same bytes as txredisapi's own, faster."""

import txredisapi
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sockproto.server.redis import _CommandProtocol

arguments = st.lists(
    st.one_of(st.binary(max_size=300), st.text(max_size=50), st.integers(-(2**63), 2**63), st.floats(allow_nan=False)),
    max_size=60,
)


class CommandEncodingTests(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(arguments)
    def test_theSameBytesAsTxredisapi(self, args):
        ours = _CommandProtocol(charset=None)
        theirs = txredisapi.RedisProtocol(charset=None)
        self.assertEqual(ours._build_command(*args), theirs._build_command(*args))

    def test_aTurnOfWrites(self):
        ours = _CommandProtocol(charset=None)
        args = ["EVALSHA", "ab" * 20, 2, b"p:v:k1", b"p:index", b"c", b"k1", b"\x00value\r\n"]
        self.assertEqual(
            ours._build_command(*args),
            b"*8\r\n$7\r\nEVALSHA\r\n$40\r\n" + b"ab" * 20 + b"\r\n$1\r\n2\r\n$6\r\np:v:k1\r\n$7\r\np:index\r\n"
            b"$1\r\nc\r\n$2\r\nk1\r\n$8\r\n\x00value\r\n\r\n",
        )


values = st.recursive(
    st.one_of(st.binary(max_size=50), st.integers(), st.none()),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)


class ReplyConversionTests(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(values)
    def test_theSameValuesAsTxredisapi(self, reply):
        """As the link makes them (no charset, no number conversion): what txredisapi's conversion returns."""
        ours = _CommandProtocol(charset=None, convertNumbers=False)
        theirs = txredisapi.RedisProtocol(charset=None, convertNumbers=False)
        self.assertEqual(ours.tryConvertData(reply), theirs.tryConvertData(reply))

    def test_otherSettingsStillConvert(self):
        self.assertEqual(_CommandProtocol(charset="utf-8").tryConvertData([b"\xc3\xa9", b"12"]), ["é", 12])
