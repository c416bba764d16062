"""twistd plugins for sockproto: thin entries, each service imported only when used."""

from twisted.application.service import ServiceMaker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer

# Two strings, not the checker: the plugin index stays cheap to build.
from sockproto.chat import HASHED_AUTH_ARGUMENT, HASHED_AUTH_HELP

sockprotoSuite = ServiceMaker(
    "sockproto",
    "sockproto.suite.service",
    "The seed services in one process (echo 8124, chat 5000 with its web page on 8000, joke 6789, binary 9000, "
    "crud 9001), or those of a --config file ('sockproto example-config' prints one).",
    "sockproto",
)

sockprotoEcho = ServiceMaker(
    "sockproto echo",
    "sockproto.echo",
    "Echo server: raw bytes (RFC 862), lines or upper case, over TCP, UNIX, TLS and UDP.",
    "sockproto-echo",
)

sockprotoJoke = ServiceMaker(
    "sockproto joke",
    "sockproto.joke.service",
    "Knock-knock joke server, tolerant of how people type, with a joke book users can extend.",
    "sockproto-joke",
)

sockprotoChat = ServiceMaker(
    "sockproto chat",
    "sockproto.chat.service",
    "Multi-room line chat: nicknames, history, private messages, logins, fair fan-out.",
    "sockproto-chat",
)

sockprotoProxy = ServiceMaker(
    "sockproto proxy",
    "sockproto.proxy",
    "TCP proxy between any two endpoints (UNIX to TCP, TLS termination and origination), with back-pressure.",
    "sockproto-proxy",
)


@implementer(ICheckerFactory, IPlugin)
class _HashedPasswords:
    """``--auth hashed:FILE``: scrypt-hashed password files (imported when used)."""

    authType = "hashed"
    authHelp = HASHED_AUTH_HELP
    argStringFormat = HASHED_AUTH_ARGUMENT
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring):
        from sockproto.chat.passwords import HashedPasswordCheckerFactory

        return HashedPasswordCheckerFactory().generateChecker(argstring)


hashedPasswords = _HashedPasswords()

sockprotoBinary = ServiceMaker(
    "sockproto binary",
    "sockproto.binary.service",
    "SPB/1: a framed binary key-value protocol over a durable store.",
    "sockproto-binary",
)

sockprotoCrud = ServiceMaker(
    "sockproto crud",
    "sockproto.binary.crud",
    "The seeds' CRUD text server (create/read/update/delete/list) over the SPB/1 store.",
    "sockproto-crud",
)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _MutualTLS:
    """``mtls:PORT:privateKey=KEY:certKey=CERT:caCerts=CA``: TLS that requires a client certificate."""

    prefix = "mtls"

    def parseStreamServer(self, reactor, *args, **kwargs):
        from sockproto.server.tls import MutualTLSServerParser

        return MutualTLSServerParser().parseStreamServer(reactor, *args, **kwargs)


mutualTLS = _MutualTLS()
