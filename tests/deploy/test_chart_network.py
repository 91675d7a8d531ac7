"""The chart's NetworkPolicies: each rendered object checked field by field, then evaluated
(as a network plugin would, for the pods the chart, the operator and the examples make) into
who may reach what: Redis only from the library's workers, CLI pods, the setup Job and the
operator; workers only scraped from the monitoring pods; workers and CLI pods reaching only
Redis and the DNS; the operator only the API server, Redis and the DNS."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy import tools
from tests.deploy.tools import Doc

pytestmark = pytest.mark.usefixtures("k8s_bin")

NS = "books"
REDIS_POD = {
    "app.kubernetes.io/name": "bookstream",
    "app.kubernetes.io/instance": "rel",
    "app.kubernetes.io/component": "redis",
}
DNS = [
    {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                },
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
]
CHART_REDIS = [
    {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}},
                "podSelector": {"matchLabels": REDIS_POD},
            }
        ],
        "ports": [{"protocol": "TCP", "port": 6379}],
    }
]
NAME_LABEL = "kubernetes\\.io/metadata\\.name"  # as --set spells a key with dots
ANY_ADDRESS = [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]


def _components(*names: str) -> Doc:
    return {
        "matchLabels": {"app.kubernetes.io/name": "bookstream"},
        "matchExpressions": [
            {"key": "app.kubernetes.io/component", "operator": "In", "values": list(names)}
        ],
    }


def _release_pod(component: str) -> Doc:
    return {"matchLabels": {**REDIS_POD, "app.kubernetes.io/component": component}}


def policies(values: dict[str, str] | None = None) -> dict[tuple[str, str], Doc]:
    objects = tools.render(values or {})
    found = tools.by_kind(objects, "NetworkPolicy")
    for policy in found:
        tools.validate(policy)
        assert policy["metadata"]["labels"]["app.kubernetes.io/part-of"] == "bookstream"
    out = {(p["metadata"]["namespace"], p["metadata"]["name"]): p["spec"] for p in found}
    assert len(out) == len(found), "two NetworkPolicies share a name"
    return out


# --------------------------------------------------------------------------- object by object


def test_the_default_policies_field_by_field() -> None:
    specs = policies()
    assert sorted(specs) == [
        (NS, "rel-bookstream-cli"),
        (NS, "rel-bookstream-operator"),
        (NS, "rel-bookstream-redis"),
        (NS, "rel-bookstream-workers"),
    ]
    assert specs[(NS, "rel-bookstream-redis")] == {
        "podSelector": {"matchLabels": REDIS_POD},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/metadata.name",
                                    "operator": "In",
                                    "values": [NS],
                                }
                            ]
                        },
                        "podSelector": _components("lending", "shelving", "cli"),
                    },
                    {"podSelector": _release_pod("setup")},
                    {"podSelector": _release_pod("operator")},
                ],
                "ports": [{"protocol": "TCP", "port": 6379}],
            }
        ],
        "egress": [],  # Redis opens no connection
    }
    assert specs[(NS, "rel-bookstream-workers")] == {
        "podSelector": _components("lending", "shelving"),
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                        },
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                    }
                ],
                "ports": [{"protocol": "TCP", "port": 9108}],
            }
        ],
        "egress": CHART_REDIS + DNS,
    }
    assert specs[(NS, "rel-bookstream-cli")] == {
        "podSelector": _components("cli", "setup"),
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": CHART_REDIS + DNS,
    }
    assert specs[(NS, "rel-bookstream-operator")] == {
        "podSelector": _release_pod("operator"),
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [
            {
                "to": ANY_ADDRESS,
                "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}],
            },
            *CHART_REDIS,
            *DNS,
        ],
    }


def test_every_library_namespace_gets_the_worker_and_cli_policies() -> None:
    specs = policies(
        {
            "operator.watchNamespaces": "{books,east}",
            "networkPolicy.libraryNamespaces": "{west,east}",
        }
    )
    for name in ("rel-bookstream-workers", "rel-bookstream-cli"):
        assert sorted(ns for ns, n in specs if n == name) == ["books", "east", "west"]
    # The Redis and the operator stay in the release's namespace, the one place they run.
    assert [ns for ns, n in specs if n in ("rel-bookstream-redis", "rel-bookstream-operator")] == [
        NS,
        NS,
    ]
    (peer, *_) = specs[(NS, "rel-bookstream-redis")]["ingress"][0]["from"]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["books", "east", "west"]
    # Workers elsewhere still reach the Redis of the release's namespace.
    assert specs[("west", "rel-bookstream-workers")]["egress"] == CHART_REDIS + DNS


def test_the_monitoring_dns_and_api_server_peers_are_configurable() -> None:
    specs = policies(
        {
            "networkPolicy.metrics.namespaceSelector.matchLabels.team": "observability",
            "networkPolicy.metrics.podSelector.matchLabels.app": "vmagent",
            f"networkPolicy.dns.namespaceSelector.matchLabels.{NAME_LABEL}": "dns",
            "networkPolicy.dns.podSelector.matchLabels.k8s-app": "coredns",
            "networkPolicy.apiServer.cidrs": "{10.0.0.1/32,fd00::1/128}",
            "networkPolicy.apiServer.ports": "{8443}",
        }
    )
    workers = specs[(NS, "rel-bookstream-workers")]
    (peer,) = workers["ingress"][0]["from"]
    # Merged over the defaults (a selector names more labels, Helm keeps the default ones).
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring",
        "team": "observability",
    }
    assert peer["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "prometheus",
        "app": "vmagent",
    }
    dns = workers["egress"][-1]["to"][0]
    assert dns["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "dns"}
    assert dns["podSelector"]["matchLabels"] == {"k8s-app": "coredns"}
    api = specs[(NS, "rel-bookstream-operator")]["egress"][0]
    assert api == {
        "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}, {"ipBlock": {"cidr": "fd00::1/128"}}],
        "ports": [{"protocol": "TCP", "port": 8443}],
    }


def test_an_external_redis_is_reached_where_told_else_on_its_port_only() -> None:
    specs = policies({"redis.enabled": "false"})
    assert (NS, "rel-bookstream-redis") not in specs
    anywhere = [{"to": ANY_ADDRESS, "ports": [{"protocol": "TCP", "port": 6379}]}]
    assert specs[(NS, "rel-bookstream-workers")]["egress"] == anywhere + DNS
    assert specs[(NS, "rel-bookstream-cli")]["egress"] == anywhere + DNS
    assert specs[(NS, "rel-bookstream-operator")]["egress"][1:] == anywhere + DNS

    told = {
        "redis.enabled": "false",
        "networkPolicy.externalRedis.to[0].ipBlock.cidr": "10.0.3.4/32",
        "networkPolicy.externalRedis.port": "6380",
    }
    there = [
        {"to": [{"ipBlock": {"cidr": "10.0.3.4/32"}}], "ports": [{"protocol": "TCP", "port": 6380}]}
    ]
    assert policies(told)[(NS, "rel-bookstream-workers")]["egress"] == there + DNS
    # Both, when the chart's Redis is on and a library uses another one.
    both = {**told, "redis.enabled": "true"}
    assert policies(both)[(NS, "rel-bookstream-cli")]["egress"] == CHART_REDIS + there + DNS


def test_no_policies_when_turned_off() -> None:
    assert not policies({"networkPolicy.enabled": "false"})


def test_the_values_schema_rejects_a_bad_selector() -> None:
    for bad, path in [
        (
            "networkPolicy.metrics.podSelector.matchLabel.app=x",
            "/networkPolicy/metrics/podSelector",
        ),
        ("networkPolicy.apiServer.cidrs={10.0.0.1}", "/networkPolicy/apiServer/cidrs/0"),
        ("networkPolicy.libraryNamespaces={Not_A_Namespace}", "/networkPolicy/libraryNamespaces/0"),
    ]:
        proc = tools.helm("template", "rel", str(tools.CHART), "--set", bad, check=False)
        assert proc.returncode != 0 and path in proc.stderr, (bad, proc.stderr)


# --------------------------------------------------------------------------- who reaches what


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector ({} selects everything)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        has, value = e["key"] in labels, labels.get(e["key"])
        ok = {
            "In": has and value in e.get("values", []),
            "NotIn": not has or value not in e.get("values", []),
            "Exists": has,
            "DoesNotExist": not has,
        }[e["operator"]]
        if not ok:
            return False
    return True


Pod = tuple[str, dict[str, str]]  # namespace, labels


def _peer_admits(peer: Doc, policy_ns: str, pod: Pod | str) -> bool:
    if isinstance(pod, str):  # an address outside the pod network: only ipBlocks name it
        return "ipBlock" in peer and _in_cidr(pod, peer["ipBlock"]["cidr"])
    if "ipBlock" in peer:
        return False  # pod addresses are not modelled: no test relies on a pod by address
    ns, labels = pod
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": ns}):
            return False
    elif ns != policy_ns:
        return False
    return selects(peer.get("podSelector", {}), labels)


def _in_cidr(address: str, cidr: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    net = ipaddress.ip_network(cidr)
    return ip.version == net.version and ip in net


def _allowed(
    specs: dict[tuple[str, str], Doc], direction: str, at: Pod, other: Pod | str, port: Any
) -> bool:
    """May ``at`` take (Ingress) from, or open (Egress) to, ``other`` on ``port`` (an int for
    TCP, or "UDP/53")? A pod no policy of that type selects is not isolated."""
    protocol, number = port.split("/") if isinstance(port, str) else ("TCP", port)
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    isolating = [
        spec
        for (ns, _), spec in specs.items()
        if ns == at[0] and direction in spec["policyTypes"] and selects(spec["podSelector"], at[1])
    ]
    if not isolating:
        return True
    return any(
        any(p["protocol"] == protocol and str(p["port"]) == str(number) for p in rule["ports"])
        and any(_peer_admits(peer, at[0], other) for peer in rule[peers])
        for spec in isolating
        for rule in spec.get(key, [])
    )


def _pods() -> dict[str, Pod]:
    """The pods that run with the chart's defaults, with their real labels: the chart's, the
    operator's workers, the CLI example's, a kubectl-run CLI pod as NOTES.txt makes it."""
    from bookstream_operator import manifests
    from bookstream_operator.spec import parse_spec

    objects = tools.render({"libraryInstance.enabled": "true"})

    def template(kind: str, name: str) -> dict[str, str]:
        labels: dict[str, str] = tools.one(objects, kind, name)["spec"]["template"]["metadata"][
            "labels"
        ]
        return labels

    owned = manifests.desired_objects(
        manifests.Owner("main", NS, "uid"), parse_spec({}), {"lending": 1, "shelving": 1}
    )
    workers = {
        o["metadata"]["name"]: (NS, o["spec"]["template"]["metadata"]["labels"])
        for o in owned
        if o["kind"] == "StatefulSet"
    }
    example = tools.one(tools.load_docs([tools.K8S / "examples" / "cli-job.yaml"]), "Job")
    return {
        "redis": (NS, template("StatefulSet", "rel-bookstream-redis")),
        "operator": (NS, template("Deployment", "rel-bookstream-operator")),
        "setup": (NS, template("Job", "rel-bookstream-setup")),
        "helm-test": (NS, tools.one(objects, "Pod")["metadata"]["labels"]),
        "cli-example": (NS, example["spec"]["template"]["metadata"]["labels"]),
        "kubectl-run-cli": (NS, {"run": "bookstream-cli", **_components_labels("cli")}),
        "lending": workers["main-lending"],
        "shelving": workers["main-shelving"],
        "lending-elsewhere": ("elsewhere", workers["main-lending"][1]),
        "stranger": (NS, {"app": "curious"}),
        "prometheus": ("monitoring", {"app.kubernetes.io/name": "prometheus"}),
        "prometheus-elsewhere": ("default", {"app.kubernetes.io/name": "prometheus"}),
        "dns": ("kube-system", {"k8s-app": "kube-dns"}),
    }


def _components_labels(component: str) -> dict[str, str]:
    """The labels NOTES.txt's `kubectl run --labels=...` gives the CLI pod."""
    return {"app.kubernetes.io/name": "bookstream", "app.kubernetes.io/component": component}


def test_who_reaches_redis() -> None:
    specs, pods = policies(), _pods()
    redis = pods["redis"]
    admitted = {name for name, pod in pods.items() if _allowed(specs, "Ingress", redis, pod, 6379)}
    assert admitted == {
        "lending", "shelving", "operator", "setup", "helm-test", "cli-example", "kubectl-run-cli",
    }  # fmt: skip
    # ... and each of those may open the connection.
    for name in admitted:
        assert _allowed(specs, "Egress", pods[name], redis, 6379), name
    # Nothing on another port, and Redis itself opens nothing.
    assert not _allowed(specs, "Ingress", redis, pods["lending"], 6380)
    assert not _allowed(specs, "Egress", redis, pods["dns"], "UDP/53")
    assert not _allowed(specs, "Egress", redis, "203.0.113.9", 443)


def test_who_reaches_the_workers_and_where_they_go() -> None:
    specs, pods = policies(), _pods()
    lending = pods["lending"]
    scrapers = {n for n, pod in pods.items() if _allowed(specs, "Ingress", lending, pod, 9108)}
    assert scrapers == {"prometheus"}
    # The port the policy opens is the one the operator's workers serve metrics on.
    from bookstream_operator import naming

    assert naming.METRICS_PORT == 9108
    assert not _allowed(specs, "Ingress", lending, pods["prometheus"], 8080)
    for worker in ("lending", "shelving"):
        reached = {
            n for n, pod in pods.items() if _allowed(specs, "Egress", pods[worker], pod, 6379)
        }
        assert reached == {"redis"}, worker
        assert _allowed(specs, "Egress", pods[worker], pods["dns"], "UDP/53")
        assert _allowed(specs, "Egress", pods[worker], pods["dns"], 53)
        assert not _allowed(specs, "Egress", pods[worker], "203.0.113.9", 443)
        assert not _allowed(specs, "Egress", pods[worker], pods["prometheus"], 9090)


def test_cli_pods_reach_only_redis_and_dns_and_serve_nothing() -> None:
    specs, pods = policies(), _pods()
    for name in ("setup", "helm-test", "cli-example", "kubectl-run-cli"):
        pod = pods[name]
        assert not _allowed(specs, "Ingress", pod, pods["stranger"], 8080), name
        assert _allowed(specs, "Egress", pod, pods["redis"], 6379), name
        assert _allowed(specs, "Egress", pod, pods["dns"], "UDP/53"), name
        assert not _allowed(specs, "Egress", pod, pods["lending"], 9108), name
        assert not _allowed(specs, "Egress", pod, "203.0.113.9", 443), name


def test_the_operator_reaches_the_api_server_redis_and_dns_only() -> None:
    specs, pods = policies(), _pods()
    operator = pods["operator"]
    for address in ("10.96.0.1", "172.18.0.2", "fd00::1"):
        assert _allowed(specs, "Egress", operator, address, 443)
        assert _allowed(specs, "Egress", operator, address, 6443)
        assert not _allowed(specs, "Egress", operator, address, 80)
    assert _allowed(specs, "Egress", operator, pods["redis"], 6379)
    assert _allowed(specs, "Egress", operator, pods["dns"], "UDP/53")
    assert not _allowed(specs, "Egress", operator, pods["lending"], 9108)
    assert not any(_allowed(specs, "Ingress", operator, pod, 8080) for pod in pods.values())
    # Narrowed to the API server's address, only that one.
    narrow = policies({"networkPolicy.apiServer.cidrs": "{10.96.0.1/32}"})
    assert _allowed(narrow, "Egress", operator, "10.96.0.1", 443)
    assert not _allowed(narrow, "Egress", operator, "10.96.0.2", 443)


def _notes(values: dict[str, str]) -> str:
    install = ["install", "rel", str(tools.CHART), "--namespace", NS, "--dry-run=client"]
    return tools.helm(*install, *tools.set_args(values)).stdout.split("NOTES:", 1)[1]


def test_the_open_default_way_to_the_api_server_is_said_where_it_is_chosen() -> None:
    """Breaker: with the default cidrs: [] the operator may reach any address on 443 and
    6443. The API server's address differs per cluster, so the default stays, and says so:
    in docs/security.md's "Who can reach what", in deploy/README.md and at install."""
    operator = policies()[(NS, "rel-bookstream-operator")]
    api_server = [rule for rule in operator["egress"] if rule["to"] == ANY_ADDRESS]
    assert [rule["ports"] for rule in api_server] == [
        [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]
    ]
    said = "may reach any address on ports 443 and 6443"
    security = (tools.ROOT / "docs" / "security.md").read_text()
    who = security.split("## Who can reach what", 1)[1].split("\n## ", 1)[0]
    assert said in " ".join(who.split()) and "`networkPolicy.apiServer.cidrs:" in who
    readme = " ".join((tools.ROOT / "deploy" / "README.md").read_text().split())
    assert f"`networkPolicy.apiServer.cidrs: []` the operator {said}" in readme
    assert "ANY address on ports\n  443, 6443" in _notes({})
    assert "ANY address" not in _notes({"networkPolicy.apiServer.cidrs": "{10.96.0.1/32}"})


def test_the_evaluator_isolates_only_selected_pods() -> None:
    """The evaluator's own premises: without policies everything is allowed; a pod no policy
    selects is not isolated; a selected one takes only what a rule admits."""
    specs, pods = policies(), _pods()
    assert _allowed({}, "Ingress", pods["redis"], pods["stranger"], 6379)
    assert _allowed(specs, "Ingress", pods["stranger"], pods["lending-elsewhere"], 1234)
    assert not _allowed(specs, "Ingress", pods["redis"], pods["stranger"], 6379)
