# -*- test-case-name: tests.test_config,tests.test_listen,tests.test_privateapi -*-
"""sockproto: hardened, fast Twisted network services."""

__version__ = "0.2.0"
