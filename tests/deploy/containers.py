"""Docker for the image tests: probe the engine, build the images once per session, run them."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.tools import ROOT

BASE_IMAGE = os.environ.get("BOOKSTREAM_BASE_IMAGE", "bookstream/base:py3.11")
# A tag of the test run's own, removed afterwards: the tests never overwrite (or delete) an
# image a user built with `make images` (bookstream/<name>:<appVersion>).
TAG = os.environ.get("BOOKSTREAM_IMAGE_TAG") or f"test-{os.getpid()}"
BUILD_STEPS = ROOT / ".cache" / "images" / "context" / "build-steps.txt"
UID = 10001


@functools.cache
def engine_problem() -> str | None:
    """Why no Docker engine can be used here, or None when `docker info` answers."""
    docker = shutil.which("docker")
    if docker is None:
        return "the docker CLI is not installed (.ci/docker-setup.sh installs docker.io)"
    proc = subprocess.run(
        [docker, "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        return "no Docker engine answers `docker info` (start one with .ci/docker-setup.sh): " + (
            detail[-1] if detail else f"exit {proc.returncode}"
        )
    return None


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def build_images(names: list[str]) -> dict[str, str]:
    """Make the local base image when missing, then build the images on it (layer cache makes a
    rebuild without changes take seconds). Returns name -> image reference."""
    base = subprocess.run(
        ["bash", str(ROOT / "deploy" / "images" / "base.sh"), BASE_IMAGE],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if base.returncode != 0:
        raise AssertionError(f"deploy/images/base.sh failed:\n{base.stdout}\n{base.stderr}")
    env = {**os.environ, "TAG": TAG, "BASE_IMAGE": BASE_IMAGE}
    build = subprocess.run(
        ["bash", str(ROOT / "deploy" / "images" / "build.sh"), *names],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    if build.returncode != 0:
        raise AssertionError(f"deploy/images/build.sh failed:\n{build.stdout}\n{build.stderr}")
    return {name: f"bookstream/{name}:{TAG}" for name in names}


def remove_images(refs: list[str]) -> None:
    """The test run's own images (never a user's: TAG is the run's own)."""
    if refs and not os.environ.get("BOOKSTREAM_IMAGE_TAG"):
        docker("image", "rm", *refs, check=False)


def dangling_build_images() -> list[str]:
    """Step images of the last build.sh run that were left behind untagged."""
    steps = set(BUILD_STEPS.read_text().split()) if BUILD_STEPS.exists() else set()
    out = docker("image", "ls", "--quiet", "--filter", "dangling=true").stdout.split()
    return sorted(i for i in out if i[:12] in steps)


def inspect(ref: str) -> dict[str, object]:
    out = json.loads(docker("image", "inspect", ref).stdout)
    assert isinstance(out, list) and len(out) == 1
    config = out[0]["Config"]
    assert isinstance(config, dict)
    return config


@dataclass
class Container:
    name: str
    metrics_port: int = 0

    def logs(self) -> str:
        proc = docker("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def state(self) -> dict[str, object]:
        out = json.loads(docker("inspect", "--format", "{{json .State}}", self.name).stdout)
        assert isinstance(out, dict)
        return out

    def running(self) -> bool:
        return bool(self.state().get("Running"))

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


def run_worker(
    image: str,
    name: str,
    *,
    service: str,
    redis_url: str,
    metrics_port: int,
    extra_env: dict[str, str] | None = None,
) -> Container:
    """A worker container as the operator runs it: host network here, read-only root, no
    capabilities, configuration only from the environment."""
    env = {
        "BOOKSTREAM_REDIS_URL": redis_url,
        "BOOKSTREAM_WORKER_NAME": name,
        "BOOKSTREAM_METRICS_PORT": str(metrics_port),
        "BOOKSTREAM_LIBRARY": "main",
        "BOOKSTREAM_LOG_FORMAT": "json",
        **(extra_env or {}),
    }
    args = [
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp:size=16m",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    docker(*args, image)
    container = Container(name, metrics_port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not container.running():
            raise AssertionError(f"{service} container {name} exited:\n{container.logs()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return container
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{service} container {name} never became ready:\n{container.logs()}")


def run_cli(
    image: str, redis_url: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return docker(
        "run",
        "--rm",
        "--network",
        "host",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--env",
        f"BOOKSTREAM_REDIS_URL={redis_url}",
        "--env",
        "BOOKSTREAM_LIBRARY=main",
        image,
        *args,
        timeout=timeout,
        check=False,
    )


def dockerfiles() -> dict[str, Path]:
    return {
        "lending": ROOT / "services" / "lending" / "Dockerfile",
        "shelving": ROOT / "services" / "shelving" / "Dockerfile",
        "cli": ROOT / "cli" / "Dockerfile",
        "operator": ROOT / "operator" / "Dockerfile",
    }
