"""The shape of the code: no import cycles, small modules, every Redis key named in one place,
every Lua script declaring what it uses."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from worker.store.scripts import Scripts, load_source

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("worker", "tasks", "astria_local")
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules this one imports, at any level (imports inside functions count)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                       else node.module for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def test_no_import_cycles() -> None:
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    # a package's __init__ only re-exports: importing a submodule runs it, but no module
    # imports the package itself, so it cannot close a cycle
    for name in mods:
        assert not any(name in graph[m] for m in graph if name in PACKAGES and m != name), name
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in visiting:
            cycle = [*visiting[visiting.index(node):], node]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        visiting.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in PACKAGES:
                visit(nxt)
        visiting.pop()
        done.add(node)

    for name in sorted(graph):
        visit(name)


def test_no_module_over_400_lines() -> None:
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_redis_keys_are_built_only_in_constants() -> None:
    """A key is `prefix:...`: no other module formats one."""
    pattern = re.compile(r"""f["'][^"']*\{[^}]*prefix[^}]*\}:""")
    offenders = [str(path.relative_to(ROOT)) for name, path in modules().items()
                 if name != "worker.constants" and pattern.search(path.read_text())]
    assert offenders == []


@pytest.mark.parametrize("name", Scripts.NAMES)
def test_each_script_declares_every_key_and_argument_it_reads(name: str) -> None:
    source, signature = load_source(name)
    for kind, declared, tail in (("KEYS", signature.keys, signature.keys_tail),
                                 ("ARGV", signature.args, signature.args_tail)):
        used = {int(i) for i in re.findall(rf"{kind}\[(\d+)\]", source.split("\n-- Returns")[-1])}
        if not tail:
            assert used <= set(range(1, len(declared) + 1)), (kind, used)
