"""Helpers for the deploy tests: helm/kubectl, YAML documents, schema validation, docker."""

from __future__ import annotations

import datetime
import functools
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "bookstream"
CRD_FILE = CHART / "crds" / "libraryinstances.bookstream.io.yaml"
K8S = ROOT / "deploy" / "k8s"
DASHBOARD = ROOT / "deploy" / "grafana" / "bookstream.json"
CHART_DASHBOARD = CHART / "dashboards" / "bookstream.json"
# Validate against the oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
# newest schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())

Doc = dict[str, Any]


@functools.cache
def missing_tool(problem: str) -> NoReturn:
    """A tool the test needs is not here: skip, saying why (make test said so in one line
    before starting), unless this machine must have it (BOOKSTREAM_REQUIRE_TOOLS=1, set by
    .ci/run): then fail."""
    if os.environ.get("BOOKSTREAM_REQUIRE_TOOLS") == "1":
        pytest.fail(f"required here (BOOKSTREAM_REQUIRE_TOOLS=1): {problem}")
    pytest.skip(problem)


def k8s_bin_dir() -> Path:
    """helm and kubectl: the system's, or the npm package's (.ci/k8s-tools.sh)."""
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "k8s-tools.sh")], capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        raise RuntimeError(f".ci/k8s-tools.sh failed:\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(k8s_bin_dir() / "helm"), *args], capture_output=True, text=True, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def kubectl(*args: str) -> str:
    proc = subprocess.run(
        [str(k8s_bin_dir() / "kubectl"), *args], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def set_args(values: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        out += ["--set", f"{key}={value}"]
    return out


def render(
    values: Mapping[str, str] | None = None,
    *,
    api_versions: Sequence[str] = (),
    namespace: str = "books",
    release: str = "rel",
    values_files: Sequence[Path] = (),
) -> list[Doc]:
    args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds"]
    args += set_args(values or {})
    for v in api_versions:
        args += ["--api-versions", v]
    for f in values_files:
        args += ["--values", str(f)]
    return docs(helm(*args).stdout)


def docs(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def load_docs(paths: Iterable[Path]) -> list[Doc]:
    out: list[Doc] = []
    for p in paths:
        out += docs(p.read_text())
    return out


def by_kind(objects: Iterable[Doc], kind: str) -> list[Doc]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: Iterable[Doc], kind: str, name: str | None = None) -> Doc:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@functools.cache
def crd() -> Doc:
    if not CRD_FILE.exists():
        raise AssertionError(f"{CRD_FILE.relative_to(ROOT)} is missing (written with the operator)")
    loaded = yaml.safe_load(CRD_FILE.read_text())
    assert isinstance(loaded, dict) and loaded["kind"] == "CustomResourceDefinition"
    return loaded


def crd_schema(version: str) -> Doc:
    for v in crd()["spec"]["versions"]:
        if v["name"] == version:
            schema: Doc = v["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"the CRD has no version {version}")


def validate_custom(obj: Doc) -> None:
    """A LibraryInstance against the CRD's own structural schema (apiVersion, kind, spec)."""
    spec = crd()["spec"]
    group, _, version = obj["apiVersion"].partition("/")
    assert group == spec["group"] and obj["kind"] == spec["names"]["kind"], obj["kind"]
    jsonschema.validate(obj, _openapi_to_jsonschema(crd_schema(version)))


def _openapi_to_jsonschema(schema: Any) -> Any:
    """Drop the x-kubernetes-* and other OpenAPI-only keys; keep everything JSON Schema knows."""
    if isinstance(schema, dict):
        return {
            k: _openapi_to_jsonschema(v)
            for k, v in schema.items()
            if not k.startswith("x-kubernetes-") and k not in ("nullable",)
        }
    if isinstance(schema, list):
        return [_openapi_to_jsonschema(v) for v in schema]
    return schema


PROMETHEUS_OPERATOR_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}


def validate(obj: Doc) -> None:
    """One object: Kubernetes' OpenAPI schemas (strict: unknown fields are errors) for built-in
    kinds, the CRD's schema for LibraryInstance, shape checks for the Prometheus Operator's."""
    kind = obj.get("kind")
    if kind == "LibraryInstance":
        validate_custom(obj)
        return
    if kind in PROMETHEUS_OPERATOR_KINDS:
        _validate_monitor(obj)
        return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            name = obj.get("metadata", {}).get("name")
            raise AssertionError(
                f"{kind} {name} is invalid for Kubernetes {version}: {exc.message} "
                f"at {'/'.join(str(p) for p in exc.path)}"
            ) from None
    if kind == "CustomResourceDefinition":
        # Every version's schema must itself be a valid JSON Schema once OpenAPI keys are gone.
        for v in obj["spec"]["versions"]:
            jsonschema.Draft4Validator.check_schema(
                _openapi_to_jsonschema(v["schema"]["openAPIV3Schema"])
            )


# The parts of the Prometheus Operator's PodMonitor/ServiceMonitor schema these objects use
# (monitoring.coreos.com/v1; the CRDs are not vendored here).
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string", "pattern": "^/"},
        "interval": {
            "type": "string",
            "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
            "(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
        },
    },
}
_NS_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "any": {"type": "boolean"},
        "matchNames": {"type": "array", "items": {"type": "string"}},
    },
}
_MONITOR_SCHEMAS = {
    "PodMonitor": {"podMetricsEndpoints": _ENDPOINT},
    "ServiceMonitor": {"endpoints": _ENDPOINT},
}


# The PrometheusRule fields these rules use (monitoring.coreos.com/v1).
_RULE_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["groups"],
    "properties": {
        "groups": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "rules"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "rules": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["alert", "expr"],
                            "properties": {
                                "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                "expr": {"type": "string", "minLength": 1},
                                "for": {"type": "string"},
                                "labels": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                                "annotations": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def _validate_monitor(obj: Doc) -> None:
    kind = obj["kind"]
    if kind == "PrometheusRule":
        assert obj["apiVersion"] == "monitoring.coreos.com/v1", obj["apiVersion"]
        assert obj["metadata"]["name"] and obj["metadata"]["namespace"]
        jsonschema.validate(obj["spec"], _RULE_SPEC)
        return
    (endpoints_key, endpoint) = next(iter(_MONITOR_SCHEMAS[kind].items()))
    schema = {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", endpoints_key],
                "properties": {
                    "selector": _SELECTOR,
                    "namespaceSelector": _NS_SELECTOR,
                    endpoints_key: {"type": "array", "minItems": 1, "items": endpoint},
                },
            },
        },
    }
    jsonschema.validate(obj, schema)
    # metadata is a plain ObjectMeta: check it with Kubernetes' own schema through a ConfigMap.
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]},
        K8S_VERSIONS[-1],
        strict=True,
    )


def which(name: str) -> str | None:
    return shutil.which(name)


def dashboard() -> Doc:
    loaded: Doc = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_exprs() -> list[str]:
    exprs: list[str] = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    return exprs


def structural_jsonschema(node: Any) -> Any:
    """A CRD's structural OpenAPI v3 schema as the JSON Schema the API server enforces.

    ``nullable`` admits null; an object with ``properties`` and without
    ``x-kubernetes-preserve-unknown-fields`` admits no other key (the API server would
    prune it: for a status written by the operator that is a bug, so here it is an
    error); other ``x-kubernetes-*`` keys are dropped.
    """
    if isinstance(node, list):
        return [structural_jsonschema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: structural_jsonschema(v) for k, v in node.items() if not k.startswith("x-")}
    if out.pop("nullable", False):
        out["type"] = [out["type"], "null"] if "type" in out else None
        if out["type"] is None:
            del out["type"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if (
        node.get("type") == "object"
        and "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    # Kubernetes' date-time is RFC 3339; jsonschema checks it only with an extra package.
    if isinstance(value, str):
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


def validate_structural(schema: Doc, value: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``value`` fits the structural ``schema``."""
    jsonschema.Draft7Validator(structural_jsonschema(schema), format_checker=_FORMATS).validate(
        value
    )


def status_schema() -> Doc:
    """The LibraryInstance CRD's status schema (its served storage version)."""
    schema: Doc = crd_schema("v1alpha1")["properties"]["status"]
    return schema
