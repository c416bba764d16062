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


def moduleName(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def importGraph():
    """sockproto module -> the sockproto modules it imports (anywhere in it: at the top, in functions, for types)."""
    modules = {moduleName(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        used = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sockproto"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    used.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                used.update(alias.name for alias in node.names if alias.name.startswith("sockproto"))
        graph[name] = {m for m in used if m in modules and m not in (name, "sockproto")}
    return graph


def cycles(graph):
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, onStack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        onStack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in onStack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                other = stack.pop()
                onStack.discard(other)
                group.append(other)
                if other == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


class HouseTests(unittest.TestCase):
    def test_noImportCycles(self):
        """No two modules import each other, directly or round about, not even for types."""
        self.assertEqual(cycles(importGraph()), [])

    def test_cyclesAreFound(self):
        self.assertEqual(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}), [["a", "b", "c"]])

    def test_everyPublicClassSaysWhatItIs(self):
        for path in PACKAGE.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    where = f"{path.relative_to(PACKAGE)}: {node.name}"
                    self.assertTrue(ast.get_docstring(node), f"{where} has no docstring")

    def test_docstringsAreRestructuredText(self):
        """The API docs are built as reST (make docs): epytext fields would show as text."""
        import re

        epytext = re.compile(r"@(param|ivar|cvar|type|return|rtype|raises?)\b")
        for path in PACKAGE.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
                    doc = ast.get_docstring(node) or ""
                    self.assertIsNone(epytext.search(doc), f"{path.relative_to(PACKAGE)}: epytext in a docstring")


class LayoutDocsTests(unittest.TestCase):
    def test_theReadmeLayoutNamesEveryModule(self):
        """A reader of the README's Layout finds where any module is and what it does."""
        readme = (PACKAGE.parent / "README.rst").read_text()
        layout = readme[readme.index("\nLayout\n"):readme.index("\nTests\n")]
        for path in PACKAGE.rglob("*.py"):
            if path.name in ("__init__.py", "__main__.py"):
                continue
            named = f"``{path.name}``" in layout or f"/{path.name}``" in layout
            self.assertTrue(named, f"README's Layout does not name {path.relative_to(PACKAGE)}")

    def test_theMachineryNamesItsModules(self):
        import sockproto.server

        for path in (PACKAGE / "server").glob("*.py"):
            if path.name != "__init__.py":
                self.assertIn(f"sockproto.server.{path.stem}`", sockproto.server.__doc__ or "", path.name)
