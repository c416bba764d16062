"""The multi-room chat service: ``twistd -n sockproto-chat``."""
