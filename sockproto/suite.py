"""``twistd -n sockproto``: the seed services in one process (what ``make run`` starts).

echo (8124), chat (5000), joke (6789) and binary (9000) on loopback, each
with its own defaults; the databases go in ``--var`` (default ``var/``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.python import usage

#: (name, module, options) of the services started by default.
SEEDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("echo", "sockproto.echo", ()),
    ("chat", "sockproto.chat.service", ("--history", "{var}/chat.sqlite3")),
    ("joke", "sockproto.joke", ()),
    ("binary", "sockproto.binary.service", ("--db", "{var}/kv.sqlite3")),
)


class Options(usage.Options):
    synopsis = "[--var DIR]"
    longdesc = (
        "Runs the seed services in one process, each on its default port on loopback: "
        "echo 8124, chat 5000, joke 6789, binary 9000. Databases are kept in --var."
    )
    optParameters = [["var", None, "var", "Folder for the databases (created owner-only)."]]


def makeService(options: Options, reactor: Any = None) -> service.IService:
    if reactor is None:
        from twisted.internet import reactor
    var = Path(options["var"])
    try:
        var.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"sockproto: cannot create {var}: {e.strerror}") from None
    top = service.MultiService()
    for name, moduleName, args in SEEDS:
        module = importlib.import_module(moduleName)
        serviceOptions = module.Options()
        serviceOptions.parseOptions([arg.format(var=var) for arg in args])
        child = module.makeService(serviceOptions, reactor)
        child.setName(name)
        child.setServiceParent(top)
    return top
