# -*- test-case-name: tests.test_binary,tests.test_binary_redisstore,tests.test_binary_store -*-
"""SPB/1 frames: ``length: u32`` (bytes after it), ``op: u8``, ``request_id: u32``, payload.

All integers are big-endian.  See ``docs/binary-protocol.rst``.  For example
a READ of the key ``k`` with request id 7, and its parts back::

    >>> frame(Op.READ, 7, encodeKey(b"k")).hex()
    '00000008110000000700016b'
    >>> parseKey(encodeKey(b"k") + b"rest")
    (b'k', b'rest')
    >>> parseKeyList(encodeKeyList([b"a", b"bc"]))
    [b'a', b'bc']
"""

from __future__ import annotations

import struct
from enum import IntEnum

HEADER = struct.Struct(">IBI")  # length, op, request id
OP_ID = struct.Struct(">BI")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")

MIN_LENGTH = 5  # op + request id
#: A frame's length prefix.
LENGTH_SIZE = U32.size  # 4
#: Bytes before a frame's payload: its length, op and request id.
HEADER_SIZE = HEADER.size  # 9
#: A key's length prefix.
KEY_LENGTH_SIZE = U16.size  # 2
#: Bytes of a frame before its key (READ, DELETE): the header and the key's length.
KEY_OFFSET = HEADER_SIZE + KEY_LENGTH_SIZE  # 11
#: The same, counted in a frame's body (after its length prefix): op, request id, key length.
BODY_KEY_OFFSET = MIN_LENGTH + KEY_LENGTH_SIZE  # 7
MAX_KEY = 1024
DEFAULT_MAX_FRAME = 1 << 20


class Op(IntEnum):
    """SPB/1 request ops (a reply's op is the request's with the REPLY bit set; see docs/binary-protocol.rst)."""

    PING = 0x01
    ECHO = 0x02
    CREATE = 0x10
    READ = 0x11
    UPDATE = 0x12
    DELETE = 0x13
    LIST = 0x14
    STATS = 0x20
    ERROR = 0xFF


REPLY = 0x80  # a success reply's op is the request's op | 0x80


class Code(IntEnum):
    """SPB/1 error codes, the ``u16`` at the start of an ERROR reply's payload."""

    BAD_REQUEST = 1
    UNKNOWN_OP = 2
    NOT_FOUND = 3
    EXISTS = 4
    TOO_LARGE = 5
    BAD_FRAME = 6
    SERVER_ERROR = 7


class BadRequest(ValueError):
    """A payload that does not parse; answered with BAD_REQUEST."""


def frame(op: int, requestId: int, payload: bytes = b"") -> bytes:
    """One whole frame."""
    return HEADER.pack(len(payload) + MIN_LENGTH, op, requestId) + payload


def errorFrame(requestId: int, code: int, message: str) -> bytes:
    """An ERROR reply: ``u16 code`` and a UTF-8 message."""
    return frame(Op.ERROR, requestId, U16.pack(code) + message.encode("utf-8"))


def encodeKey(key: bytes) -> bytes:
    """``u16 length, key``: how every key travels."""
    return U16.pack(len(key)) + key


def parseKey(payload: bytes, allowEmpty: bool = False) -> tuple[bytes, bytes]:
    """Split ``u16 length, key`` off a payload: (key, rest).  Raises BadRequest."""
    if len(payload) < 2:
        raise BadRequest("payload too short for a key length")
    (size,) = U16.unpack_from(payload)
    if size > MAX_KEY:
        raise BadRequest(f"key longer than {MAX_KEY} bytes")
    if size == 0 and not allowEmpty:
        raise BadRequest("empty key")
    end = 2 + size
    if len(payload) < end:
        raise BadRequest("key runs past the end of the frame")
    key = payload[2:end]
    try:
        key.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("key is not UTF-8") from None
    return key, payload[end:]


def parseExactKey(payload: bytes, allowEmpty: bool = False) -> bytes:
    """A payload that is one key and nothing else.  Raises BadRequest."""
    key, rest = parseKey(payload, allowEmpty)
    if rest:
        raise BadRequest("unexpected bytes after the key")
    return key


def parseError(payload: bytes) -> tuple[int, str]:
    """(code, message) of an ERROR reply's payload; a malformed one reads as SERVER_ERROR."""
    if len(payload) < 2:
        return Code.SERVER_ERROR, "malformed error reply"
    (code,) = U16.unpack_from(payload)
    return code, payload[2:].decode("utf-8", "replace")


def encodeKeyList(keys: list[bytes]) -> bytes:
    """A LIST reply's payload: ``u32 count`` and each key as :func:`encodeKey` makes it."""
    return U32.pack(len(keys)) + b"".join(U16.pack(len(k)) + k for k in keys)


def parseKeyList(payload: bytes) -> list[bytes]:
    """The keys of a LIST reply's payload.  Raises BadRequest."""
    if len(payload) < 4:
        raise BadRequest("key list too short")
    (count,) = U32.unpack_from(payload)
    keys, offset = [], 4
    for _ in range(count):
        if offset + 2 > len(payload):
            raise BadRequest("key list truncated")
        (size,) = U16.unpack_from(payload, offset)
        offset += 2
        if offset + size > len(payload):
            raise BadRequest("key list truncated")
        keys.append(payload[offset : offset + size])
        offset += size
    if offset != len(payload):
        raise BadRequest("key list has trailing bytes")
    return keys
