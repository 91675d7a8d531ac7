"""The CRD: structural, its defaults equal the operator's, examples and status fit it."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import celpy
import jsonschema
import pytest
import yaml
from bookstream_core.roles import ROLES
from bookstream_operator.connection import redis_settings
from bookstream_operator.credentials import Credentials
from bookstream_operator.naming import GROUP, KIND, PLURAL, VERSION
from bookstream_operator.spec import (
    ROLE_KEY,
    URL_CHARACTERS,
    URL_CREDENTIALS,
    URL_QUERY,
    SpecError,
    parse_spec,
)
from celpy.adapter import json_to_cel
from redis.connection import parse_url

from tests.operator.test_operator_refused_specs import NOT_NAMES

CRD_PATH = (
    Path(__file__).resolve().parents[2]
    / "deploy/helm/bookstream/crds/libraryinstances.bookstream.io.yaml"
)
EXAMPLE: dict[str, Any] = {
    "apiVersion": "bookstream.io/v1alpha1",
    "kind": "LibraryInstance",
    "metadata": {"name": "main", "namespace": "bookstream"},
    "spec": {
        "library": "main",
        "redis": {
            "url": "redis://bookstream-redis:6379",
            "passwordSecretRef": {"name": "bookstream-redis", "key": "password"},
        },
        "lending": {"replicas": 3, "resources": {"requests": {"cpu": "100m"}}},
        "shelving": {"replicas": 2},
        "limits": {"userLimit": 5, "storageCapacity": 20},
        "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 6},
    },
}


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_PATH.read_text()))


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        out += walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        out += walk(node["items"], f"{path}[]")
    return out


def openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI v3.0 'nullable' -> JSON Schema; drop Kubernetes extensions."""
    if isinstance(node, dict):
        out = {k: openapi_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-")}
        if out.pop("nullable", False) and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [openapi_to_jsonschema(v) for v in node]
    return node


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """What the API server's structural defaulting does, for objects."""
    if not isinstance(value, dict) or node.get("type") != "object":
        return value
    result = dict(value)
    for key, child in (node.get("properties") or {}).items():
        if key not in result and "default" in child:
            result[key] = copy.deepcopy(child["default"])
        if key in result:
            result[key] = apply_defaults(child, result[key])
    return result


def test_identity_subresources_and_printer_columns(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"], spec["names"]["kind"]) == (GROUP, "Namespaced", KIND)
    assert spec["names"]["shortNames"] == ["li"]
    (version,) = spec["versions"]
    assert version["name"] == VERSION and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.lending.replicas",
        "statusReplicasPath": ".status.lending.replicas",
        "labelSelectorPath": ".status.lending.selector",
    }
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert {"Library", "Lending", "Shelving", "Age"} <= columns.keys()


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    """Every node has a type unless it preserves unknown fields or is int-or-string; an
    object lists its properties, is a map (additionalProperties) or preserves unknown fields."""
    for path, node in walk(schema):
        assert (
            "type" in node
            or node.get("x-kubernetes-preserve-unknown-fields")
            or node.get("x-kubernetes-int-or-string")
        ), path
        assert node.get("x-kubernetes-preserve-unknown-fields", True) is True, path
        if node.get("type") == "object" and "properties" not in node:
            assert (
                node.get("x-kubernetes-preserve-unknown-fields")
                or isinstance(node.get("additionalProperties"), dict)
                or path == ".metadata"
            ), path
    # kopf's progress records must survive pruning.
    kopf_node = schema["properties"]["status"]["properties"]["kopf"]
    assert kopf_node["x-kubernetes-preserve-unknown-fields"] is True


def test_crd_defaults_equal_the_operators_defaults(schema: dict[str, Any]) -> None:
    spec_schema = schema["properties"]["spec"]
    defaulted = apply_defaults(spec_schema, {})
    assert parse_spec(defaulted) == parse_spec({})
    partial = {"lending": {"replicas": 3}, "redis": {"passwordSecretRef": {"name": "s"}}}
    assert parse_spec(apply_defaults(spec_schema, partial)) == parse_spec(partial)


def test_example_validates_and_bad_specs_do_not(schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(openapi_to_jsonschema(schema))
    validator.validate(EXAMPLE)
    good = copy.deepcopy(EXAMPLE)
    good["spec"]["lending"]["resources"] = {
        "requests": {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": 1},
        "limits": {"cpu": 2, "memory": "1.5Gi"},
    }
    validator.validate(good)
    for bad in (
        {"lending": {"replicas": -1}},
        {"redis": {"url": "http://nope"}},
        {"library": "a{b}"},
        {"image": {"pullPolicy": "Sometimes"}},
        {"redis": {"passwordSecretRef": {"key": "x"}}},
        {"limits": {"userLimit": 0}},
        # A bad quantity would otherwise only fail when the StatefulSet is applied (422).
        {"lending": {"resources": {"requests": {"cpu": "lots"}}}},
        {"shelving": {"resources": {"limits": {"memory": "1 GB"}}}},
    ):
        obj = copy.deepcopy(EXAMPLE)
        obj["spec"] = bad
        assert list(validator.iter_errors(obj)), bad


# The status reconcile() produces, in every branch, is validated against this schema by
# tests/operator/test_operator_kmock.py (test_every_status_reconcile_produces_fits_...).


_MISSING: Any = object()


def _rules(node: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = [(path, rule) for rule in node.get("x-kubernetes-validations") or []]
    for key, child in (node.get("properties") or {}).items():
        out += _rules(child, (*path, key))
    return out


def _at(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def cel_violations(
    schema: dict[str, Any], new: dict[str, Any], old: dict[str, Any] | None
) -> list[str]:
    """The messages of the CRD's CEL rules that the API server would fail for this write.

    Evaluated with cel-python, as the API server does: on the defaulted object; a rule
    that mentions ``oldSelf`` (a transition rule) only on updates, and only where the
    field exists both before and after.
    """
    env = celpy.Environment()
    new = apply_defaults(schema, new)
    old = apply_defaults(schema, old) if old is not None else None
    failed = []
    for path, rule in _rules(schema):
        current = _at(new, path)
        if current is _MISSING:
            continue
        activation = {"self": json_to_cel(current)}
        if "oldSelf" in rule["rule"]:
            before = _MISSING if old is None else _at(old, path)
            if before is _MISSING:
                continue
            activation["oldSelf"] = json_to_cel(before)
        program = env.program(env.compile(rule["rule"]))
        if not bool(program.evaluate(activation)):
            failed.append(str(rule["message"]))
    return failed


def test_identity_fields_are_immutable(schema: dict[str, Any]) -> None:
    """library, redis.url and redis.db: a change is refused, any other change is admitted."""
    base = copy.deepcopy(EXAMPLE)
    base["spec"]["library"] = "east"
    assert cel_violations(schema, base, None) == []
    assert cel_violations(schema, base, base) == []

    def changed(**spec: Any) -> dict[str, Any]:
        obj = copy.deepcopy(base)
        for key, value in spec.items():
            section, _, field = key.partition("__")
            if field:
                obj["spec"].setdefault(section, {})
                if value is None:
                    obj["spec"][section].pop(field, None)
                else:
                    obj["spec"][section][field] = value
            elif value is None:
                obj["spec"].pop(section, None)
            else:
                obj["spec"][section] = value
        return obj

    refused = {
        "library": changed(library="other"),
        "library removed (defaults to main)": changed(library=None),
        "url": changed(redis__url="redis://elsewhere:6379"),
        "db added": changed(redis__db=3),
    }
    for what, new in refused.items():
        messages = cel_violations(schema, new, base)
        assert messages and all("immutable" in m for m in messages), what
    with_db = changed(redis__db=2)
    assert cel_violations(schema, changed(redis__db=5), with_db), "db changed"
    assert cel_violations(schema, changed(redis__db=None), with_db), "db removed"
    assert cel_violations(schema, with_db, with_db) == []
    # Everything else stays changeable: replicas, limits, TLS, the password Secret.
    for new in (
        changed(lending={"replicas": 7}),
        changed(limits={"userLimit": 9}),
        changed(redis__tls=True),
        changed(redis__passwordSecretRef={"name": "other"}),
        changed(redis__passwordSecretRef=None, redis__usersSecretRef={"name": "roles"}),
    ):
        assert cel_violations(schema, new, base) == [], new["spec"]
    # The non-transition rule still applies to creates and updates alike.
    bad = changed(autoscaling={"minReplicas": 5, "maxReplicas": 2})
    assert cel_violations(schema, bad, None) == ["minReplicas must not exceed maxReplicas"]


def test_names_that_kubernetes_cannot_carry_are_refused(schema: dict[str, Any]) -> None:
    """Breaker: a 44-46 character name made StatefulSets that never create pods, a longer
    one or one with a dot a 422 on the metrics Service; the CRD refuses them up front."""
    for name, ok in [
        ("main", True),
        ("a" * 40, True),
        ("library-production-eu-west1-primary-01", True),
        ("a" * 41, False),
        ("9lib", False),
        ("lib.one", False),
        ("Lib", False),
        ("lib-", False),
    ]:
        obj = copy.deepcopy(EXAMPLE)
        obj.setdefault("metadata", {})["name"] = name
        refused = cel_violations(schema, obj, None)
        assert (refused == []) is ok, (name, refused)


#: Redis URLs and what both the CRD and the operator say of them: the message (the first of
#: the CRD's rules that fails), or None when both take the URL. Each refused one is a URL
#: redis-py reads credentials, or settings overriding the address, from.
URLS: dict[str, str | None] = {
    # userinfo: a password, or a user alone
    "redis://:s3cret@redis:6379": URL_CREDENTIALS,
    "redis://bs-main-operator:s3cret@redis:6379/0": URL_CREDENTIALS,
    "rediss://default@redis.books.svc:6380": URL_CREDENTIALS,
    "unix://user:s3cret@/run/redis/redis.sock": URL_CREDENTIALS,
    "redis://a:b@c@redis:6379": URL_CREDENTIALS,
    "redis://redis:6379@evil/0": URL_CREDENTIALS,
    # any query or fragment: redis-py takes every query parameter as a setting
    "redis://redis:6379/0?password=s3cret": URL_QUERY,
    "rediss://redis:6380/?db=1&password=s3cret": URL_QUERY,
    "redis://redis:6379/0?Password=s3cret": URL_QUERY,
    "redis://redis:6379/0?username=alice": URL_QUERY,
    "redis://redis:6379/0?x=1;password=s3cret": URL_QUERY,
    "redis://?host=evil.example&port=443": URL_QUERY,
    "redis://:6379?host=evil.example": URL_QUERY,
    "unix:///run/redis/redis.sock?password=s3cret": URL_QUERY,
    "redis://[::1]:6379?password=s3cret": URL_QUERY,
    "redis://redis:6379/0?db=1&health_check_interval=5": URL_QUERY,
    "redis://redis:6379/0?": URL_QUERY,
    "redis://redis:6379/0#frag": URL_QUERY,
    "redis://redis#@evil:6379": URL_QUERY,
    "redis://a:b@redis:6379/0?password=s3cret": URL_QUERY,
    # what the rules and urlsplit/redis-py could read differently
    "redis://redis:6379/0?pass%77ord=s3cret": URL_CHARACTERS,
    "redis://redis:6379/0?%70assword=s3cret": URL_CHARACTERS,
    "redis://redis:6379/0?password%3Ds3cret": URL_CHARACTERS,
    "redis://redis:6379/0?pass\tword=s3cret": URL_CHARACTERS,
    "redis://redis:6379/0?pass\nword=s3cret": URL_CHARACTERS,
    "redis://u%3Apw@redis:6379": URL_CHARACTERS,
    "redis://evil%2Eexample:6379": URL_CHARACTERS,
    "redis://re dis:6379": URL_CHARACTERS,
    "redis://redis\t:6379": URL_CHARACTERS,
    "redis://rédis:6379": URL_CHARACTERS,
    "unix:///run/redis%20x.sock": URL_CHARACTERS,
    # the address only
    "redis://redis:6379": None,
    "redis://redis": None,
    "rediss://redis.books.svc:6380/2": None,
    "redis://[::1]:6379": None,
    "unix:///run/redis/redis.sock": None,
    "unix:///tmp/odd@name.sock": None,  # an "@" in the path is no userinfo
}
#: Admitted by the CRD (it cannot parse a URL), refused by the operator (InvalidSpec).
MALFORMED = {
    "redis://[::1": "spec.redis.url is not a valid URL: Invalid IPv6 URL",
    "redis://[redis]:6379": "spec.redis.url is not a valid URL",
    "redis://redis:99999": "spec.redis.url: invalid port",
    "redis://redis:port": "spec.redis.url: invalid port",
}


def test_the_crd_and_the_operator_agree_on_every_redis_url(schema: dict[str, Any]) -> None:
    """The CRD's CEL rules and the operator's own check (the same rules, for objects stored
    before them), on one list; no message repeats the URL."""
    for url, message in URLS.items():
        obj = copy.deepcopy(EXAMPLE)
        obj["spec"]["redis"]["url"] = url
        refused = cel_violations(schema, obj, None)
        if message is None:
            assert refused == [], url
            assert parse_spec(obj["spec"]).redis.url == url
            continue
        assert refused and refused[0] == message, (url, refused)
        with pytest.raises(SpecError) as operator:
            parse_spec(obj["spec"])
        assert str(operator.value) == message, url
        # Refused on a live object too, besides the URL being immutable.
        assert message in cel_violations(schema, obj, EXAMPLE), url
    for message in (URL_QUERY, URL_CREDENTIALS):
        assert "usersSecretRef" in message and "passwordSecretRef" in message
    assert "spec.redis.db" in URL_QUERY and "spec.redis.tls" in URL_QUERY


def test_what_the_operator_takes_redis_py_reads_as_the_address_alone() -> None:
    """No user, no password, and the very host and port that the status shows."""
    for url, message in URLS.items():
        if message is not None:
            continue
        settings = redis_settings(parse_spec({"redis": {"url": url}}).redis, Credentials())
        read = parse_url(url)
        assert not {"username", "password"} & read.keys(), url
        scheme = urlsplit(url).scheme
        address = (
            read["path"]
            if scheme == "unix"
            else f"{read.get('host', 'localhost')}:{read.get('port', 6379)}"
        )
        assert settings.describe() == f"{scheme}://{address}", url


def test_a_url_the_crd_cannot_judge_is_an_invalid_spec(schema: dict[str, Any]) -> None:
    """Breaker: "redis://[::1" made parse_spec raise a bare ValueError on every pass, so no
    status was ever written."""
    for url, message in MALFORMED.items():
        obj = copy.deepcopy(EXAMPLE)
        obj["spec"]["redis"]["url"] = url
        assert cel_violations(schema, obj, None) == [], url
        with pytest.raises(SpecError, match=re.escape(message)):
            parse_spec(obj["spec"])


def test_one_kind_of_secret_reference_at_a_time(schema: dict[str, Any]) -> None:
    both = copy.deepcopy(EXAMPLE)
    both["spec"]["redis"]["usersSecretRef"] = {"name": "main-redis-users"}
    message = "give spec.redis.usersSecretRef or spec.redis.passwordSecretRef, not both"
    assert cel_violations(schema, both, None) == [message]
    with pytest.raises(SpecError, match="not both"):
        parse_spec(both["spec"])
    users = copy.deepcopy(both)
    del users["spec"]["redis"]["passwordSecretRef"]
    assert cel_violations(schema, users, None) == []
    assert parse_spec(users["spec"]).redis.users_secret == "main-redis-users"
    validator = jsonschema.Draft7Validator(openapi_to_jsonschema(schema))
    validator.validate(users)
    users["spec"]["redis"]["usersSecretRef"] = {}
    assert list(validator.iter_errors(users)), "a reference without a name"


def _admitted(schema: dict[str, Any], redis: dict[str, Any]) -> tuple[bool, bool]:
    """(the CRD admits it, the operator takes it) for this spec.redis."""
    obj = copy.deepcopy(EXAMPLE)
    obj["spec"]["redis"] = redis
    validator = jsonschema.Draft7Validator(openapi_to_jsonschema(schema))
    crd = not list(validator.iter_errors(obj)) and not cel_violations(schema, obj, None)
    try:
        parse_spec(obj["spec"])
    except SpecError:
        return crd, False
    return crd, True


def test_a_secret_reference_names_only_what_can_be_a_secret(schema: dict[str, Any]) -> None:
    """Names are DNS-1123 subdomains, keys Kubernetes' Secret keys: the CRD's patterns and
    the operator's own check agree (a name becomes a request path: see
    test_operator_refused_specs.py)."""
    names = [("main-redis-users", True), ("bs.redis-users.v2", True), ("a" * 253, True)]
    names += [(name, False) for name in NOT_NAMES]
    for name, ok in names:
        for field in ("passwordSecretRef", "usersSecretRef"):
            assert _admitted(schema, {field: {"name": name}}) == (ok, ok), (field, name)
    keys = [("password", True), ("redis.pw", True), ("_Pw-2", True), ("a" * 253, True)]
    keys += [("", False), ("a/b", False), ("../x", False), ("pw ", False), ("a" * 254, False)]
    for key, ok in keys:
        ref = {"name": "pw", "key": key}
        assert _admitted(schema, {"passwordSecretRef": ref}) == (ok, ok), key


def test_a_password_reference_never_names_a_role_s_key(schema: dict[str, Any]) -> None:
    """A role's key is one worker's password: the CRD's CEL rule and the operator refuse
    each one, with the same message, and nothing else."""
    for role in ROLES:
        obj = copy.deepcopy(EXAMPLE)
        obj["spec"]["redis"]["passwordSecretRef"] = {"name": "main-users", "key": role}
        assert cel_violations(schema, obj, None) == [ROLE_KEY], role
        with pytest.raises(SpecError) as refused:
            parse_spec(obj["spec"])
        assert str(refused.value) == ROLE_KEY
    for key in ("password", "Lending", "operator-pw", "viewer.old"):
        ref = {"name": "main-users", "key": key}
        assert _admitted(schema, {"passwordSecretRef": ref}) == (True, True), key
