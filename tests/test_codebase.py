"""The codebase's own rules: imports flow one way (design.md §6), lint, format, types."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "bookstream_core": ROOT / "services/core/bookstream_core",
    "bookstream_lending": ROOT / "services/lending/bookstream_lending",
    "bookstream_shelving": ROOT / "services/shelving/bookstream_shelving",
    "bookstream": ROOT / "cli/bookstream",
    "bookstream_operator": ROOT / "operator/bookstream_operator",
}
# What each package may import of the others.
ALLOWED = {
    "bookstream_core": set(),
    "bookstream_lending": {"bookstream_core"},
    "bookstream_shelving": {"bookstream_core"},
    "bookstream_operator": {"bookstream_core"},
    "bookstream": {"bookstream_core", "bookstream_lending", "bookstream_shelving"},
}
MAX_MODULE_LINES = 400


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_flow_one_way(package: str) -> None:
    for path in PACKAGES[package].rglob("*.py"):
        wrong = imported_packages(path) - ALLOWED[package] - {package}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_service_code_is_started_only_by_the_local_runners() -> None:
    """The CLI reads the services' key layouts; only serve/demo/bench start their code."""
    starters = {"local.py", "demo.py"}
    for path in PACKAGES["bookstream"].rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in (
                "bookstream_lending.service",
                "bookstream_shelving.service",
            ):
                assert path.name in starters, f"{path.relative_to(ROOT)} imports {node.module}"


def test_modules_stay_small() -> None:
    for root in PACKAGES.values():
        for path in root.rglob("*.py"):
            lines = len(path.read_text().splitlines())
            assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / ".venv/bin" / args[0]), *args[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_ruff_lint_and_format() -> None:
    lint = _tool("ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout
    fmt = _tool("ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout


def test_mypy_strict() -> None:
    result = _tool("mypy", *(str(p.relative_to(ROOT)) for p in PACKAGES.values()))
    assert result.returncode == 0, result.stdout
