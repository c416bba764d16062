"""The chat's structured events (sockproto.chat.events): values faces render without parsing text."""

from __future__ import annotations

import dataclasses

from twisted.trial import unittest

from sockproto.chat import events
from sockproto.chat.events import (
    UNKNOWN_FACE,
    ChatEvent,
    Joined,
    Membership,
    Message,
    NickChanged,
    Who,
    membershipChanged,
)


class WhoTests(unittest.TestCase):
    def test_mask(self):
        """A member's IRC mask names its face, as user and as host."""
        self.assertEqual(Who("bob", "web").mask, "bob!web@web.sockproto")
        self.assertEqual(Who("alice", "line").mask, "alice!line@line.sockproto")

    def test_unknownFace(self):
        """A name whose face is not known (history) has a mask that says so."""
        self.assertEqual(Who("old").face, UNKNOWN_FACE)
        self.assertEqual(Who("old").mask, "old!sockproto@sockproto")


class EventTests(unittest.TestCase):
    def test_kindsAreUnique(self):
        """Every event class has a kind of its own: faces dispatch on it."""
        classes = [c for c in vars(events).values()
                   if isinstance(c, type) and issubclass(c, ChatEvent) and c is not ChatEvent]
        kinds = [c.kind for c in classes]
        self.assertEqual(len(kinds), len(set(kinds)))
        self.assertNotIn("", kinds)

    def test_immutable(self):
        """Events are values: a face may cache what it renders of one."""
        message = Message("#lobby", Who("bob", "line"), "hi", 1.5)
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, message, "text", "changed")
        self.assertEqual(message, Message("#lobby", Who("bob", "line"), "hi", 1.5))

    def test_membership(self):
        """Joins and nick changes change who is in a room; messages do not."""
        joined = Joined("#lobby", Who("bob"), 1.0)
        said = Message("#lobby", Who("bob"), "hi", 1.0)
        self.assertTrue(membershipChanged([said, joined]))
        self.assertFalse(membershipChanged([said]))
        self.assertTrue(NickChanged(None, Who("a"), "b", 1.0).membership)

    def test_prefix(self):
        """A member list entry has IRC's prefix for its highest status."""
        self.assertEqual([Membership("a", operator=True, voiced=True).prefix, Membership("b", voiced=True).prefix,
                          Membership("c").prefix], ["@", "+", ""])
