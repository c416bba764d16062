# -*- test-case-name: tests.test_listen -*-
"""The server machinery every sockproto service shares.

- :mod:`sockproto.server.listen`: endpoint strings with safe defaults, listening, ordered stop;
- :mod:`sockproto.server.connections`: connection limits, idle and send timeouts, back-pressure;
- :mod:`sockproto.server.lines`: bounded line framing;
- :mod:`sockproto.server.lifecycle`: metrics endpoint, SIGHUP reloads, the plugins' ``makeService``;
- :mod:`sockproto.server.metrics` and :mod:`sockproto.server.latency`: Prometheus metrics;
- :mod:`sockproto.server.tls`: the ``mtls:`` endpoint, development certificates, peer identities;
- :mod:`sockproto.server.targets`: client endpoints for the proxy and the tools;
- :mod:`sockproto.server.files`: files created owner-only, database errors explained.

Nothing here imports a service: services find the machinery, and the
machinery finds what services can do through :mod:`sockproto.interfaces`.
"""
