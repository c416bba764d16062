"""The knock-knock joke dialog, ``twistd -n sockproto-joke``, and its joke books."""
