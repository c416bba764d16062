"""sockproto: hardened, fast Twisted network services."""

__version__ = "0.1.0"
