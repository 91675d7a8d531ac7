"""The LibraryInstance the README tells people to apply is valid for the CRD."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "deploy/helm/bookstream/crds/libraryinstances.bookstream.io.yaml"


def test_readme_library_instance_matches_the_crd() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"cat <<'YAML'.*?\n(apiVersion.*?)\nYAML", readme, re.S)
    assert match, "the README's LibraryInstance example is gone"
    instance = yaml.safe_load(match.group(1))
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    assert instance["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert instance["kind"] == crd["spec"]["names"]["kind"]
    jsonschema.validate(instance, version["schema"]["openAPIV3Schema"])
    # No image override: the CRD's default, which is what `make images` builds.
    assert "image" not in instance["spec"]["lending"]
    assert "bs-bookstream-redis" in instance["spec"]["redis"]["url"]
