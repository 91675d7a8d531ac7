"""End to end on a real Kubernetes (kind): `make e2e`. Not part of `make test` / CI.

Needs `kind` on PATH, a Docker engine, and internet (kind pulls kindest/node, the cluster pulls
redis:7.2). It builds the four images, creates a kind cluster, loads the images, `helm install`s
the chart with its Redis, applies a LibraryInstance, scales it, runs the CLI pod for the original
scenario, and checks outcomes, the LibraryInstance status and the workers' metrics. The cluster is
deleted at the end (KEEP_CLUSTER=1 keeps it). See deploy/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import containers, tools

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

NAMESPACE = "bookstream"
RELEASE = "bs"
LIBRARY = "main"
# The library's role passwords (the chart's setup Job made the users).
USERS_SECRET = f"{RELEASE}-bookstream-redis-users"
REDIS_URL = f"redis://{RELEASE}-bookstream-redis.{NAMESPACE}.svc:6379"


def _internet_problem() -> str | None:
    """kind pulls its node image from a public registry: is it reachable? (Only asked once
    kind and docker are known to be here.)"""
    try:
        with socket.create_connection(("registry-1.docker.io", 443), timeout=5):
            return None
    except OSError as exc:
        return f"no network to the public image registry ({exc}); the kind test needs internet"


@dataclass
class Cluster:
    name: str
    kubeconfig: Path
    kind: str

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(tools.k8s_bin_dir() / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def helm(self, *args: str) -> str:
        return tools.helm("--kubeconfig", str(self.kubeconfig), *args).stdout


# Session scope, and first in the test's arguments: the skips come before the image build.
@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    kind = shutil.which("kind")
    if kind is None:
        pytest.skip("kind is not on PATH (go install sigs.k8s.io/kind@latest, or a release binary)")
    problem = containers.engine_problem()
    if problem is not None:
        pytest.skip(problem)
    problem = _internet_problem()
    if problem is not None:
        pytest.skip(problem)
    name = f"bookstream-e2e-{uuid.uuid4().hex[:6]}"
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    subprocess.run(
        [
            kind,
            "create",
            "cluster",
            "--name",
            name,
            "--kubeconfig",
            str(kubeconfig),
            "--wait",
            "180s",
        ],
        check=True,
        timeout=900,
    )
    try:
        yield Cluster(name, kubeconfig, kind)
    finally:
        if os.environ.get("KEEP_CLUSTER") != "1":
            subprocess.run([kind, "delete", "cluster", "--name", name], check=False, timeout=300)


def _wait(what: str, check: Any, timeout: float = 300, interval: float = 3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _cli(c: Cluster, image: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI container as NOTES.txt tells users to run it (attached, removed afterwards)."""
    overrides = {
        "spec": {
            "volumes": [
                {
                    "name": "redis-user",
                    "secret": {
                        "secretName": USERS_SECRET,
                        "items": [{"key": "client", "path": "password"}],
                    },
                }
            ],
            "containers": [
                {
                    "name": "bookstream-cli",
                    "volumeMounts": [
                        {
                            "name": "redis-user",
                            "mountPath": "/etc/bookstream/redis",
                            "readOnly": True,
                        }
                    ],
                }
            ],
        }
    }
    return c.kubectl(
        "-n",
        NAMESPACE,
        "run",
        f"bookstream-cli-{uuid.uuid4().hex[:6]}",
        "--rm",
        "-i",
        "--restart=Never",
        "--quiet",
        f"--image={image}",
        "--image-pull-policy=Never",
        f"--env=BOOKSTREAM_REDIS_URL={REDIS_URL}",
        f"--env=BOOKSTREAM_LIBRARY={LIBRARY}",
        f"--env=BOOKSTREAM_REDIS_USER=bs-{LIBRARY}-client",
        "--env=BOOKSTREAM_REDIS_PASSWORD_FILE=/etc/bookstream/redis/password",
        # What the chart's NetworkPolicy lets reach Redis.
        "--labels=app.kubernetes.io/name=bookstream,app.kubernetes.io/component=cli",
        "--override-type=strategic",
        f"--overrides={json.dumps(overrides)}",
        "--",
        *args,
        check=False,
        timeout=300,
    )


def _ready_pods(c: Cluster, component: str) -> list[str]:
    pods = c.json(
        "-n",
        NAMESPACE,
        "get",
        "pods",
        "-l",
        f"app.kubernetes.io/instance={LIBRARY},app.kubernetes.io/component={component}",
    )["items"]
    return sorted(
        p["metadata"]["name"]
        for p in pods
        if any(
            s["type"] == "Ready" and s["status"] == "True"
            for s in p["status"].get("conditions", [])
        )
    )


def test_helm_install_library_scale_cli_metrics(cluster: Cluster, images: dict[str, str]) -> None:
    c = cluster
    for ref in images.values():
        subprocess.run(
            [c.kind, "load", "docker-image", ref, "--name", c.name], check=True, timeout=600
        )
    tag = containers.TAG
    sets = []
    for name in ("operator", "lending", "shelving", "cli"):
        sets += ["--set", f"images.{name}.tag={tag}", "--set", f"images.{name}.pullPolicy=Never"]
    c.helm(
        "install",
        RELEASE,
        str(tools.CHART),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "10m",
        *sets,
    )

    library = {
        "apiVersion": "bookstream.io/v1alpha1",
        "kind": "LibraryInstance",
        "metadata": {"name": LIBRARY, "namespace": NAMESPACE},
        "spec": {
            "library": LIBRARY,
            "redis": {
                "url": REDIS_URL,
                "usersSecretRef": {"name": USERS_SECRET},
            },
            "image": {"pullPolicy": "Never"},
            "lending": {"replicas": 2, "image": images["lending"]},
            "shelving": {"replicas": 1, "image": images["shelving"]},
        },
    }
    tools.validate(library)
    manifest = Path(c.kubeconfig.parent / "library.json")
    manifest.write_text(json.dumps(library))
    c.kubectl("apply", "-f", str(manifest))
    _wait("2 ready lending workers", lambda: len(_ready_pods(c, "lending")) == 2)
    _wait("1 ready shelving worker", lambda: len(_ready_pods(c, "shelving")) == 1)
    c.kubectl(
        "-n",
        NAMESPACE,
        "wait",
        f"libraryinstance/{LIBRARY}",
        "--for=condition=Ready",
        "--timeout=300s",
    )

    # Scale lending through the scale subresource (what an HPA would do).
    c.kubectl("-n", NAMESPACE, "scale", f"libraryinstance/{LIBRARY}", "--replicas=3")
    lending = _wait(
        "3 ready lending workers", lambda: (p := _ready_pods(c, "lending")) and len(p) == 3 and p
    )
    assert lending == [f"{LIBRARY}-lending-{i}" for i in range(3)]

    # The original scenario through the CLI pod.
    first = _cli(
        c,
        images["cli"],
        "request",
        "user1",
        "alice-in-wonderland",
        "geb",
        "invisible-cities",
        "--json",
    )
    assert first.returncode == 0, first.stdout + first.stderr
    out = json.loads(first.stdout.strip().splitlines()[-1])
    assert out["status"] == "accepted" and sorted(out["lent"]) == [
        "alice-in-wonderland",
        "geb",
        "invisible-cities",
    ]
    second = _cli(c, images["cli"], "return", "user1", "invisible-cities", "--json")
    assert second.returncode == 0, second.stdout + second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["returned"] == ["invisible-cities"]
    third = _cli(c, images["cli"], "request", "user2", "geb", "invisible-cities", "selfish-gene")
    assert third.returncode == 0 and "ACCEPTED" in third.stdout, third.stdout + third.stderr
    assert "'geb' (lent to another user)" in third.stdout
    where = _cli(c, images["cli"], "status", "--book", "geb")
    assert "'geb': lent to 'user1'" in where.stdout, where.stdout + where.stderr
    audit = _cli(c, images["cli"], "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr

    # Status: observed, Ready, and naming every worker.
    def status_current() -> dict[str, Any] | None:
        obj = c.json("-n", NAMESPACE, "get", f"libraryinstance/{LIBRARY}")
        status = obj.get("status") or {}
        if status.get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        text = json.dumps(status)
        return status if all(name in text for name in lending) else None

    status = _wait("the status to name all three lending workers", status_current)
    ready = [cond for cond in status.get("conditions", []) if cond["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True", status

    # Metrics, read through the API server's pod proxy: the workers counted the outcomes.
    total = 0.0
    for pod in lending:
        text = c.kubectl(
            "get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}:9108/proxy/metrics"
        ).stdout
        for line in text.splitlines():
            if line.startswith("bookstream_requests_total{") and 'status="accepted"' in line:
                total += float(line.rsplit(" ", 1)[1])
    assert total == 2.0, total

    # Scale back down safely: the removed workers' consumers go away, nothing is pending.
    c.kubectl("-n", NAMESPACE, "scale", f"libraryinstance/{LIBRARY}", "--replicas=1")
    _wait("1 lending worker", lambda: _ready_pods(c, "lending") == [f"{LIBRARY}-lending-0"])
    final = _cli(c, images["cli"], "audit")
    assert final.returncode == 0, final.stdout + final.stderr

    # helm test: the chart's hook audits the library from a pod.
    c.helm("test", RELEASE, "--namespace", NAMESPACE, "--timeout", "5m")

    # The LibraryInstance carries no finalizer: uninstalling the operator first (helm removes
    # it before any custom resource) must not leave it, or the namespace, hanging.
    li = c.json("-n", NAMESPACE, "get", f"libraryinstance/{LIBRARY}")
    assert not li["metadata"].get("finalizers"), li["metadata"]
    c.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "5m")
    c.kubectl("-n", NAMESPACE, "delete", f"libraryinstance/{LIBRARY}", "--timeout=120s")
    c.kubectl("delete", "namespace", NAMESPACE, "--timeout=300s")

    def namespace_gone() -> bool:
        proc = c.kubectl("get", "namespace", NAMESPACE, check=False)
        return proc.returncode != 0 and "NotFound" in proc.stderr

    _wait("the namespace to be deleted", namespace_gone)
