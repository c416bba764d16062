# -*- test-case-name: tests.test_chat,tests.test_chat_cluster,tests.test_chat_events -*-
"""The multi-room chat service: ``twistd -n sockproto-chat``."""

# The ``--auth hashed:FILE`` texts, here so that the plugin entry can show
# them without importing the checker.
HASHED_AUTH_HELP = (
    "A password file of scrypt hashes, one 'name:hash' per line, made with "
    "'sockproto passwd FILE NAME'. It is read again when it changes."
)
HASHED_AUTH_ARGUMENT = "A path to a file made by 'sockproto passwd'."
