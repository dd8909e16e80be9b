"""Import contracts: layering you can see, and a fast CLI start-up."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

RF = Path(__file__).resolve().parent.parent / "rf"

# third-party module -> the only rf package allowed to import it
OWNERS = {
    "duckdb": "rf/store",
    "litestar": "rf/server",
    "uvicorn": "rf/server",
    "textual": "rf/tui",
    "typer": "rf/cli",
    "click": "rf/cli",
}
HEAVY = ("duckdb", "litestar", "uvicorn", "textual", "httpx", "typer", "rich")


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (type-only imports never run)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return [n for n in ast.walk(tree) if id(n) not in skip]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_owning_package_imports_each_library() -> None:
    offenders = []
    for path in RF.rglob("*.py"):
        rel = path.relative_to(RF.parent).as_posix()
        for module in _imports(path):
            owner = OWNERS.get(module)
            if owner and not rel.startswith(owner + "/"):
                offenders.append(f"{rel} imports {module} (only {owner} may)")
    assert offenders == []


def test_lower_layers_never_import_upper_layers() -> None:
    forbidden = {
        "rf/store": ("rf.services", "rf.server", "rf.cli", "rf.tui", "rf.client", "rf.runtime"),
        "rf/services": ("rf.server", "rf.cli", "rf.tui", "rf.client"),
        "rf/runtime": ("rf.services", "rf.store", "rf.server", "rf.cli", "rf.tui", "rf.client"),
        "rf/models.py": ("rf.services", "rf.store", "rf.server", "rf.cli", "rf.tui", "rf.client", "rf.runtime"),
        "rf/errors.py": ("rf.",),
        "rf/llm": ("rf.services", "rf.store", "rf.server", "rf.cli", "rf.tui", "rf.client"),
    }
    offenders = []
    for path in RF.rglob("*.py"):
        rel = path.relative_to(RF.parent).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        mods = set()
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                mods.add(node.module)
            elif isinstance(node, ast.Import):
                mods.update(a.name for a in node.names)
        for prefix, banned in forbidden.items():
            if rel.startswith(prefix):
                offenders += [f"{rel} imports {m}" for m in mods if any(m.startswith(b) for b in banned)]
    assert offenders == []


def _loaded_after(code: str) -> list[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return [m for m in json.loads(out.strip().splitlines()[-1]) if m in HEAVY]


def test_version_imports_nothing_heavy() -> None:
    assert _loaded_after("import sys; sys.argv = ['rf', '--version']\nfrom rf.cli import main\nmain()") == []


@pytest.mark.parametrize("module", ["rf", "rf.client", "rf.models", "rf.config", "rf.api", "rf.runtime.context"])
def test_headless_modules_are_light(module: str) -> None:
    assert _loaded_after(f"import {module}") == []


def test_help_does_not_import_the_store_or_server() -> None:
    code = "import sys; sys.argv = ['rf', '--help']\nfrom rf.cli.app import app\ntry:\n    app()\nexcept SystemExit:\n    pass"
    loaded = _loaded_after(code)
    assert "duckdb" not in loaded and "litestar" not in loaded and "textual" not in loaded
