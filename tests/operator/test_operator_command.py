"""``bookstream-operator`` says what it is before it does anything: --help and --version
never start an operator (which would watch the current kube context's whole cluster)."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import version
from pathlib import Path

from tests.conftest import VENV_BIN

SETTINGS = Path(__file__).resolve().parents[2] / "operator" / "bookstream_operator" / "settings.py"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # No kube config anywhere: an operator that started would fail loudly, not exit 0.
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [str(VENV_BIN / "bookstream-operator"), *args],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip


def test_help_lists_every_variable_it_reads_and_starts_nothing(tmp_path: Path) -> None:
    shown = _run(tmp_path, "--help")
    assert shown.returncode == 0, shown.stderr
    read = set(re.findall(r'(?<![.\w])get\("([A-Z_]+)"\)', SETTINGS.read_text()))
    assert read, "no BOOKSTREAM_OPERATOR_* variable found in settings.py"
    for name in read:
        assert f"BOOKSTREAM_OPERATOR_{name}" in shown.stdout, name
    for name in ("BOOKSTREAM_LOG_LEVEL", "BOOKSTREAM_LOG_FORMAT", "BOOKSTREAM_REDIS_TLS_CA"):
        assert name in shown.stdout
    assert "Traceback" not in shown.stdout + shown.stderr


def test_version_and_a_mistyped_option(tmp_path: Path) -> None:
    shown = _run(tmp_path, "--version")
    assert shown.stdout.strip() == f"bookstream-operator {version('bookstream-operator')}"
    wrong = _run(tmp_path, "--namespace", "x")
    assert wrong.returncode == 2 and "unrecognized arguments" in wrong.stderr
    assert "Traceback" not in wrong.stderr
