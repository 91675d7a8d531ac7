"""CI's set-up scripts: Docker that cannot start fails CI (unless declared optional)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy import tools


def _broken_engine(tmp_path: Path) -> dict[str, str]:
    """A PATH on which `docker info` never answers and `dockerd` dies at start, as on a
    machine whose kernel refuses to run containers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {
        "docker": "echo 'Cannot connect to the Docker daemon' >&2; exit 1",
        "dockerd": "echo 'failed to start daemon: no cgroups' >&2; exit 1",
        "debootstrap": "exit 0",
    }.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "DOCKER_SETUP_LOG_DIR": str(tmp_path / "logs"),
        "HOME": str(tmp_path),
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="the script starts dockerd only as root")
def test_docker_that_cannot_start_fails_ci_unless_optional(tmp_path: Path) -> None:
    script = tools.ROOT / ".ci" / "docker-setup.sh"
    env = _broken_engine(tmp_path)
    strict = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "dockerd exited at start" in strict.stderr
    optional = subprocess.run(
        ["bash", str(script)],
        env={**env, "DOCKER_SETUP_OPTIONAL": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert optional.returncode == 0 and "dockerd exited at start" in optional.stderr


def test_ci_requires_docker_and_promtool() -> None:
    run = (tools.ROOT / ".ci" / "run").read_text()
    assert "bash .ci/docker-setup.sh" in run and "DOCKER_SETUP_OPTIONAL" not in run
    assert "export BOOKSTREAM_REQUIRE_DOCKER=1" in run
    assert "export BOOKSTREAM_REQUIRE_TOOLS=1" in run  # CI never skips a tool's test
    setup = (tools.ROOT / ".ci" / "prometheus-setup.sh").read_text()
    assert "command -v promtool" in setup
