"""Imports go one way: each module of the package uses only modules of lower layers, and the simulator no client logic."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import eni_async

ROOT = Path(eni_async.__file__).parent

# Bottom to top. A module may import only modules of a strictly lower layer (the simulator: see below).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("clock", "models", "signing"),
    ("errors",),  # its exceptions carry results and fates (models)
    (
        "terminal",  # a closed stdin read is an input error
        "validation",
        "settings_check",
        "outcomes",
        "credentials.files",
        "credentials.refresh",
        "transport",
        "policy",
        "throttle",
        "prometheus",
        "dialects.base",
        "tracker.watch",
    ),
    (
        "dialects.v2",
        "dialects.v3",
        "journal.seam",
        "inputs",
        "client_metrics",
        "poller",
        "credentials.remote",
        "credentials.plan",
    ),
    (
        "dialects",
        "calls",
        "credentials.login",
        "journal.migrations",
        "journal.connector",
        "tracker.pacing",
        "tracker.schedule",
    ),
    ("journal.releases",),
    ("journal.sql",),
    ("tracker.describing", "tracker.sizing"),
    ("tracker.looks",),
    ("tracker.confirm",),
    ("settings", "journal.sqlite", "journal.postgres"),
    ("credentials.chain", "journal"),
    ("credentials.identity",),
    ("tracker", "shared_quota", "credentials", "journal.copy", "patience"),
    ("release", "pipeline"),
    ("batch",),
    (
        "client",
        "progress",
        "service.schema",
        "service.registry",
        "service.leases",
        "service.service_client",
        "service.lograte",
        "testing",
    ),
    ("service.holdings", "service.health"),
    # "" is the package itself: its __init__ is the public API
    ("", "cli_batch", "service", "service.openapi", "service.engine", "service.service_metrics"),
    (
        "service.http",
        "cli_journal",
        "cli_demo",
    ),  # the HTTP face: never talks to Tencent but through the engine
    ("service.listener",),  # the socket under it: connections, timeouts, framework errors
    ("service.server",),
    ("service.command",),
    ("cli",),
    ("__main__",),
)
# What the simulator may use outside itself: shared vocabulary and the wire protocol, no client logic.
SIMULATOR_MAY_USE = {"clock", "errors", "models", "signing", "prometheus", "terminal"}


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts).removesuffix("__init__").rstrip(".")


MODULES = {_name(path): path for path in ROOT.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """Every package module ``name`` imports, at any level (functions and TYPE_CHECKING blocks included)."""
    found: set[str] = set()
    path = MODULES[name]
    parts = name.split(".") if name else []
    package = ["eni_async", *(parts if path.name == "__init__.py" else parts[:-1])]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:  # relative: resolved against the module's package
            parts = package[: len(package) - (node.level - 1)] + (
                node.module.split(".") if node.module else []
            )
            node = ast.ImportFrom(module=".".join(parts), names=node.names, level=0)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "eni_async":
            base = node.module.removeprefix("eni_async").lstrip(".")
            subs = {f"{base}.{a.name}".lstrip(".") for a in node.names} & MODULES.keys()
            found.update(subs if subs else {base})
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix("eni_async").lstrip(".")
                for a in node.names
                if a.name.startswith("eni_async")
            )
    found.discard(name)
    return {module for module in found if module in MODULES}


def _layer(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        if name in layer:
            return index
    raise KeyError(name)


CLIENT_SIDE = sorted(name for name in MODULES if not name.startswith("simulator"))


def test_every_module_has_a_layer() -> None:
    """Each client-side module is placed in exactly one layer, so a new module must say where it stands."""
    placed = [name for layer in LAYERS for name in layer]
    assert sorted(placed) == CLIENT_SIDE


@pytest.mark.parametrize("name", CLIENT_SIDE)
def test_a_module_imports_only_lower_layers(name: str) -> None:
    """A client-side module imports only modules below its own layer (the simulator only from the CLI)."""
    mine = _layer(name)
    for used in _imports(name):
        if used.startswith("simulator"):
            assert name in ("cli", "cli_demo"), f"{name} uses the simulator"
            continue
        assert _layer(used) < mine, f"{name} (layer {mine}) imports {used} (layer {_layer(used)})"


@pytest.mark.parametrize("name", sorted(name for name in MODULES if name.startswith("simulator")))
def test_the_simulator_shares_no_client_logic(name: str) -> None:
    """The simulator uses only itself, shared vocabulary (clock, errors, models) and the wire protocol."""
    outside = {used for used in _imports(name) if not used.startswith("simulator")}
    assert outside <= SIMULATOR_MAY_USE, f"{name} uses {sorted(outside - SIMULATOR_MAY_USE)}"


def test_the_simulator_has_no_import_cycle() -> None:
    """Within the simulator, imports form no cycle."""
    graph = {
        name: {u for u in _imports(name) if u.startswith("simulator")}
        for name in MODULES
        if name.startswith("simulator")
    }
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for used in graph[name]:
            visit(used, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())
