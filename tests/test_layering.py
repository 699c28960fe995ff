"""The layering contracts in pyproject.toml ([tool.importlinter]) hold, and a violation fails them.

lint-imports builds its graph by walking the root package's folder, and fedkr maps its top-level
folders onto import names (`client/` is `fedkr.client`, and so on; pyproject's package-dir), so
the check runs on a copy laid out as the import names say.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO

#: Import name -> folder, as pyproject's [tool.setuptools.package-dir] maps them.
PACKAGES = {"fedkr": "fedkr", "fedkr/shared": "shared", "fedkr/client": "client", "fedkr/server": "server"}


def laid_out(root: Path) -> Path:
    for target, folder in PACKAGES.items():
        shutil.copytree(REPO / folder, root / target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                        dirs_exist_ok=True)
    return root


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}  # lint-imports also puts its working folder first on the path
    return subprocess.run([str(lint), "--no-cache", str(REPO / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_layering_contracts_hold(tmp_path):
    result = lint_imports(laid_out(tmp_path))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_layering_violation_fails_the_contracts(tmp_path):
    root = laid_out(tmp_path)
    (root / "fedkr" / "shared" / "leak.py").write_text("from fedkr.server.coordinator import Coordinator\n")
    (root / "fedkr" / "shared" / "flower_leak.py").write_text("def f():\n    import flwr.app\n")
    result = lint_imports(root)
    assert result.returncode == 1
    assert "shared/ imports neither client/ nor server/ BROKEN" in result.stdout
    assert "fedkr.shared.leak -> fedkr.server.coordinator" in result.stdout
    assert "fedkr.shared.flower_leak -> flwr" in result.stdout and "2 broken" in result.stdout
