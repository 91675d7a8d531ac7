"""The LibraryInstance the README tells people to apply is valid for the CRD, and its CLI pod
command is the chart's."""

from __future__ import annotations

import re
import subprocess
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
    # The library's role users, never the admin password.
    assert instance["spec"]["redis"]["usersSecretRef"] == {"name": "bs-bookstream-redis-users"}
    assert "passwordSecretRef" not in instance["spec"]["redis"]


def _words(command: str) -> list[str]:
    return command.replace("\\\n", " ").split()


def test_readme_cli_pod_is_the_one_helm_install_prints(k8s_bin: Path) -> None:
    """The README's `kubectl run` of the CLI (release bs, namespace bookstream) is NOTES.txt's."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("kubectl -n bookstream run bookstream-cli")
    command = readme[start : readme.index("-- request user1 geb", start)]
    notes = subprocess.run(
        [str(k8s_bin / "helm"), "install", "bs", str(ROOT / "deploy/helm/bookstream"),
         "--namespace", "bookstream", "--dry-run=client"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.split("NOTES:", 1)[1]  # fmt: skip
    start = notes.index("kubectl -n bookstream run bookstream-cli")
    assert _words(command) == _words(notes[start : notes.index("-- request user1 geb", start)])
