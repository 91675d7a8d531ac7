"""The images, built from this tree on the local base image and run against a real Redis:
the original scenario with lending, shelving and CLI containers; SIGTERM to a busy worker
drains it within the grace period, losing nothing; everything runs as a numeric non-root user."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from bookstream import Client
from bookstream_core.keys import LibraryKeys

from tests.conftest import VENV_BIN, RedisServer, free_port
from tests.deploy import containers
from tests.deploy.containers import UID, Container, docker

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def run_worker(images: dict[str, str]) -> Iterator[Callable[..., Container]]:
    started: list[Container] = []

    def start(
        service: str, redis_url: str, *, name: str | None = None, env: dict[str, str] | None = None
    ) -> Container:
        name = name or f"bs-test-{service}-{uuid.uuid4().hex[:8]}"
        port = free_port()
        container = containers.run_worker(
            images[service],
            name,
            service=service,
            redis_url=redis_url,
            metrics_port=port,
            extra_env=env,
        )
        started.append(container)
        return container

    yield start
    for container in started:
        container.remove()


def test_images_are_small_non_root_single_process(images: dict[str, str]) -> None:
    for name, ref in images.items():
        config = containers.inspect(ref)
        assert config["User"] == f"{UID}:{UID}", (name, config["User"])
        entrypoint = config["Entrypoint"]
        assert isinstance(entrypoint, list) and entrypoint[0].startswith("/opt/venv/bin/"), (
            entrypoint
        )
        size = json.loads(docker("image", "inspect", "--format", "{{json .Size}}", ref).stdout)
        assert size < 400 * 1024 * 1024, (name, size)
        # The process runs as the numeric user, with no pip in the runtime venv.
        probe = docker(
            "run",
            "--rm",
            "--read-only",
            "--entrypoint",
            "/opt/venv/bin/python",
            ref,
            "-c",
            "import os, pathlib;"
            " print(os.getuid(), os.getgid(), pathlib.Path('/opt/venv/bin/pip').exists())",
        )
        assert probe.stdout.split() == [str(UID), str(UID), "False"], (name, probe.stdout)


def test_workers_run_as_one_non_root_process(
    images: dict[str, str],
    redis_factory: Callable[..., RedisServer],
    run_worker: Callable[..., Container],
) -> None:
    server = redis_factory(tcp=True)
    for service in ("lending", "shelving"):
        container = run_worker(service, server.tcp_url)
        top = docker("top", container.name, "-eo", "uid,pid,comm").stdout.strip().splitlines()[1:]
        assert len(top) == 1, top  # one process: the worker itself is PID 1
        assert top[0].split()[0] == str(UID), top
        # The image's HEALTHCHECK is exec form (no shell) and passes against the live worker.
        health = containers.inspect(images[service])["Healthcheck"]
        assert isinstance(health, dict) and health["Test"][0] == "CMD", health
        docker("exec", container.name, *health["Test"][1:])


def _cli(
    images: dict[str, str], server: RedisServer, *args: str
) -> subprocess.CompletedProcess[str]:
    return containers.run_cli(images["cli"], server.tcp_url, *args)


def test_original_scenario_with_containers(
    images: dict[str, str],
    redis_factory: Callable[..., RedisServer],
    run_worker: Callable[..., Container],
) -> None:
    server = redis_factory(tcp=True)
    workers = [run_worker("lending", server.tcp_url), run_worker("shelving", server.tcp_url)]

    def logs() -> str:
        return "\n".join(f"--- {w.name}:\n{w.logs()[-2000:]}" for w in workers)

    first = _cli(
        images,
        server,
        "request",
        "user1",
        "alice-in-wonderland",
        "geb",
        "invisible-cities",
        "--json",
    )
    assert first.returncode == 0, (first.returncode, first.stdout, first.stderr, logs())
    out = json.loads(first.stdout)
    assert out["status"] == "accepted"
    assert sorted(out["lent"]) == ["alice-in-wonderland", "geb", "invisible-cities"]

    second = _cli(images, server, "return", "user1", "invisible-cities", "--json")
    assert second.returncode == 0, (second.stdout, second.stderr, logs())
    out = json.loads(second.stdout)
    assert out["status"] == "processed"
    assert out["returned"] == ["invisible-cities"]

    third = _cli(images, server, "request", "user2", "geb", "invisible-cities", "selfish-gene")
    assert third.returncode == 0, (third.stdout, third.stderr, logs())
    assert "ACCEPTED" in third.stdout
    assert re.search(r"lent:\s+'invisible-cities', 'selfish-gene'", third.stdout), third.stdout
    assert re.search(r"unavailable:\s+'geb' \(lent to another user\)", third.stdout), third.stdout

    where = _cli(images, server, "status", "--book", "geb")
    assert where.stdout.strip() == "'geb': lent to 'user1'", where.stdout + where.stderr

    # Bad input is refused at the edge with exit code 2, inside the container too.
    bad = _cli(images, server, "request", "user1")
    assert bad.returncode == 2, (bad.returncode, bad.stdout, bad.stderr)

    audit = _cli(images, server, "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def _without_outcome(server: RedisServer, ids: list[str]) -> list[str]:
    """The request ids that have no outcome yet (one pipelined EXISTS per id)."""
    keys = LibraryKeys("main")
    client = server.client()
    with client.pipeline(transaction=False) as pipe:
        for rid in ids:
            pipe.exists(keys.outcome(rid))
        found = pipe.execute()
    return [rid for rid, exists in zip(ids, found, strict=True) if not exists]


def test_sigterm_drains_a_busy_worker_within_grace(
    images: dict[str, str],
    redis_factory: Callable[..., RedisServer],
    run_worker: Callable[..., Container],
) -> None:
    server = redis_factory(tcp=True)
    n = 4000
    grace = 20
    with Client(server.tcp_url) as client:
        ids = [client.submit_request(f"u{i % 997}", [f"book-{i}"]) for i in range(n)]
        run_worker("shelving", server.tcp_url)
        lending = run_worker("lending", server.tcp_url)
        # Busy: outcomes are flowing but the backlog is far from done.
        deadline = time.monotonic() + 60
        while len(_without_outcome(server, ids[:50])) == 50:
            assert time.monotonic() < deadline, lending.logs()
            time.sleep(0.05)
        started = time.monotonic()
        docker("stop", "--time", str(grace), lending.name, timeout=grace + 30)
        elapsed = time.monotonic() - started
        state = lending.state()
        left = _without_outcome(server, ids)
        print(f"SIGTERM after {elapsed:.2f}s of draining; {len(left)} of {n} requests left")
        assert left, "the worker was not busy any more when SIGTERM came: raise n"
        assert state["ExitCode"] == 0, (state, lending.logs()[-3000:])
        assert not state["OOMKilled"]
        assert elapsed < grace, f"took {elapsed:.1f}s: SIGKILL at the end of the grace period"
        logs = lending.logs()
        assert "SIGTERM" in logs and "worker stopped" in logs, logs[-3000:]

        # A new worker (a new pod) finishes the rest: every request has exactly its outcome.
        run_worker("lending", server.tcp_url)
        deadline = time.monotonic() + 120
        while left := _without_outcome(server, left):
            assert time.monotonic() < deadline, f"{len(left)} of {n} requests have no outcome"
            time.sleep(0.5)
        outcomes = [client.outcome(rid, timeout=1) for rid in ids]
    assert all(o.status in ("accepted", "denied") for o in outcomes), {o.status for o in outcomes}
    audit = subprocess.run(
        [str(VENV_BIN / "bookstream"), "audit", "--redis", server.tcp_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_the_build_leaves_no_stage_images_and_uses_the_runs_own_tag(
    images: dict[str, str],
) -> None:
    """make images / build.sh: no untagged build-stage image of the build is left behind,
    and the test run's images carry its own tag (a user's `make images` tags are untouched)."""
    assert containers.dangling_build_images() == []
    for ref in images.values():
        assert ref.endswith(f":{containers.TAG}") and chart_app_version() != containers.TAG


def chart_app_version() -> str:
    import yaml

    from tests.deploy import tools

    return str(yaml.safe_load((tools.CHART / "Chart.yaml").read_text())["appVersion"])
