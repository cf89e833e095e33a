"""The import rules of ``docs/ARCHITECTURE.md`` §1, read from the source with ``ast``: a wrong arrow fails.

Every ``import`` counts wherever it stands: at the top of a module, lazily
inside a function, or under ``if TYPE_CHECKING:``. A type-only import is still
a dependency of the design, so it must follow the table and it counts for the
cycle check between layers; it never runs, so it does not count for the cycle
check between modules (``agent.runtime.control`` names ``Agent`` for its types
while ``agent.runtime.agent`` imports the control server). Importing a module
also runs its packages' ``__init__``: the module graph has those edges too.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parent.parent

#: Layer -> what its modules may import from the project besides their own layer. A name that is a
#: layer allows the whole layer; any other name allows that module (and its submodules). Mirrors §1.
ALLOWED: Final[Mapping[str, frozenset[str]]] = {
    "agent": frozenset(),  # the root __init__: __version__ only
    "agent.core": frozenset(),
    "agent.api": frozenset({"agent.core"}),
    "agent.state": frozenset({"agent", "agent.core"}),
    "agent.transports": frozenset({"agent.core", "firmware_bridge"}),
    "agent.mqtt": frozenset({"agent", "agent.core"}),
    "agent.sim": frozenset({"agent", "agent.core", "agent.api", "agent.state.store"}),
    "agent.web": frozenset({"agent.core"}),
    "agent.config": frozenset(
        {"agent.core", "agent.api.settings", "agent.transports.lan_settings", "agent.mqtt.settings"}
        | {
            "agent.transports.radio_settings",
            "agent.mqtt.broker",
            "agent.web.settings",
            "agent.transports.ble_settings",
        }
    ),
    "agent.runtime": frozenset(
        {"agent.core", "agent.api", "agent.state", "agent.transports", "agent.mqtt", "agent.config"}
        | {"agent.web", "agent.mqtt.mirror"}
    ),
    "agent.cli": frozenset(
        {"agent.core", "agent.config", "agent.state", "agent.sim", "agent.runtime", "agent.mqtt"}
        | {"agent.web"}
    ),
    # provision-node issues a node's certificate from the fleet CA directory, as fleet-ca issue does.
    "firmware_bridge": frozenset({"agent.core", "agent.state.fleet_ca"}),
    "bench": frozenset(
        {"agent", "agent.core", "agent.api", "agent.state", "agent.sim", "agent.transports", "agent.mqtt"}
        | {"agent.config", "agent.runtime", "agent.cli", "agent.web", "firmware_bridge"}
    ),
}
#: Layer -> modules it must never import, even where the layer is allowed.
FORBIDDEN: Final[Mapping[str, frozenset[str]]] = {"agent.api": frozenset({"agent.core.engine"})}
#: Layer -> allowed imports that may run only inside a function (start-up cost; paho only when mirroring).
LAZY: Final[Mapping[str, frozenset[str]]] = {
    "agent.runtime": frozenset({"agent.mqtt.mirror"}),
    "agent.cli": frozenset(
        {"agent.config", "agent.state", "agent.sim", "agent.runtime", "agent.mqtt", "agent.web"}
    ),
}
#: Distribution (pyproject ``dependencies``) -> the name the product imports it by.
DEPENDENCIES: Final = {"cbor2": "cbor2", "cryptography": "cryptography", "bleak": "bleak"} | {
    "pyserial": "serial",
    "paho-mqtt": "paho",
    "pynacl": "nacl",
    "bleak-retry-connector": "bleak_retry_connector",
}
#: Third-party names allowed only in these modules.
CONFINED: Final = {
    "paho": frozenset({"agent.mqtt.connection", "agent.mqtt.mirror", "agent.mqtt.fleet_view"}),
    # one verifier, so every agent reaches one verdict; X25519 for sealed links' sessions
    "nacl": frozenset({"agent.core.ed25519", "agent.core.x25519"}),
    "serial": frozenset({"firmware_bridge.ports", "firmware_bridge.driver"}),  # the dongle driver
}
#: Packages of the dev extra (pyproject ``[project.optional-dependencies] dev``) -> the only modules
#: that may import them: modules the wheel ships but only a checkout with the extra can import
#: (each raises a clear error without it, checked by tests/test_package.py).
DEV_ONLY: Final = {"bumble": frozenset({"agent.sim.ble"})}
PRODUCT: Final = ("agent", "firmware_bridge")
#: MicroPython sources for nodes (package data, not host modules): they import each other by bare
#: name on the node; tests/test_micropython_*.py run them under MicroPython instead.
NODE_SOURCES: Final = ROOT / "firmware_bridge" / "micropython"


@dataclass(frozen=True, slots=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (for ``from m import name``: m.name if that is a module, else m)
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``
    lazy: bool  # inside a function


def layer_of(module: str) -> str | None:
    """The layer (a key of ALLOWED) a module belongs to; ``agent`` itself is only the root ``__init__``."""
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or (layer != "agent" and module.startswith(layer + ".")):
            return layer
    return None


def read_imports(module: str, source: str, is_package: bool, modules: Iterable[str]) -> list[Import]:
    """Every import in ``source`` (module-level, in functions, under ``if TYPE_CHECKING:``), resolved."""
    known = set(modules)
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, type_only: bool, lazy: bool) -> None:
        if isinstance(node, ast.If) and re.fullmatch(r"(typing\.)?TYPE_CHECKING", ast.unparse(node.test)):
            for child in node.body:
                visit(child, True, lazy)
            for child in node.orelse:
                visit(child, type_only, lazy)
            return
        lazy = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if isinstance(node, ast.Import):
            found.extend(Import(module, a.name, node.lineno, type_only, lazy) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                whole = f"{base}.{alias.name}"
                found.append(Import(module, whole if whole in known else base, node.lineno, type_only, lazy))
        for inner in ast.iter_child_nodes(node):
            visit(inner, type_only, lazy)

    visit(ast.parse(source), False, False)
    return found


def project_sources() -> dict[str, tuple[str, bool]]:
    """Module name -> (source, is_package) for everything under agent/, firmware_bridge/ and bench/."""
    sources = {}
    for top in (*PRODUCT, "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.is_relative_to(NODE_SOURCES):
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            sources[name] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def all_imports(sources: Mapping[str, tuple[str, bool]]) -> list[Import]:
    return [i for name, (text, pkg) in sources.items() for i in read_imports(name, text, pkg, sources)]


def _in_project(target: str) -> bool:
    return target.split(".")[0] in (*PRODUCT, "bench")


def _names(target: str, modules: frozenset[str]) -> bool:
    """Whether ``target`` is one of ``modules`` or inside one."""
    return any(target == m or target.startswith(m + ".") for m in modules)


def arrow_violations(imports: Iterable[Import]) -> list[str]:
    """One line per import that the table does not allow (project and third-party)."""
    wrong = []
    for i in imports:
        layer = layer_of(i.source)
        where = f"{i.source}:{i.line} imports {i.target}"
        if layer is None:
            wrong.append(f"{i.source} is in no layer of the table")
        elif _in_project(i.target):
            allowed = ALLOWED[layer]
            ok = layer_of(i.target) in {layer, *allowed} or _names(i.target, allowed - ALLOWED.keys())
            if not ok or _names(i.target, FORBIDDEN.get(layer, frozenset())):
                wrong.append(f"{where}: {layer} may not import it")
            elif not (i.lazy or i.type_only) and _names(i.target, LAZY.get(layer, frozenset())):
                wrong.append(f"{where}: {layer} may import it only inside a function")
        elif layer in PRODUCT or layer.startswith("agent."):
            top = i.target.split(".")[0]
            if top in DEV_ONLY:
                if i.source not in DEV_ONLY[top]:
                    wrong.append(f"{where}: {top} is a dev extra, only in {', '.join(sorted(DEV_ONLY[top]))}")
            elif top not in sys.stdlib_module_names and top not in DEPENDENCIES.values():
                wrong.append(f"{where}: not the standard library nor a dependency in pyproject.toml")
            elif top in CONFINED and i.source not in CONFINED[top]:
                wrong.append(f"{where}: {top} only in {', '.join(sorted(CONFINED[top]))}")
    return list(dict.fromkeys(wrong))


def find_cycle(edges: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` as a path [a, b, ..., a], or None if it has none."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(edges):
        if start not in state and (cycle := walk(start)):
            return cycle
    return None


def layer_edges(imports: Iterable[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for i in imports:
        a, b = layer_of(i.source), layer_of(i.target)
        if a and b and a != b:
            edges.setdefault(a, set()).add(b)
    return edges


def module_edges(imports: Iterable[Import]) -> dict[str, set[str]]:
    """Imports that run: the target, and each of its packages the importer is not inside of."""
    edges: dict[str, set[str]] = {}
    for i in imports:
        if i.type_only or not _in_project(i.target):
            continue
        parts = i.target.split(".")
        for depth in range(1, len(parts) + 1):
            runs = ".".join(parts[:depth])
            if runs != i.source and not i.source.startswith(runs + "."):
                edges.setdefault(i.source, set()).add(runs)
    return edges


SOURCES = project_sources()
IMPORTS = all_imports(SOURCES)


def synthetic(sources: Mapping[str, str]) -> list[Import]:
    """The imports of made-up modules (name -> source), resolved against the real ones too."""
    known = {**SOURCES, **{name: (text, False) for name, text in sources.items()}}
    return [i for name, text in sources.items() for i in read_imports(name, text, False, known)]


# The real project.


def test_every_import_follows_the_table() -> None:
    assert arrow_violations(IMPORTS) == []


def test_the_layers_form_no_cycle() -> None:
    assert find_cycle(layer_edges(IMPORTS)) is None


def test_the_modules_form_no_cycle() -> None:
    assert find_cycle(module_edges(IMPORTS)) is None


def test_the_checker_sees_the_whole_project() -> None:
    assert {"agent.config", "agent.core.engine", "agent.mqtt.settings", "firmware_bridge"} <= SOURCES.keys()
    assert {layer_of(m) for m in SOURCES} == ALLOWED.keys()
    assert any(i.source == "agent.cli" and i.target == "agent.runtime.run" for i in IMPORTS)  # lazy


def test_the_table_is_the_one_in_the_architecture_doc() -> None:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## 1. Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:5] for line in section.splitlines() if line.startswith("| `")]
    names = [
        [re.findall(r"`((?:agent|firmware_bridge|bench)(?:\.\w+)*)`", cell) for cell in row] for row in rows
    ]
    assert {n[0][0]: frozenset(n[1] + n[2]) for n in names} == ALLOWED
    assert {n[0][0]: frozenset(n[2]) for n in names if n[2]} == LAZY
    assert {n[0][0]: frozenset(n[3]) for n in names if n[3]} == FORBIDDEN


def test_the_dependencies_are_the_ones_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert {re.split(r"[<>=!~ \[;]", d)[0] for d in project["dependencies"]} == DEPENDENCIES.keys()


# The checker fails for a wrong arrow.


def test_a_wrong_arrow_fails() -> None:
    assert arrow_violations(synthetic({"agent.api.bad": "from agent.core.engine import Engine\n"})) == [
        "agent.api.bad:1 imports agent.core.engine: agent.api may not import it"
    ]
    assert arrow_violations(synthetic({"agent.mqtt.bad": "import agent.config\n"}))
    assert arrow_violations(synthetic({"agent.core.bad": "from agent import __version__\n"}))
    assert arrow_violations(synthetic({"agent.transports.bad": "from bench.common import median\n"}))


def test_a_lazy_or_type_only_import_counts_too() -> None:
    lazy = "def f() -> None:\n    from agent.runtime.agent import Agent\n"
    assert arrow_violations(synthetic({"agent.state.bad": lazy}))
    assert [i.lazy for i in synthetic({"agent.state.bad": lazy})] == [True]
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from agent.config import AgentConfig\n"
    [wrong] = synthetic({"agent.mqtt.bad": typed})[1:]
    assert wrong.type_only
    assert arrow_violations([wrong])


def test_an_import_that_must_be_lazy_fails_at_module_level() -> None:
    eager = "from agent.mqtt.mirror import MqttMirror\n"
    assert arrow_violations(synthetic({"agent.runtime.bad": eager})) == [
        "agent.runtime.bad:1 imports agent.mqtt.mirror: agent.runtime may import it only inside a function"
    ]
    assert arrow_violations(synthetic({"agent.runtime.bad": "def f() -> None:\n    " + eager})) == []
    assert arrow_violations(synthetic({"agent.cli_": "import agent.config\n"}))  # in no layer
    assert arrow_violations(synthetic({"agent.cli": "import agent.config\n"}))


def test_a_relative_import_resolves() -> None:
    [i] = synthetic({"agent.api.bad": "from ..core import engine\n"})
    assert i.target == "agent.core.engine"
    assert arrow_violations([i])


def test_an_undeclared_or_confined_package_fails() -> None:
    assert arrow_violations(synthetic({"agent.runtime.bad": "import matplotlib.pyplot\n"}))
    assert arrow_violations(synthetic({"agent.mqtt.bad": "import paho.mqtt.client\n"}))
    assert arrow_violations(synthetic({"bench.plot": "import matplotlib.pyplot\n"})) == []
    assert arrow_violations(synthetic({"agent.sim.radio_bad": "import bumble.device\n"}))
    assert arrow_violations(synthetic({"agent.sim.ble": "import bumble.device\n"})) == []


def test_a_cycle_fails() -> None:
    modules = synthetic(
        {"agent.core.a": "import agent.core.b\n", "agent.core.b": "from agent.core import a\n"}
    )
    assert find_cycle(module_edges(modules)) == ["agent.core.a", "agent.core.b", "agent.core.a"]
    # A type-only back reference is no module cycle, but it is a cycle between layers.
    typed = "if TYPE_CHECKING:\n    from agent.config import AgentConfig\n"
    both = synthetic({"agent.config": "import agent.mqtt.settings\n", "agent.mqtt.settings": typed})
    assert find_cycle(module_edges(both)) is None
    assert find_cycle(layer_edges(both)) == ["agent.config", "agent.mqtt", "agent.config"]
