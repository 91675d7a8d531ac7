"""One image naming scheme: `make images` builds exactly what the chart, the kustomize base, the
CRD's defaults, the operator's defaults and every doc use (the chart's appVersion)."""

from __future__ import annotations

import re
import subprocess

import yaml
from bookstream_operator import spec

from tests.deploy import tools

NAMES = ("lending", "shelving", "cli", "operator")
DOCS = [
    tools.ROOT / "README.md",
    tools.ROOT / "deploy" / "README.md",
    tools.ROOT / "operator" / "README.md",
    tools.ROOT / "docs/runbook.md",
    tools.CHART / "templates" / "NOTES.txt",
    tools.CHART / "values.yaml",
    *sorted((tools.ROOT / "deploy" / "k8s").rglob("*.yaml")),
]


def app_version() -> str:
    return str(yaml.safe_load((tools.CHART / "Chart.yaml").read_text())["appVersion"])


def test_make_images_builds_the_charts_app_version_with_an_optional_registry() -> None:
    def dry_run(*args: str) -> str:
        proc = subprocess.run(
            ["make", "-n", "--no-print-directory", "images", *args],
            cwd=tools.ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert f"TAG={app_version()} REGISTRY= " in dry_run()
    assert "REGISTRY=registry.example/team PUSH=1" in dry_run(
        "REGISTRY=registry.example/team", "PUSH=1"
    )
    script = (tools.ROOT / "deploy" / "images" / "build.sh").read_text()
    assert "PREFIX=${REGISTRY:+${REGISTRY%/}/}bookstream" in script
    assert "ref=$PREFIX/$name:$TAG" in script


def test_chart_crd_operator_and_kustomize_defaults_use_the_same_images() -> None:
    version = app_version()
    assert version == spec.DEFAULT_TAG and spec.DEFAULT_REPOSITORY == "bookstream"
    crd_image = tools.crd_schema("v1alpha1")["properties"]["spec"]["properties"]["image"]
    assert crd_image["properties"]["tag"]["default"] == version
    assert crd_image["properties"]["repository"]["default"] == "bookstream"
    rendered = tools.render({"libraryInstance.enabled": "true"})
    deployment = tools.one(rendered, "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"bookstream/operator:{version}"
    )
    li = tools.one(rendered, "LibraryInstance")
    assert li["spec"]["lending"]["image"] == f"bookstream/lending:{version}"
    base = tools.load_docs(sorted((tools.K8S / "base").glob("*.yaml")))
    assert tools.one(base, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"bookstream/operator:{version}"
    )


def test_every_doc_names_the_images_make_images_builds() -> None:
    version = app_version()
    pattern = re.compile(r"bookstream/(lending|shelving|cli|operator|base):([A-Za-z0-9_.-]+)")
    found = 0
    for path in DOCS:
        for name, tag in pattern.findall(path.read_text()):
            if name == "base":
                continue  # the local base image (make image-base), not a product image
            found += 1
            assert tag == version, f"{path.relative_to(tools.ROOT)}: bookstream/{name}:{tag}"
    assert found >= 6
