"""The layout holds: the machinery imports no service, services import no other service."""

import ast
from pathlib import Path

from twisted.trial import unittest

PACKAGE = Path(__file__).resolve().parent.parent / "sockproto"
SERVICES = ("echo", "chat", "joke", "binary", "proxy")
MACHINERY = ("server", "privateapi", "interfaces")
#: Private names of Twisted's and of libraries' (txredisapi's) that only privateapi.py may use or override.
PRIVATE_NAMES = ("_parse", "_dispatch", "_doReadOrWrite", "_selectables", "_tempDataLen", "_build_command",
                 "_encode_value", "_shutdownTLS", "_aggregator", "_accept", "_reservedFD")


def importsOf(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def part(module):
    """sockproto.chat.hub -> chat; anything outside sockproto -> None."""
    pieces = module.split(".")
    return pieces[1] if pieces[0] == "sockproto" and len(pieces) > 1 else None


def modulesUnder(name):
    target = PACKAGE / name
    return sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]


class LayoutTests(unittest.TestCase):
    def test_theMachineryImportsNoService(self):
        for name in MACHINERY:
            for path in modulesUnder(name):
                for module in importsOf(path):
                    self.assertNotIn(part(module), SERVICES + ("cli", "suite"), f"{path.name} imports {module}")

    def test_servicesDoNotImportEachOther(self):
        for name in SERVICES:
            for path in modulesUnder(name):
                for module in importsOf(path):
                    used = part(module)
                    if used in SERVICES:
                        self.assertEqual(used, name, f"{path.relative_to(PACKAGE)} imports {module}")
                    self.assertNotIn(used, ("cli", "suite"), f"{path.relative_to(PACKAGE)} imports {module}")

    def test_privateTwistedNamesOnlyInTheFence(self):
        """Names like endpoints._parse or Options._dispatch are used in privateapi.py and nowhere else."""
        fence = PACKAGE / "privateapi.py"
        for path in PACKAGE.rglob("*.py"):
            if path == fence:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in PRIVATE_NAMES:
                    self.fail(f"{path.relative_to(PACKAGE)} uses Twisted's private {node.attr}")
                if isinstance(node, ast.FunctionDef) and node.name in PRIVATE_NAMES:
                    self.fail(f"{path.relative_to(PACKAGE)} overrides a library's private {node.name}")
