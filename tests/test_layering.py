"""Who may import whom: shared/ is the bottom layer, server/ never reaches into client/, and only the
Flower adapters import Flower."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"shared": "fedkr.shared", "client": "fedkr.client", "server": "fedkr.server", "fedkr": "fedkr"}
#: The only modules that may import flwr: the two apps, the record form they share, the simulation runner, the FedAvg baseline.
FLOWER_ADAPTERS = {"client/flower_app.py", "server/flower_app.py", "fedkr/flower_records.py", "fedkr/simulation.py",
                   "fedkr/bench_fedavg.py"}


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved to their absolute names."""
    folder = path.relative_to(ROOT).parts[0]
    package = PACKAGES[folder].split(".")
    if folder == "fedkr":
        package += list(path.relative_to(ROOT / "fedkr").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def modules(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "v1" not in p.parts)


def _offending(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    out = {}
    for path in modules(folder):
        bad = sorted(m for m in imports_of(path) if m.split(".")[0] in forbidden or m.startswith(forbidden))
        if bad:
            out[str(path.relative_to(ROOT))] = bad
    return out


def test_shared_imports_neither_client_nor_server_nor_flower():
    assert _offending("shared", ("fedkr.client", "fedkr.server", "flwr")) == {}


def test_server_does_not_import_client():
    assert _offending("server", ("fedkr.client",)) == {}


@pytest.mark.parametrize("folder", ["shared", "client", "server", "fedkr"])
def test_only_the_flower_adapters_import_flower(folder):
    found = {name for name in _offending(folder, ("flwr",))}
    assert found <= FLOWER_ADAPTERS, sorted(found - FLOWER_ADAPTERS)


def test_the_checker_sees_relative_imports():
    assert "fedkr.client.site" in imports_of(ROOT / "client" / "gate.py") or "fedkr.client.credentials" in imports_of(
        ROOT / "client" / "gate.py")
    assert "fedkr.shared.codec" in imports_of(ROOT / "shared" / "shard_wire.py")
    assert "flwr.app" in imports_of(ROOT / "fedkr" / "flower_records.py")
