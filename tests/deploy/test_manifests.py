"""deploy/k8s: the kustomize base is the chart rendered as plain manifests (no drift), every
file and the kustomize output are valid Kubernetes objects, and the examples fit the base."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy import tools

pytestmark = pytest.mark.usefixtures("k8s_bin")

BASE = tools.K8S / "base"
EXAMPLES = tools.K8S / "examples"


def test_base_is_generated_from_the_chart(k8s_bin: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(tools.K8S / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HELM": str(k8s_bin / "helm"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_file_is_valid() -> None:
    files = sorted(p for p in tools.K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
    assert len(files) >= 6, files
    for path in files:
        objects = tools.load_docs([path])
        assert objects, path
        for obj in objects:
            try:
                tools.validate(obj)
            except Exception as exc:
                raise AssertionError(f"{path.relative_to(tools.ROOT)}: {exc}") from exc


def test_kustomize_build_is_valid_and_complete() -> None:
    objects = tools.docs(tools.kubectl("kustomize", str(BASE)))
    for obj in objects:
        tools.validate(obj)
    kinds = sorted(o["kind"] for o in objects)
    for kind in (
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "StatefulSet",
        "ConfigMap",
        "Job",  # the setup Job
        "NetworkPolicy",
    ):
        assert kind in kinds, kind
    # No password is in the repository: the base expects the Secrets you create.
    assert "Secret" not in kinds
    namespaced = [
        o
        for o in objects
        if o["kind"]
        not in {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    ]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"bookstream"}
    crb = tools.one(objects, "ClusterRoleBinding")
    assert crb["subjects"][0]["namespace"] == "bookstream"


def test_examples_fit_the_base() -> None:
    base = tools.docs(tools.kubectl("kustomize", str(BASE)))
    redis_service = tools.one(base, "Service", "bookstream-redis")
    setup = tools.one(base, "Job", "bookstream-setup")
    volumes = {v["name"]: v for v in setup["spec"]["template"]["spec"]["volumes"]}
    users_secret = volumes["users"]["secret"]["secretName"]
    (setup_container,) = setup["spec"]["template"]["spec"]["containers"]
    args = setup_container["args"]
    library = args[args.index("--library") + 1]
    url = f"redis://{redis_service['metadata']['name']}.bookstream.svc:6379"

    instance = tools.one(tools.load_docs([EXAMPLES / "library-instance.yaml"]), "LibraryInstance")
    tools.validate_custom(instance)
    assert instance["spec"]["redis"] == {"url": url, "usersSecretRef": {"name": users_secret}}
    assert instance["spec"]["library"] == library

    job = tools.one(tools.load_docs([EXAMPLES / "cli-job.yaml"]), "Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    values = {e["name"]: e["value"] for e in container["env"]}
    assert values["BOOKSTREAM_REDIS_URL"] == url
    assert values["BOOKSTREAM_LIBRARY"] == library
    # The client role of the library the base's setup Job provisions, its password a file.
    assert values["BOOKSTREAM_REDIS_USER"] == f"bs-{library}-client"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "redis-user")
    assert mount["readOnly"] is True
    assert values["BOOKSTREAM_REDIS_PASSWORD_FILE"] == mount["mountPath"] + "/password"
    secret = next(v for v in pod["volumes"] if v["name"] == "redis-user")["secret"]
    assert secret["secretName"] == users_secret
    assert secret["items"] == [{"key": "client", "path": "password"}]
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "cli"
    assert container["args"][0] == "request"


def _pod_specs(objects: list[tools.Doc]) -> list[tuple[str, tools.Doc]]:
    out = []
    for obj in objects:
        spec = obj.get("spec", {})
        template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get(
            "template"
        )
        if template:
            out.append((f"{obj['kind']}/{obj['metadata']['name']}", template["spec"]))
    return out


def test_every_pod_meets_the_restricted_pod_security_standard() -> None:
    """The essentials of Kubernetes' "restricted" profile, for every pod we ship."""
    objects = tools.docs(tools.kubectl("kustomize", str(BASE)))
    objects += tools.load_docs(sorted(EXAMPLES.glob("*.yaml")))
    objects += tools.render({"libraryInstance.enabled": "true"})
    pods = _pod_specs(objects)
    assert {name.split("/")[0] for name, _ in pods} == {"Deployment", "StatefulSet", "Job"}
    for name, pod in pods:
        pod_sc = pod.get("securityContext", {})
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, name
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], name
            assert sc.get("readOnlyRootFilesystem") is True, name
            assert not sc.get("privileged"), name
            assert "resources" in container, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), name
