"""The Helm chart: lint, render with defaults and with every optional part, validate every object
against the Kubernetes OpenAPI schemas and the CRD's schema, and check the values schema."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.deploy import tools
from tests.deploy.tools import Doc

pytestmark = pytest.mark.usefixtures("k8s_bin")

EVERYTHING_ON = {
    "libraryInstance.enabled": "true",
    "libraryInstance.spec.lending.replicas": "3",
    "libraryInstance.spec.limits.userLimit": "7",
    "monitoring.podMonitor.enabled": "true",
    "monitoring.serviceMonitor.enabled": "true",
    "monitoring.grafanaDashboard.enabled": "true",
    "redis.enabled": "true",
    "redis.persistence.enabled": "true",
    "imagePullSecrets[0].name": "regcred",
}
PROM_OPERATOR = ["monitoring.coreos.com/v1"]


def test_helm_lint_defaults_and_everything_on() -> None:
    tools.helm("lint", "--strict", str(tools.CHART))
    lint_on = ["lint", "--strict", str(tools.CHART), *tools.set_args(EVERYTHING_ON)]
    tools.helm(*lint_on)
    tools.helm(*lint_on, "--set", "operator.watchNamespaces={books,other}")


def _validate_all(objects: list[Doc]) -> None:
    assert objects
    for obj in objects:
        tools.validate(obj)


def test_defaults_render_valid_objects() -> None:
    objects = tools.render()
    _validate_all(objects)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",  # Secrets in the release namespace only
            "RoleBinding",
            "Deployment",
            "Secret",  # the Redis admin password
            "Secret",  # the library's role passwords
            "Service",
            "Service",
            "StatefulSet",
            "ConfigMap",  # the dashboard
            "ConfigMap",  # redis.conf
            "Job",  # the setup hook
            "Pod",  # the helm test hook
            "NetworkPolicy",  # Redis
            "NetworkPolicy",  # the operator
            "NetworkPolicy",  # the workers
            "NetworkPolicy",  # CLI pods
        ]
    )
    # No Prometheus Operator: no PodMonitor/ServiceMonitor (the operator annotates the metrics
    # Services for annotation-based scraping instead).
    assert not tools.by_kind(objects, "PodMonitor")
    assert not tools.by_kind(objects, "LibraryInstance")


def test_everything_on_renders_valid_objects() -> None:
    objects = tools.render(EVERYTHING_ON, api_versions=PROM_OPERATOR)
    _validate_all(objects)
    for kind in ("PodMonitor", "ServiceMonitor", "LibraryInstance", "ConfigMap", "StatefulSet"):
        assert tools.by_kind(objects, kind), kind
    library = tools.one(objects, "LibraryInstance")
    spec = library["spec"]
    assert spec["lending"] == {"replicas": 3, "image": "bookstream/lending:0.1.0"}
    assert spec["shelving"] == {"image": "bookstream/shelving:0.1.0"}
    assert spec["limits"] == {"userLimit": 7}
    assert spec["image"] == {"pullSecrets": ["regcred"]}
    # The LibraryInstance points at the chart's Redis and its role users' Secret, never at the
    # admin password.
    users = tools.one(objects, "Secret", "rel-bookstream-redis-users")
    assert spec["redis"] == {
        "url": "redis://rel-bookstream-redis.books.svc:6379",
        "usersSecretRef": {"name": users["metadata"]["name"]},
    }
    service = tools.one(objects, "Service", "rel-bookstream-redis")
    assert service["spec"]["ports"][0]["port"] == 6379


@pytest.mark.parametrize(
    "values",
    [
        {"redis.enabled": "false"},
        {"redis.persistence.enabled": "false"},
        {"redis.auth.existingSecret": "my-redis", "redis.auth.existingSecretKey": "pw"},
        {"rbac.create": "false", "serviceAccount.create": "false", "serviceAccount.name": "ops"},
        {"operator.watchNamespaces": "{books,other}", "libraryInstance.enabled": "true"},
        {"monitoring.grafanaDashboard.enabled": "false", "monitoring.podMonitor.enabled": "false"},
        {"redis.auth.existingUsersSecret": "users", "setup.enabled": "false"},
        {
            "networkPolicy.libraryNamespaces": "{east}",
            "networkPolicy.externalRedis.to[0].ipBlock.cidr": "10.0.3.4/32",
            "networkPolicy.apiServer.cidrs": "{10.0.0.1/32}",
        },
        {"networkPolicy.enabled": "false", "redis.maxmemory": "2gb"},
    ],
    ids=[
        "no-redis",
        "redis-emptydir",
        "existing-secret",
        "no-rbac",
        "namespaced",
        "no-monitoring",
        "own-users-no-setup",
        "network-settings",
        "no-network-policy",
    ],
)
def test_variants_render_valid_objects(values: dict[str, str]) -> None:
    _validate_all(tools.render(values, api_versions=PROM_OPERATOR))


def test_crd_is_installed_by_the_chart_and_structural() -> None:
    objects = tools.render()
    crd = tools.one(objects, "CustomResourceDefinition")
    assert crd == tools.crd()
    spec = crd["spec"]
    assert spec["scope"] == "Namespaced"
    for version in spec["versions"]:
        assert version["schema"]["openAPIV3Schema"]["type"] == "object"
        if version.get("storage"):
            assert "status" in version.get("subresources", {})


def test_redis_statefulset_pvc_config_and_secret() -> None:
    objects = tools.render({"redis.auth.password": "s3cret"})
    sts = tools.one(objects, "StatefulSet", "rel-bookstream-redis")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # Every setting is in the config file (tests/deploy/test_chart_redis.py reads it).
    assert container["command"] == ["redis-server", "/etc/redis/redis.conf"]
    assert "args" not in container and "env" not in container
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "rel-bookstream-redis-config"
    assert volumes["admin"]["secret"]["secretName"] == "rel-bookstream-redis"
    assert volumes["admin"]["secret"]["items"] == [{"key": "password", "path": "password"}]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    secret = tools.one(objects, "Secret", "rel-bookstream-redis")
    import base64

    assert base64.b64decode(secret["data"]["password"]).decode() == "s3cret"


def test_redis_password_is_generated_when_not_given() -> None:
    first = tools.one(tools.render(), "Secret", "rel-bookstream-redis")["data"]["password"]
    second = tools.one(tools.render(), "Secret", "rel-bookstream-redis")["data"]["password"]
    import base64

    assert len(base64.b64decode(first)) == 32
    assert first != second  # random per install (kept on upgrade through `lookup`)


def test_an_existing_admin_secret_replaces_the_generated_one() -> None:
    objects = tools.render(
        {"redis.auth.existingSecret": "mine", "redis.auth.existingSecretKey": "pw"}
    )
    assert [s["metadata"]["name"] for s in tools.by_kind(objects, "Secret")] == [
        "rel-bookstream-redis-users"
    ]
    sts = tools.one(objects, "StatefulSet")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["admin"]["secret"]["secretName"] == "mine"
    assert volumes["admin"]["secret"]["items"] == [{"key": "pw", "path": "password"}]


def _rules(objects: list[Doc], kind: str) -> list[Doc]:
    return [rule for obj in tools.by_kind(objects, kind) for rule in obj["rules"]]


def test_rbac_is_least_privilege() -> None:
    objects = tools.render()
    rules = _rules(objects, "ClusterRole")
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert "*" not in rule["apiGroups"], rule
    # Secrets only through a namespaced Role (test_no_cluster_wide_secret_access).
    assert not [r for r in rules if "secrets" in r["resources"]]
    granted = {
        (group, resource, verb)
        for r in rules
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
    }
    for needed in [
        ("bookstream.io", "libraryinstances", "watch"),
        ("bookstream.io", "libraryinstances/status", "patch"),
        ("apps", "statefulsets", "create"),
        ("apps", "statefulsets", "patch"),
        ("apps", "statefulsets", "get"),
        ("", "services", "create"),
        ("", "configmaps", "patch"),
        ("", "events", "create"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ]:
        assert needed in granted, needed
    # Owned objects go with their LibraryInstance (garbage collection): no delete at all.
    assert not {g for g in granted if g[2] in {"delete", "deletecollection"}}
    # Exactly what the operator documents it calls (kopf peering aside: it runs standalone).
    assert granted == _documented_rbac()

    # Nothing the operator has no business with.
    assert not {g for g in granted if g[1] in {"nodes", "clusterroles", "roles", "rolebindings"}}
    binding = tools.one(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-bookstream-operator", "namespace": "books"}
    ]
    deployment = tools.one(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "rel-bookstream-operator"


def test_block_owner_deletion_comes_with_the_finalizers_permission() -> None:
    """Owned objects set blockOwnerDeletion; the API server then requires the client to be
    allowed to update the owner's finalizers (OwnerReferencesPermissionEnforcement)."""
    from bookstream_operator import manifests
    from bookstream_operator.spec import parse_spec

    owner = manifests.Owner("lib", "books", "uid")
    objects = manifests.desired_objects(owner, parse_spec({}), {"lending": 1, "shelving": 1})
    blocking = [
        ref
        for obj in objects
        for ref in obj["metadata"]["ownerReferences"]
        if ref.get("blockOwnerDeletion")
    ]
    assert blocking, "the operator sets blockOwnerDeletion"
    for values in ({}, {"operator.watchNamespaces": "{books}"}):
        rendered = tools.render(values)
        rules = _rules(rendered, "ClusterRole") + _rules(rendered, "Role")
        assert {
            "apiGroups": ["bookstream.io"],
            "resources": ["libraryinstances/finalizers"],
            "verbs": ["update"],
        } in rules, values


def _documented_rbac() -> set[tuple[str, str, str]]:
    """The (group, resource, verb) rows of operator/README.md's RBAC table (cluster-wide mode:
    without kopf peering, the namespaced mode's own row and Secrets, which are namespaced
    Roles only)."""
    text = (tools.ROOT / "operator" / "README.md").read_text()
    section = text.split("## RBAC", 1)[1].split("\n## ", 1)[0]
    out: set[tuple[str, str, str]] = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        group = re.findall(r"`([^`]*)`", cells[0])[0].strip('"')
        if group == "kopf.dev" or "only with `BOOKSTREAM_OPERATOR_NAMESPACES`" in line:
            continue
        if "namespaced Roles only" in line:
            continue
        for resource in re.findall(r"`([^`]*)`", cells[1]):
            for verb in re.findall(r"`([^`]*)`", cells[2]):
                out.add((group, resource, verb))
    assert out, "no RBAC table in operator/README.md"
    return out


def test_namespaced_mode_uses_roles_per_namespace() -> None:
    objects = tools.render({"operator.watchNamespaces": "{books,other}"})
    roles = tools.by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["books", "other"]
    for role in roles:  # a watched namespace's Role reads the Secrets its instances name
        assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]} in role["rules"]
    assert sorted(b["metadata"]["namespace"] for b in tools.by_kind(objects, "RoleBinding")) == [
        "books",
        "other",
    ]
    # The cluster role keeps only kopf's read-only discovery: CRDs, and namespaces (kopf
    # lists and watches them when given namespace names: kopf._core.reactor.observation).
    cluster = _rules(objects, "ClusterRole")
    assert cluster == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    ]
    env = _operator_env(objects)
    assert env["BOOKSTREAM_OPERATOR_NAMESPACES"] == "books,other"


@pytest.mark.parametrize(
    ("values", "reading"),
    [
        ({}, ["books"]),
        ({"operator.secretNamespaces": "{team-a,team-b}"}, ["books", "team-a", "team-b"]),
        ({"operator.watchNamespaces": "{books,other}"}, ["books", "other"]),
        ({"operator.watchNamespaces": "{other}", "operator.secretNamespaces": "{x}"}, ["other"]),
        (
            {"rbac.create": "false", "serviceAccount.create": "false", "serviceAccount.name": "o"},
            [],
        ),
    ],
    ids=["cluster-wide", "secret-namespaces", "watched", "watched-ignores-list", "no-rbac"],
)
def test_no_cluster_wide_secret_access(values: dict[str, str], reading: list[str]) -> None:
    """In every mode no ClusterRole names Secrets (nor any resource by wildcard), no binding
    hands the operator a cluster role that could, and the only Secret rule is `get` in a Role
    of a named namespace: the release namespace and operator.secretNamespaces cluster-wide,
    the watched namespaces otherwise."""
    objects = tools.render(values)
    for role in tools.by_kind(objects, "ClusterRole"):
        for rule in role["rules"]:
            assert "secrets" not in rule["resources"] and "*" not in rule["resources"], rule
            assert "*" not in rule["apiGroups"] and "*" not in rule["verbs"], rule
    for binding in tools.by_kind(objects, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role", binding  # never a ClusterRole
    secret_rules = [
        (role["metadata"]["namespace"], rule)
        for role in tools.by_kind(objects, "Role")
        for rule in role["rules"]
        if "secrets" in rule["resources"]
    ]
    assert all(
        rule == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
        for _, rule in secret_rules
    ), secret_rules
    assert sorted(ns for ns, _ in secret_rules) == reading


def _operator_env(objects: list[Doc]) -> dict[str, str]:
    container = tools.one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_operator_configuration_comes_from_the_environment() -> None:
    objects = tools.render({"operator.reconcileIntervalSeconds": "30"})
    container = tools.one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "args" not in container and "command" not in container
    env = _operator_env(objects)
    assert env["BOOKSTREAM_OPERATOR_NAMESPACES"] == ""  # cluster-wide
    assert env["BOOKSTREAM_OPERATOR_LIVENESS"] == "http://0.0.0.0:8080/healthz"
    assert env["BOOKSTREAM_OPERATOR_INTERVAL"] == "30"
    # The variables the chart sets are the operator's rows of the one settings table.
    from bookstream_core import settings as table

    operator_rows = {s.variable for s in table.SETTINGS if s.scope == "operator"}
    assert {v for v in env if v.startswith("BOOKSTREAM_OPERATOR_")} <= operator_rows


def test_operator_pod_is_restricted() -> None:
    deployment = tools.one(tools.render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["image"] == "bookstream/operator:0.1.0"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_monitors_only_with_prometheus_operator() -> None:
    values = {"monitoring.podMonitor.enabled": "true", "monitoring.serviceMonitor.enabled": "true"}
    assert not tools.by_kind(tools.render(values), "PodMonitor")
    assert not tools.by_kind(tools.render(values), "ServiceMonitor")
    objects = tools.render(values, api_versions=PROM_OPERATOR)
    pm = tools.one(objects, "PodMonitor")
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "bookstream"}


def test_dashboard_configmap_is_the_dashboard() -> None:
    assert tools.CHART_DASHBOARD.read_text() == tools.DASHBOARD.read_text(), (
        "the chart's dashboards/bookstream.json must equal deploy/grafana/bookstream.json"
    )
    cm = tools.one(tools.render(), "ConfigMap", "rel-bookstream-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["bookstream.json"]) == tools.dashboard()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis.appendfsync": "sometimes"}, "/redis/appendfsync"),
        ({"operator.replicas": "-1"}, "/operator/replicas"),
        ({"operator.replicas": "2"}, "/operator/replicas"),
        ({"operator.reconcileIntervalSeconds": "0"}, "/operator/reconcileIntervalSeconds"),
        ({"operator.logLevel": "loud"}, "/operator/logLevel"),
        ({"operator.watchNamespaces": "{Not_A_Namespace}"}, "/operator/watchNamespaces/0"),
        ({"images.lending.pullPolicy": "Sometimes"}, "/images/lending/pullPolicy"),
        ({"images.cli.repository": ""}, "/images/cli/repository"),
        ({"redis.persistence.size": "lots"}, "/redis/persistence/size"),
        ({"monitoring.podMonitor.interval": "often"}, "/monitoring/podMonitor/interval"),
        ({"libraryInstance.name": "Main_Library"}, "/libraryInstance/name"),
        ({"redis.enabledd": "true"}, "enabledd"),
        ({"unknownKey": "1"}, "unknownKey"),
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, str], message: str) -> None:
    for command in ("template", "lint"):
        args = (
            [command, "rel", str(tools.CHART)]
            if command == "template"
            else [command, str(tools.CHART)]
        )
        proc = tools.helm(*args, *tools.set_args(values), check=False)
        assert proc.returncode != 0, f"helm {command} accepted {values}"
        assert message in proc.stderr + proc.stdout, proc.stderr


def _notes(values: dict[str, str]) -> str:
    proc = tools.helm(
        "install",
        "rel",
        str(tools.CHART),
        "--namespace",
        "books",
        "--dry-run=client",
        *tools.set_args(values),
    )
    return proc.stdout.split("NOTES:", 1)[1]


def test_notes_give_the_next_commands() -> None:
    notes = _notes({})
    assert "kind: LibraryInstance" in notes
    # The LibraryInstance in the notes is valid against the CRD.
    manifest = re.search(r"cat <<'YAML'.*?\n(.*?)\n\s*YAML\n", notes, re.S)
    assert manifest
    import textwrap

    import yaml

    library = yaml.safe_load(textwrap.dedent(manifest.group(1)))
    tools.validate(library)
    assert library["spec"]["redis"]["usersSecretRef"] == {"name": "rel-bookstream-redis-users"}
    assert "passwordSecretRef" not in library["spec"]["redis"]
    # The CLI pod command: image, the chart Redis' URL, the client role: its user, and its
    # password mounted from the role Secret (never on the command line).
    run = notes[notes.index("kubectl -n books run bookstream-cli") :].split("-- request user1 geb")[
        0
    ]
    assert "--image=bookstream/cli:0.1.0" in run
    assert "--env=BOOKSTREAM_REDIS_URL=redis://rel-bookstream-redis.books.svc:6379" in run
    assert "--env=BOOKSTREAM_REDIS_USER=bs-main-client" in run
    assert "--env=BOOKSTREAM_REDIS_PASSWORD_FILE=/etc/bookstream/redis/password" in run
    # The label the NetworkPolicy lets reach Redis.
    assert "--labels=app.kubernetes.io/name=bookstream,app.kubernetes.io/component=cli" in run
    overrides = json.loads(re.search(r"--overrides='(.*?)'", run).group(1))  # type: ignore[union-attr]
    assert overrides["spec"]["volumes"] == [
        {
            "name": "redis-user",
            "secret": {
                "secretName": "rel-bookstream-redis-users",
                "items": [{"key": "client", "path": "password"}],
            },
        }
    ]
    (container,) = overrides["spec"]["containers"]
    assert container["name"] == "bookstream-cli"  # kubectl run names the container after the pod
    assert container["volumeMounts"] == [
        {"name": "redis-user", "mountPath": "/etc/bookstream/redis", "readOnly": True}
    ]
    assert "grafana_dashboard=1" in notes
    assert "port-forward" in notes


def test_notes_with_release_library_instance() -> None:
    notes = _notes({"libraryInstance.enabled": "true"})
    assert "was created with the release" in notes
    assert "-- request user1 geb" in notes


def test_chart_files_are_packaged(tmp_path: Path) -> None:
    """`helm package` keeps the CRD, the dashboard and the values schema in the chart archive."""
    tools.helm("package", str(tools.CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("bookstream-*.tgz")
    import tarfile

    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    for needed in (
        "bookstream/crds/libraryinstances.bookstream.io.yaml",
        "bookstream/dashboards/bookstream.json",
        "bookstream/values.schema.json",
        "bookstream/templates/NOTES.txt",
    ):
        assert needed in names


def test_helm_test_hook_audits_the_charts_redis() -> None:
    objects = tools.render({"libraryInstance.spec.library": "east"})
    (pod,) = tools.by_kind(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["args"] == ["audit"]
    assert container["image"] == "bookstream/cli:0.1.0"
    env = {e["name"]: e["value"] for e in container["env"]}
    # The library's read-only user, its password a file from the role Secret.
    assert env == {
        "BOOKSTREAM_REDIS_URL": "redis://rel-bookstream-redis.books.svc:6379",
        "BOOKSTREAM_LIBRARY": "east",
        "BOOKSTREAM_REDIS_USER": "bs-east-viewer",
        "BOOKSTREAM_REDIS_PASSWORD_FILE": "/etc/bookstream/redis/password",
    }
    assert container["volumeMounts"] == [
        {"name": "redis-user", "mountPath": "/etc/bookstream/redis", "readOnly": True}
    ]
    (volume,) = pod["spec"]["volumes"]
    assert volume["secret"]["secretName"] == "rel-bookstream-redis-users"
    assert volume["secret"]["items"] == [{"key": "viewer", "path": "password"}]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "cli"
    # The pod meets the restricted profile like every other pod of the chart.
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert not tools.by_kind(tools.render({"redis.enabled": "false"}), "Pod")


def test_chart_works_as_a_subchart_with_global_values(tmp_path: Path) -> None:
    """An umbrella chart passes `global:` to every subchart; the schema must admit it."""
    umbrella = tmp_path / "umbrella"
    (umbrella / "charts").mkdir(parents=True)
    shutil.copytree(tools.CHART, umbrella / "charts" / "bookstream")
    (umbrella / "Chart.yaml").write_text(
        "apiVersion: v2\nname: umbrella\nversion: 1.0.0\n"
        "dependencies:\n  - name: bookstream\n    version: 0.1.0\n"
    )
    (umbrella / "values.yaml").write_text(
        "global:\n  imageRegistry: registry.example\n  storageClass: fast\n"
        "bookstream:\n  libraryInstance:\n    enabled: true\n"
    )
    out = tools.helm("template", "rel", str(umbrella), "--namespace", "books").stdout
    objects = tools.docs(out)
    _validate_all(objects)
    assert tools.by_kind(objects, "LibraryInstance")
    assert tools.one(objects, "Deployment")["metadata"]["name"] == "rel-bookstream-operator"


def _redis_pod_annotations(values: dict[str, str]) -> dict[str, str]:
    sts = tools.one(tools.render(values), "StatefulSet", "rel-bookstream-redis")
    annotations: dict[str, str] = sts["spec"]["template"]["metadata"]["annotations"]
    return annotations


def test_redis_pods_roll_on_a_config_change_and_only_then() -> None:
    base = _redis_pod_annotations({})["checksum/config"]
    # A generated password is looked up (kept) on upgrades: not part of the checksum, so two
    # renders without a cluster give the same StatefulSet.
    assert _redis_pod_annotations({}) == {"checksum/config": base}
    assert _redis_pod_annotations({"redis.appendfsync": "always"})["checksum/config"] != base
    assert _redis_pod_annotations({"redis.auth.existingSecret": "x"})["checksum/config"] != base
    # Nor a given one (test_chart_redis.py: no object but a Secret depends on it).
    assert _redis_pod_annotations({"redis.auth.password": "one"}) == {"checksum/config": base}
    # With the passwords given, the whole render is stable (GitOps renders with helm template).
    given = {"redis.auth.password": "one", "redis.auth.existingUsersSecret": "users"}
    assert tools.render(given) == tools.render(given)


def test_no_silent_fallback_to_a_default_redis() -> None:
    proc = tools.helm(
        "template",
        "rel",
        str(tools.CHART),
        "--set",
        "redis.enabled=false",
        "--set",
        "libraryInstance.enabled=true",
        check=False,
    )
    assert proc.returncode != 0 and "libraryInstance.spec.redis.url" in proc.stderr
    objects = tools.render(
        {
            "redis.enabled": "false",
            "libraryInstance.enabled": "true",
            "libraryInstance.spec.redis.url": "redis://mine:6379",
        }
    )
    assert tools.one(objects, "LibraryInstance")["spec"]["redis"]["url"] == "redis://mine:6379"


def test_documented_crd_upgrade_step_applies_the_charts_crds() -> None:
    """Helm never upgrades crds/: deploy/README.md's upgrade step must apply exactly them."""
    text = (tools.ROOT / "deploy" / "README.md").read_text()
    section = text.split("### Upgrading (the CRD)", 1)[1].split("\n### ", 1)[0]
    (command,) = [line for line in section.splitlines() if line.startswith("kubectl apply")]
    args = command.split()
    assert "--server-side" in args
    target = tools.ROOT / args[args.index("-f") + 1]
    assert target.resolve() == (tools.CHART / "crds").resolve()
    files = sorted(target.glob("*.yaml"))
    assert files == [tools.CRD_FILE]
    # What it applies is what the chart installs (and what kustomize ships).
    rendered = tools.one(tools.render(), "CustomResourceDefinition")
    assert rendered == tools.crd()
    assert "helm upgrade" in section


WORKER_PLACEMENT = {
    "libraryInstance.enabled": "true",
    "libraryInstance.spec.placement.nodeSelector.pool": "workers",
    "libraryInstance.spec.placement.tolerations[0].key": "dedicated",
    "libraryInstance.spec.placement.tolerations[0].operator": "Exists",
    "libraryInstance.spec.placement.tolerations[0].effect": "NoSchedule",
    "libraryInstance.spec.placement.priorityClassName": "bookstream-high",
    "libraryInstance.spec.placement.topologySpreadConstraints[0].maxSkew": "1",
    "libraryInstance.spec.placement.topologySpreadConstraints[0].topologyKey": "zone",
    "libraryInstance.spec.placement.topologySpreadConstraints[0].whenUnsatisfiable": (
        "DoNotSchedule"
    ),
    "libraryInstance.spec.placement.affinity.podAntiAffinity"
    ".preferredDuringSchedulingIgnoredDuringExecution[0].weight": "10",
    "libraryInstance.spec.placement.affinity.podAntiAffinity"
    ".preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey": "zone",
    "libraryInstance.spec.disruptionBudget.maxUnavailable": "2",
}


def test_worker_placement_and_disruption_budget_through_the_chart() -> None:
    """helm template with the placement values: the LibraryInstance fits the CRD, and what
    the operator makes of it (StatefulSets, PodDisruptionBudgets) fits Kubernetes' schemas."""
    from bookstream_operator import manifests
    from bookstream_operator.spec import parse_spec

    objects = tools.render(WORKER_PLACEMENT)
    _validate_all(objects)
    li = tools.one(objects, "LibraryInstance")
    spec = parse_spec(li["spec"])
    owned = manifests.desired_objects(
        manifests.Owner(li["metadata"]["name"], "books", "uid"), spec, {"lending": 3, "shelving": 2}
    )
    for obj in owned:
        tools.validate(obj)
    pdbs = [o for o in owned if o["kind"] == "PodDisruptionBudget"]
    assert [p["spec"]["maxUnavailable"] for p in pdbs] == [2, 2]
    sts = next(o for o in owned if o["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "workers"}
    assert pod["priorityClassName"] == "bookstream-high"
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["topologySpreadConstraints"][0]["labelSelector"]


def test_the_operators_default_objects_fit_kubernetes_schemas() -> None:
    from bookstream_operator import manifests
    from bookstream_operator.spec import parse_spec

    owner = manifests.Owner("main", "books", "uid")
    # Without a Secret, with one password (a file), with the role Secret (a file per service).
    for redis in ({}, {"passwordSecretRef": {"name": "pw"}}, {"usersSecretRef": {"name": "u"}}):
        spec = parse_spec({"redis": redis})
        for obj in manifests.desired_objects(owner, spec, {"lending": 1, "shelving": 0}):
            tools.validate(obj)


def test_a_long_release_name_gives_names_kubernetes_accepts() -> None:
    """Breaker: a 40-character release made a 66-character Service name and a
    StatefulSet too long for its pods; every rendered name now fits."""
    objects = tools.render(
        EVERYTHING_ON,
        api_versions=PROM_OPERATOR,
        release="library-production-europe-west1-primary1",
    )
    for obj in objects:
        name = obj["metadata"]["name"]
        if obj["kind"] == "CustomResourceDefinition":
            continue
        assert len(name) <= 63, (obj["kind"], name)
        if obj["kind"] == "StatefulSet":
            assert len(name) <= 52, name  # room for the controller-revision-hash label


def test_an_external_redis_does_not_inherit_the_chart_s_password() -> None:
    """Breaker: with the chart's Redis on and the LibraryInstance pointing elsewhere, the
    instance still named the chart's password Secret."""
    objects = tools.render(
        {"libraryInstance.enabled": "true", "libraryInstance.spec.redis.url": "redis://ext:6379"}
    )
    (li,) = [o for o in objects if o["kind"] == "LibraryInstance"]
    assert li["spec"]["redis"] == {"url": "redis://ext:6379"}
    default = [
        o
        for o in tools.render({"libraryInstance.enabled": "true"})
        if o["kind"] == "LibraryInstance"
    ]
    assert "usersSecretRef" in default[0]["spec"]["redis"]  # the chart's own Redis


def test_a_library_instance_names_one_secret() -> None:
    """The chart's Redis with a password Secret of the user's: the chart's role Secret is
    not added beside it (the CRD refuses two references)."""
    (li,) = tools.by_kind(
        tools.render(
            {
                "libraryInstance.enabled": "true",
                "libraryInstance.spec.redis.passwordSecretRef.name": "mine",
            }
        ),
        "LibraryInstance",
    )
    assert li["spec"]["redis"] == {
        "url": "redis://rel-bookstream-redis.books.svc:6379",
        "passwordSecretRef": {"name": "mine"},
    }
