# -*- test-case-name: tests.test_listen -*-
"""The server machinery every sockproto service shares.

- :mod:`sockproto.server.endpointstrings`: endpoint strings checked, with safe defaults, and errors in the user's terms;
- :mod:`sockproto.server.options`: the options every service shares (``ServerOptions``) and the value coercers;
- :mod:`sockproto.server.listen`: listening all or nothing (adopting sockets in a worker), the ordered stop;
- :mod:`sockproto.server.connections`: connection limits, idle and send timeouts, back-pressure, failed TLS handshakes;
- :mod:`sockproto.server.lines`: bounded line framing;
- :mod:`sockproto.server.lifecycle`: the plugins' ``makeService``, SIGHUP reloads, the default reactor;
- :mod:`sockproto.server.workers`: ``--workers``: the parent that binds and supervises, the workers that adopt;
- :mod:`sockproto.server.metrics` and :mod:`sockproto.server.latency`: Prometheus metrics;
- :mod:`sockproto.server.ratelimit`: the token bucket and the once-per-episode log gate;
- :mod:`sockproto.server.redis`: the Redis link (URLs, reconnection, scripts) of the chat cluster and the Redis store;
- :mod:`sockproto.server.tls`: the ``mtls:`` endpoint, development certificates, peer identities;
- :mod:`sockproto.server.targets`: client endpoints for the proxy and the tools;
- :mod:`sockproto.server.files`: files created owner-only, database errors explained.

Nothing here imports a service: services find the machinery, and the
machinery finds what services can do through :mod:`sockproto.interfaces`.
"""
