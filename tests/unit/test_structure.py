"""The shape of the code: layers that import only downwards, no import cycles, small modules,
every Redis key named in one place, every Lua script reading what its header declares."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from worker.records import JOB_HASH_FIELDS
from worker.store.jobs import JobStore
from worker.store.scripts import Scripts, load_source, prelude

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
def test_each_script_reads_its_keys_and_arguments_by_name(name: str) -> None:
    """Only the prelude generated from the header indexes KEYS and ARGV; every `KEY.<name>` and
    `ARG.<name>` the script or its included pieces read is declared in its header (a misspelt
    name would be a silent nil)."""
    source, signature = load_source(name)
    body = re.sub(r"--[^\n]*", "", source.removeprefix(prelude(signature)))  # no comments
    assert re.findall(r"\b(?:KEYS|ARGV)\b", body) == []
    for table, declared in (("KEY", signature.keys), ("ARG", signature.args)):
        used = set(re.findall(rf"\b{table}\.(\w+)", body))
        assert used <= set(declared), (table, sorted(used - set(declared)))


def _job_hash_calls(source: str) -> list[tuple[str, list[str]]]:
    """(command, arguments after the key) of each H* call on a job's hash in a Lua source."""
    calls = []
    for match in re.finditer(r"redis\.call\('(H[A-Z]+)', (?:KEY\.job|job|leader_job), ", source):
        depth, args, current = 0, [], ""
        for char in source[match.end():]:
            if char == "(":
                depth += 1
            elif char == ")" and depth == 0:
                break
            elif char == ")":
                depth -= 1
            if char == "," and depth == 0:
                args.append(current.strip())
                current = ""
            else:
                current += char
        calls.append((match.group(1), [*args, current.strip()]))
    return calls


def test_lua_reads_and_writes_only_fields_of_the_job_record() -> None:
    """Every field name a script names on a job's hash is a field `Job` reads
    (JOB_HASH_FIELDS); the Python side is checked as it writes (`job_fields`)."""
    named = set()
    for path in (ROOT / "worker" / "store" / "lua").rglob("*.lua"):
        for command, args in _job_hash_calls(path.read_text()):
            names = args[::2] if command in ("HSET", "HSETNX", "HINCRBY") else args
            named |= {name.strip("'") for name in names if re.fullmatch(r"'\w+'", name)}
    assert len(named) > 20  # the parser still finds them
    assert named - JOB_HASH_FIELDS == set()


def test_a_jobs_field_names_live_in_the_store() -> None:
    """The flow says what happened through the store's verbs (typed arguments); only the store
    names the fields they write: no verb of `JobStore` takes `**fields`."""
    verbs = {name: member for name, member in vars(JobStore).items()
             if callable(member) and not name.startswith("_")}
    assert len(verbs) > 15
    assert [name for name, verb in verbs.items() if any(
        p.kind is p.VAR_KEYWORD for p in inspect.signature(verb).parameters.values())] == []


#: The layers, lowest first: a module imports from its own layer and those below, never above
#: (each package's __init__ says the same in words).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("worker.errors", "worker.records", "worker.settings", "worker.constants", "worker.logs",
     "worker.tenants"),  # the core: names, records, settings
    ("worker.net",),  # HTTP to producers' endpoints
    ("worker.spec",),  # what a producer may ask for
    ("worker.astria",),  # Astria and its rules
    ("worker.store",),  # Redis: every read and write, the dispatcher's grant
    ("worker.runtime",),  # what a process needs, built once
    ("worker.flow",),  # a job's life
    ("worker.edge",),  # what listens: receiver, metrics, health
    ("worker.broker",),  # Celery
    ("worker", "worker.producer", "worker.cli", "tasks",
     "astria_local"),
)


def layer(module: str) -> int:
    """The index in LAYERS of the longest prefix that names the module's layer."""
    best, rank = "", -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, rank = name, i
    assert rank >= 0, f"{module} has no layer in LAYERS"
    return rank


def test_no_module_imports_a_layer_above_its_own() -> None:
    mods = modules()
    upward = sorted(f"{name} -> {target}" for name, path in mods.items()
                    for target in imports(name, path, set(mods)) if layer(target) > layer(name))
    assert upward == []


def test_the_flow_is_handed_its_runtime() -> None:
    """Only the entry points (task, receiver, metrics, CLI, producer API, Celery's hooks) look
    the process's runtime up; the layers below are handed it, so a test can hand them another."""
    looked_up = sorted(
        name for name, path in modules().items() if layer(name) < layer("worker.edge")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module == "worker.runtime"
        and "runtime" in {a.name for a in node.names})
    assert looked_up == []


def test_at_most_a_dozen_modules_at_the_top_of_worker() -> None:
    top = sorted(path.name for path in (ROOT / "worker").glob("*.py"))
    assert len(top) <= 12, top
