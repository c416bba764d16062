"""``twistd -n sockproto``: several services in one process, from a TOML file or the seed defaults."""
