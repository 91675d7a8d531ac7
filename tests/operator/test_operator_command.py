"""``bookstream-operator`` says what it is before it does anything: --help and --version
never start an operator (which would watch the current kube context's whole cluster)."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import version
from pathlib import Path

from bookstream_core import settings as table
from bookstream_operator.main import missing_credentials

from tests.conftest import VENV_BIN

SOURCES = sorted(
    (Path(__file__).resolve().parents[2] / "operator" / "bookstream_operator").glob("*.py")
)


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
    rows = [s for s in table.SETTINGS if s.scope == "operator" or table.OPERATOR in s.also]
    assert {s.env for s in rows} >= {"OPERATOR_INTERVAL", "OPERATOR_NAMESPACES", "LOG_LEVEL"}
    for row in rows:
        assert row.variable in shown.stdout, row.variable
    # The operator reads, or gives its pods, no BOOKSTREAM_* variable the table lacks.
    read = set(re.findall(r"BOOKSTREAM_[A-Z_]+", " ".join(p.read_text() for p in SOURCES)))
    # (The worker pods' own names come from the downward API, set in their manifests.)
    pods = {"BOOKSTREAM_POD_NAME", "BOOKSTREAM_POD_NAMESPACE", "BOOKSTREAM_REDIS_TLS_"}
    assert read <= {s.variable for s in table.SETTINGS} | pods, read - pods
    assert "Traceback" not in shown.stdout + shown.stderr


def test_help_says_what_each_variable_means_to_the_operator(tmp_path: Path) -> None:
    """The rows it shares with the workers say what they mean to the operator: it has no
    options to name, and it logs no outcomes."""
    shown = _run(tmp_path, "--help").stdout
    environment = shown.split("environment:\n", 1)[1]
    lines = {line.split()[0]: line for line in environment.splitlines() if line.strip()}
    assert "needs BOOKSTREAM_REDIS_TLS_KEY" in lines["BOOKSTREAM_REDIS_TLS_CERT"]
    assert "--" not in environment, environment
    level = lines["BOOKSTREAM_LOG_LEVEL"]
    assert "event it posts on a LibraryInstance" in level, level
    assert "outcome" not in level and "benchmark" not in level, level


def test_version_and_a_mistyped_option(tmp_path: Path) -> None:
    shown = _run(tmp_path, "--version")
    assert shown.stdout.strip() == f"bookstream-operator {version('bookstream-operator')}"
    wrong = _run(tmp_path, "--namespace", "x")
    assert wrong.returncode == 2 and "unrecognized arguments" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_without_credentials_it_says_so_once_and_exits_2(tmp_path: Path) -> None:
    """kopf retried the login every 60 s for ever, each time with a 45-line traceback."""
    for extra, where in (({}, f"{tmp_path}/.kube/config"), ({"KUBECONFIG": "/nonexistent"},
                         "KUBECONFIG=/nonexistent")):  # fmt: skip
        env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **extra}
        done = subprocess.run(
            [str(VENV_BIN / "bookstream-operator")],
            capture_output=True, text=True, env=env, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done
        assert done.stderr == (
            "bookstream-operator: error: no Kubernetes credentials: not in a cluster (no "
            f"KUBERNETES_SERVICE_HOST) and no kubeconfig file ({where} not found)\n"
        )


def test_credentials_are_a_cluster_or_a_kubeconfig_file(tmp_path: Path) -> None:
    config = tmp_path / "config"
    assert missing_credentials({"HOME": str(tmp_path)}) is not None
    assert missing_credentials({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}) is None
    assert missing_credentials({"KUBECONFIG": f"/nonexistent:{config}"}) is not None
    config.write_text("apiVersion: v1\n")
    assert missing_credentials({"KUBECONFIG": f"/nonexistent:{config}"}) is None
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("apiVersion: v1\n")
    assert missing_credentials({"HOME": str(tmp_path)}) is None
