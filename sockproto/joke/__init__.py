# -*- test-case-name: tests.test_joke,tests.test_config,tests.test_listen -*-
"""The knock-knock joke dialog, ``twistd -n sockproto-joke``, and its joke books."""
