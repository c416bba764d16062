# -*- test-case-name: tests.test_binary_store,tests.test_config,tests.test_package -*-
"""``twistd -n sockproto``: several services in one process, from a TOML file or the seed defaults."""
