"""sockproto: hardened, fast Twisted network services."""

__version__ = "0.2.0"
