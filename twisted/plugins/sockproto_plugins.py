"""twistd plugins for sockproto: thin entries, each service imported only when used."""

from twisted.application.service import ServiceMaker

sockprotoEcho = ServiceMaker(
    "sockproto echo",
    "sockproto.echo",
    "Echo server: raw bytes (RFC 862), lines or upper case, over TCP, UNIX, TLS and UDP.",
    "sockproto-echo",
)

sockprotoJoke = ServiceMaker(
    "sockproto joke",
    "sockproto.joke",
    "Knock-knock joke server, tolerant of how people type, with a joke book users can extend.",
    "sockproto-joke",
)
