"""relay's modules form no import cycle, so each layer can be read (and tested) alone.

The graph is built from the source (ast over relay/**/*.py), not from what an interpreter
happened to import: an import inside a function counts too, since it only hides a cycle.
Imports under `if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

RELAY = Path(__file__).resolve().parents[2] / "relay"


def module_name(path: Path) -> str:
    parts = path.relative_to(RELAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in RELAY.rglob("*.py")}


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:`."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(n) for child in node.body for n in ast.walk(child))
    return hidden


def imports_of(name: str, path: Path, known: set[str], typing: bool = False) -> set[str]:
    """The relay modules `name` imports (a `from pkg import sub` names the submodule);
    with `typing`, those imported only for type checking too."""
    tree = ast.parse(path.read_text())
    hidden = set() if typing else type_checking_nodes(tree)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None (depth-first, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_relay() -> None:
    edges = graph()
    assert "relay.web.common" in edges["relay.web.ingest"]
    assert "relay.web.ingest" in edges["relay.web.app"]


def test_relay_has_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_only_the_app_factory_imports_route_modules() -> None:
    routes = {
        "relay.web.ingest",
        "relay.web.links",
        "relay.web.tracking",
        "relay.web.pull",
        "relay.web.admin_api",
        "relay.web.console",
        "relay.soap",
    }
    importers = {name: sorted(deps & routes) for name, deps in graph().items() if deps & routes}
    assert importers == {"relay.web.app": sorted(routes)}


# The request guard still reads the runtime's config per request: it is being reworked on
# its own, and will take the `Current` config like the route surfaces when it is.
RUNTIME_USERS = {"relay.web.app"}


def test_route_modules_are_given_their_parts_not_the_runtime() -> None:
    """Each route surface is built by the app factory from the parts it uses (the intake,
    the pull's lease and ack, one `Admin`, the `Current` config): none of them, nor what
    they call, takes the whole `Runtime` to look things up in, even for a type hint."""
    mods = modules()
    surfaces = [n for n in mods if n.startswith(("relay.web", "relay.soap", "relay.destinations"))]
    users = {n for n in surfaces if "relay.runtime" in imports_of(n, mods[n], set(mods), True)}
    assert users == RUNTIME_USERS
    common = (RELAY / "web" / "common.py").read_text()
    assert "AppKey" not in common  # no app key to fetch a general object through


def test_nothing_stands_in_for_a_part_with_a_namespace() -> None:
    """The CLI gives `Admin` a real `Offline` (the store and the config), not an ad-hoc
    object shaped like the runtime; no module builds a `SimpleNamespace` stand-in."""
    for path in RELAY.rglob("*.py"):
        assert "SimpleNamespace" not in path.read_text(), path


def test_models_is_a_leaf_and_destinations_never_import_the_store() -> None:
    edges = graph()
    assert not {m for m in edges["relay.models"] if m.startswith("relay.")}
    for name, deps in edges.items():
        if name.startswith("relay.destinations"):
            assert not {d for d in deps if d.startswith("relay.store")}, name


def test_importing_the_store_package_loads_no_backend() -> None:
    """`make_store` imports the configured backend; `import relay.store` imports neither."""
    code = (
        "import sys, relay.store, relay.dispatch.dispatcher, relay.destinations.http; "
        "print(sorted(m for m in sys.modules if m in "
        "('relay.store.sqlite', 'relay.store.postgres', 'asyncpg')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_store_sql_spells_delivery_states_from_the_enum() -> None:
    """A literal `state = 2` in SQL would silently disagree with `State` if it ever changed."""
    literal = re.compile(r"\bstate\s*(=|<>|<=|>=|<|>)\s*[0-3]\b")
    found = []
    for path in sorted((RELAY / "store").glob("*.py")):
        for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if token.type == tokenize.STRING:
                for line in token.string.splitlines():
                    if literal.search(line) and "destination = ''" not in line:
                        found.append(f"{path.name}:{token.start[0]}: {line.strip()}")
    assert found == []
