"""Which Secrets the operator reads, and that their values go nowhere else.

The operator against KMock (an in-memory API server, tests/operator/kmock_env.py) and a
real redis-server with ACL users: a labelled, an unlabelled, a forbidden and an
other-namespace Secret; a run with passwords, then a search of everything the operator
wrote (status, events, owned objects, every request it sent) and logged for them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import kmock
import pytest
import redis
from bookstream_core import roles
from bookstream_core.functions import CoreFunctions
from bookstream_operator.credentials import LABEL
from bookstream_operator.kube import METADATA_ONLY, Kube
from bookstream_operator.reconcile import Result

from tests.operator.kmock_env import (
    KEYS,
    NS,
    OTHER_NS,
    condition,
    events,
    eventually,
    find,
    instance,
    li_status,
    one_pass,
    post_li,
)

if TYPE_CHECKING:
    from conftest import RedisServer

#: The role Secret ``bookstream setup --acl`` fills: one password per role.
ROLE_PASSWORDS = {
    "lending": "lend-Pw-4c1f",
    "shelving": "shelf-Pw-9d2e",
    "client": "client-Pw-1a7b",
    "viewer": "viewer-Pw-5e3c",
    "operator": "oper-Pw-7f80",
}
DEFAULT_PASSWORD = "default-Pw-0b6d"
#: What the operator runs against a library (operator/README.md, "What the operator runs
#: in Redis") as ACL rules, and nothing more: a test below runs every pass branch under
#: these and under the role ``bookstream setup --acl`` makes, and expects no refusal in
#: Redis' ACL LOG.
DOCUMENTED_ACL = [
    "resetkeys",
    "%R~bs:{main}:operator:claim",
    "%R~bs:{main}:lending:inbox",
    "%R~bs:{main}:shelving:inbox",
    "%R~bs:{main}:worker:*",
    "%R~bs:{main}:lending:dead",
    "%R~bs:{main}:shelving:dead",
    "%R~bs:{main}:lending:submissions",
    "resetchannels",
    "-@all",
    "+client|setname",
    "+get",
    "+exists",
    "+xlen",
    "+llen",
    "+xinfo|groups",
    "+xinfo|consumers",
    "+xpending",
    "+xrange",
    "+time",
    "(~bs:{main}:operator:claim ~bs:{main}:lending:inbox ~bs:{main}:shelving:inbox"
    " ~bs:{main}:worker:* +fcall|bs1_hand_over +fcall|bs1_compare_and_set)",
    "(~bs:{main}:lending:inbox ~bs:{main}:shelving:inbox +xclaim +xgroup|delconsumer)",
    "(~bs:{main}:operator:claim ~bs:{main}:worker:* +set)",
]


def acl_redis(
    redis_factory: Callable[..., RedisServer], rules: list[str] | None = None
) -> RedisServer:
    """A Redis whose default user has a password of its own, with the operator's user as
    ``bookstream setup --acl`` makes it (or with only ``rules``)."""
    server = redis_factory()
    admin = server.client()
    password = ROLE_PASSWORDS["operator"]
    if rules is not None:
        admin.execute_command(
            "ACL", "SETUSER", "bs-main-operator", "reset", "on", f">{password}", *rules
        )
        # Redis 7.2+: redis-py names its library on connect (and ignores a refusal).
        with contextlib.suppress(redis.ResponseError):  # 7.0 has no CLIENT SETINFO
            admin.execute_command("ACL", "SETUSER", "bs-main-operator", "+client|setinfo")
    else:
        admin.execute_command(
            "ACL", "SETUSER", *roles.setuser_arguments("main", "operator", password)
        )
    admin.config_set("requirepass", DEFAULT_PASSWORD)
    admin.auth(DEFAULT_PASSWORD)
    admin.acl_log_reset()
    return server


def users_spec(server: RedisServer) -> dict[str, Any]:
    """A LibraryInstance's spec on ``server`` with the role Secret ``users``."""
    return {"redis": {"url": server.url, "usersSecretRef": {"name": "users"}}}


def admin(server: RedisServer) -> redis.Redis:
    """The test's own client (Redis' default user), closed with the server's fixture."""
    client = redis.Redis(unix_socket_path=str(server.socket), password=DEFAULT_PASSWORD)
    server.clients.append(client)
    return client


def secret(name: str, data: dict[str, str], ns: str = NS, labelled: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {LABEL: "true"} if labelled else {"app": "other"},
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


async def post_secret(http: aiohttp.ClientSession, body: dict[str, Any]) -> None:
    ns = body["metadata"]["namespace"]
    async with http.post(f"/api/v1/namespaces/{ns}/secrets", json=body) as resp:
        assert resp.status in (200, 201), await resp.text()


def secret_requests(api: kmock.KubernetesEmulator) -> list[tuple[str | None, str | None, bool]]:
    """(namespace, name, metadata only?) of every Secret request the operator made."""
    out = []
    for req in list(api):
        if "aiohttp" in req.headers.get("User-Agent", ""):
            continue  # the test's own
        if req.resource is not None and req.resource.plural == "secrets":
            accept = {k.lower(): v for k, v in req.headers.items()}.get("accept", "")
            out.append((req.namespace, req.name, accept == METADATA_ONLY))
    return out


def ready(api: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    return condition(find(api, "libraryinstances", name), "Ready") or {}


def leaks(text: str, secrets: list[str]) -> list[str]:
    forms = [f for s in secrets for f in (s, base64.b64encode(s.encode()).decode())]
    return [f for f in forms if f in text]


async def test_a_role_secret_is_read_when_labelled_and_its_values_go_nowhere(
    operator: None,
    api: kmock.KubernetesEmulator,
    http: aiohttp.ClientSession,
    redis_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = acl_redis(redis_factory)
    await post_secret(http, secret("main-users", ROLE_PASSWORDS, labelled=False))
    # A labelled Secret of the same name in another namespace is never looked at.
    await post_secret(http, secret("main-users", {"operator": "elsewhere-Pw"}, ns=OTHER_NS))
    li = instance("lib", server.url, "uid-lib")
    li["spec"]["redis"]["usersSecretRef"] = {"name": "main-users"}
    await post_li(http, li)

    # --- unlabelled: refused with a condition that says how to label it; nothing applied,
    # and the Secret was only ever asked for its metadata.
    refused = await eventually(
        lambda: ready(api, "lib").get("reason") == "SecretNotLabelled" and ready(api, "lib"),
        "Ready=False, SecretNotLabelled",
    )
    assert refused["status"] == "False"
    assert (
        f"Secret {NS}/main-users (spec.redis.usersSecretRef) is not labelled"
        in (refused["message"])
    )
    assert "holds nothing but bookstream's role passwords" in refused["message"]
    assert "kubectl" not in refused["message"]  # see the next test
    assert find(api, "statefulsets", "lib-lending") is None
    assert secret_requests(api) and all(
        r == (NS, "main-users", True) for r in secret_requests(api)
    ), secret_requests(api)
    await eventually(
        lambda: any(e.get("reason") == "SecretNotLabelled" for e in events(api)), "the event"
    )

    # --- labelled (no change to the LibraryInstance): the next pass reads it.
    async with http.patch(
        f"/api/v1/namespaces/{NS}/secrets/main-users",
        json={"metadata": {"labels": {LABEL: "true"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    ) as resp:
        assert resp.status == 200, await resp.text()
    reachable = await eventually(
        lambda: (
            (condition(find(api, "libraryinstances", "lib"), "RedisReachable") or {}).get("status")
            == "True"
            and condition(find(api, "libraryinstances", "lib"), "RedisReachable")
        ),
        "RedisReachable=True",
    )
    # Redacted address only; the claim was written, as bs-main-operator (the default user's
    # password is another one).
    assert reachable["message"] == f"unix://{server.socket}"
    assert json.loads(admin(server).get(KEYS.prefix + "operator:claim") or b"{}")["uid"] == (
        "uid-lib"
    )
    await eventually(lambda: find(api, "statefulsets", "lib-shelving"), "the workers")
    assert admin(server).acl_log() == []
    assert all(r[0] == NS for r in secret_requests(api)), "only the instance's namespace"
    assert (NS, "main-users", False) in secret_requests(api)
    li_status(api, "lib")  # fits the CRD's status schema

    # --- nothing the operator wrote, sent or logged holds a password (or its base64).
    secrets = list(ROLE_PASSWORDS.values())
    stored = {
        f"{key[0].plural}/{key[1]}/{key[2]}": obj.raw
        for key, obj in api.objects.items()
        if key[0].plural != "secrets"
    }
    assert not leaks(json.dumps(stored), secrets)
    assert not leaks(json.dumps(events(api)), secrets)
    sent = [
        json.dumps(req.data)
        for req in list(api)
        if "aiohttp" not in req.headers.get("User-Agent", "") and req.data
    ]
    assert sent and not leaks("\n".join(sent), secrets)
    logged = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith(("kmock", "aiohttp"))  # the test's own requests
    )
    assert logged and not leaks(logged, secrets)


async def test_an_unlabelled_admin_secret_is_never_offered_for_labelling(
    api: kmock.KubernetesEmulator,
    redis_factory: Callable[..., RedisServer],
    kube: Kube,
) -> None:
    """Breaker: the message gave `kubectl label secret NAME` for whatever Secret was named,
    the chart's Redis admin Secret included; labelled, its password would go to the URL's
    Redis and into every worker. The message says which Secret to label, and names none."""
    server = redis_factory()
    admin_secret = "bs-bookstream-redis"  # the chart's: key password, the admin's
    api.objects[kmock.resource("", "v1", "secrets"), NS, admin_secret] = secret(
        admin_secret, {"password": DEFAULT_PASSWORD}, labelled=False
    )
    ref = {"name": admin_secret}
    result = await one_pass(kube, {"redis": {"url": server.url, "passwordSecretRef": ref}})
    got = condition({"status": result.status}, "Ready") or {}
    assert got.get("reason") == "SecretNotLabelled"
    message = got["message"]
    assert "label secret" not in message and "kubectl" not in message
    assert "holds nothing but the one password meant for this library" in message
    assert "never one that holds an admin's or another application's password" in message
    assert secret_requests(api) == [(NS, admin_secret, True)]  # its metadata alone


async def test_a_secret_the_operator_may_not_read_is_reported_naming_what_to_grant(
    operator: None,
    api: kmock.KubernetesEmulator,
    http: aiohttp.ClientSession,
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    await post_secret(http, secret("users", ROLE_PASSWORDS))
    who = 'User "system:serviceaccount:bookstream:bookstream-operator"'
    denied = api[f"get /api/v1/namespaces/{NS}/secrets/users"]
    (
        denied
        << 403
        << {
            "kind": "Status",
            "code": 403,
            "message": f'secrets "users" is forbidden: {who} cannot get resource "secrets" in '
            f'API group "" in the namespace "{NS}"',
        }
    )
    li = instance("lib", server.url, "uid-lib")
    li["spec"]["redis"]["usersSecretRef"] = {"name": "users"}
    await post_li(http, li)
    got = await eventually(
        lambda: ready(api, "lib").get("reason") == "SecretForbidden" and ready(api, "lib"),
        "Ready=False, SecretForbidden",
    )
    assert who in got["message"] and "Role and RoleBinding" in got["message"], got
    assert f"namespace {NS}" in got["message"]
    assert find(api, "statefulsets", "lib-lending") is None
    # Retried every interval: a RoleBinding granted later changes no watched object.
    attempts = len(list(denied))
    await eventually(lambda: len(list(denied)) > attempts + 1, "retries")


async def test_a_secret_reference_never_leaves_the_instance_s_namespace(
    operator: None,
    api: kmock.KubernetesEmulator,
    http: aiohttp.ClientSession,
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    await post_secret(http, secret("shared", {"password": "other-ns-Pw"}, ns=OTHER_NS))
    li = instance("lib", server.url, "uid-lib")
    # The CRD has no namespace field (the API server would prune it); KMock keeps it: the
    # operator must ignore it.
    li["spec"]["redis"]["passwordSecretRef"] = {"name": "shared", "namespace": OTHER_NS}
    await post_li(http, li)
    got = await eventually(
        lambda: ready(api, "lib").get("reason") == "SecretNotFound" and ready(api, "lib"),
        "Ready=False, SecretNotFound",
    )
    assert f"Secret {NS}/shared" in got["message"], got
    assert {r[0] for r in secret_requests(api)} == {NS}


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        (None, "SecretNotFound"),
        (secret("users", ROLE_PASSWORDS, labelled=False), "SecretNotLabelled"),
        (secret("users", {"lending": "x"}), "SecretKeyMissing"),
        (secret("users", {"operator": ""}), "SecretKeyInvalid"),
        (secret("users", ROLE_PASSWORDS), "WorkersNotReady"),
    ],
    ids=["missing", "unlabelled", "no-operator-key", "empty", "good"],
)
async def test_each_secret_problem_is_a_ready_reason_retried_every_interval(
    api: kmock.KubernetesEmulator,
    redis_factory: Callable[..., RedisServer],
    stored: dict[str, Any] | None,
    reason: str,
    kube: Kube,
) -> None:
    server = acl_redis(redis_factory)
    if stored is not None:
        api.objects[kmock.resource("", "v1", "secrets"), NS, "users"] = stored
    result = await one_pass(
        kube, {"redis": {"url": server.url, "usersSecretRef": {"name": "users"}}}
    )
    got = condition({"status": result.status}, "Ready") or {}
    assert got.get("reason") == reason, got
    assert not result.permanent_failure  # fixing a Secret changes no watched object
    assert not leaks(json.dumps(result.status) + str(result.events), list(ROLE_PASSWORDS.values()))
    applied = find(api, "statefulsets", "lib-lending")
    assert (applied is not None) == (reason == "WorkersNotReady")


def test_a_secret_in_an_error_text_is_redacted() -> None:
    """Defence in depth: no message is built from a Secret, and none could carry one."""
    result = Result(
        {"conditions": [{"type": "RedisReachable", "message": "ERR bad pw s3cr3t here"}]},
        events=[],
    ).redacted(["s3cr3t", ""])
    assert result.status["conditions"][0]["message"] == "ERR bad pw *** here"


async def every_branch(
    server: RedisServer, api: kmock.KubernetesEmulator, kube: Kube
) -> tuple[list[tuple[str, str]], Result]:
    """Status collection (lag known and unknown, pending), a claim taken over, a scale-down
    of each service retiring a consumer with pending entries: three passes as
    bs-main-operator. Returns each pass's (RedisReachable status, Ready reason) and the
    last pass's result."""
    api.objects[kmock.resource("", "v1", "secrets"), NS, "users"] = secret("users", ROLE_PASSWORDS)
    client = admin(server)
    inbox, shelving = KEYS.inbox("lending"), KEYS.inbox("shelving")
    client.xgroup_create(inbox, "lending", id="0", mkstream=True)
    client.xgroup_create(shelving, "shelving", id="0", mkstream=True)
    ids = [client.xadd(inbox, {"n": str(i)}) for i in range(6)]
    client.xreadgroup("lending", f"{NS}.lib-lending-2", {inbox: ">"}, count=3)
    client.xadd(shelving, {"n": "0"})
    client.xreadgroup("shelving", f"{NS}.lib-shelving-1", {shelving: ">"})
    # Another instance's stale claim: its object is gone, so this one takes the library.
    client.set(
        KEYS.prefix + "operator:claim",
        json.dumps({"uid": "uid-gone", "namespace": NS, "name": "gone"}),
    )
    status: dict[str, Any] = {}
    passes = []
    for generation, replicas in ((1, 3), (2, 3), (3, 1)):
        if generation == 2:
            client.xdel(inbox, ids[4])  # Redis can no longer tell the lag: it is counted
        spec = {**users_spec(server), "lending": {"replicas": replicas}}
        result = await one_pass(
            kube, spec, generation=generation, status=status, now=1_000_000.0 + generation
        )
        status = result.status
        reachable = condition({"status": status}, "RedisReachable") or {}
        ready = condition({"status": status}, "Ready") or {}
        passes.append((reachable.get("status", ""), ready.get("reason", "")))
    return passes, result


@pytest.mark.parametrize("documented", [False, True], ids=["setup-role", "documented"])
async def test_every_pass_branch_runs_under_the_operator_role(
    api: kmock.KubernetesEmulator,
    redis_factory: Callable[..., RedisServer],
    documented: bool,
    kube: Kube,
) -> None:
    """Every branch as bs-main-operator, with the rules ``bookstream setup --acl`` gives it
    and with only the documented ones; Redis' ACL LOG stays empty (nothing was refused)."""
    server = acl_redis(redis_factory, DOCUMENTED_ACL if documented else None)
    passes, result = await every_branch(server, api, kube)
    assert passes == [("True", "WorkersNotReady")] * 3, passes
    assert result.status["lending"]["lagSource"] == "counted"
    retired = [e.message for e in result.events if e.reason == "ConsumersRetired"]
    assert any(m.startswith("lending:") for m in retired), result.events
    client = admin(server)
    assert client.xpending(KEYS.inbox("lending"), "lending")["consumers"] == [
        {"name": f"{NS}.lib-lending-0".encode(), "pending": 3}
    ]
    assert client.xpending(KEYS.inbox("shelving"), "shelving")["consumers"] == [
        {"name": f"{NS}.lib-shelving-0".encode(), "pending": 1}
    ]
    assert json.loads(client.get(KEYS.prefix + "operator:claim") or b"{}")["uid"] == "uid-lib"
    assert client.acl_log() == []


def without_one_right(rules: list[str]) -> list[tuple[str, list[str]]]:
    """``rules`` less one key pattern or command each time, selectors' words included."""
    variants = []
    for i, rule in enumerate(rules):
        if rule in ("resetkeys", "resetchannels", "-@all"):
            continue
        if not rule.startswith("("):
            variants.append((rule, rules[:i] + rules[i + 1 :]))
            continue
        words = rule[1:-1].split()
        for j, word in enumerate(words):
            fewer = "(" + " ".join(words[:j] + words[j + 1 :]) + ")"
            variants.append((f"{word} in {words[-1]}", [*rules[:i], fewer, *rules[i + 1 :]]))
    return variants


@pytest.mark.parametrize(
    ("missing", "rules"), without_one_right(DOCUMENTED_ACL), ids=lambda v: str(v)[:40]
)
async def test_each_documented_right_is_needed(
    api: kmock.KubernetesEmulator,
    redis_factory: Callable[..., RedisServer],
    missing: str,
    rules: list[str],
    kube: Kube,
) -> None:
    """operator/README.md: removing any one of the documented rights fails a branch."""
    server = acl_redis(redis_factory, rules)
    passes, _ = await every_branch(server, api, kube)
    assert any(p != ("True", "WorkersNotReady") for p in passes), f"{missing} is not needed"


async def test_functions_setup_has_not_loaded_are_a_ready_reason_naming_setup(
    api: kmock.KubernetesEmulator,
    redis_factory: Callable[..., RedisServer],
    kube: Kube,
) -> None:
    """The operator calls the core functions and may not load them (breaker: its EVAL
    could run any script): a Redis without them (never set up, restarted empty, set up by
    an older version) is reported when a pass needs one, naming ``bookstream setup``;
    once setup has loaded them the next pass goes on."""
    server = acl_redis(redis_factory)
    api.objects[kmock.resource("", "v1", "secrets"), NS, "users"] = secret("users", ROLE_PASSWORDS)
    client = admin(server)
    claim = KEYS.prefix + "operator:claim"
    client.set(claim, json.dumps({"uid": "uid-gone", "namespace": NS, "name": "gone"}))
    inbox = KEYS.inbox("lending")
    client.xgroup_create(inbox, "lending", id="0", mkstream=True)
    client.function_flush()

    async def ready() -> dict[str, Any]:
        result = await one_pass(kube, users_spec(server))
        assert not result.permanent_failure  # running setup changes no watched object
        return condition({"status": result.status}, "Ready") or {}

    def missing(function: str) -> Callable[[dict[str, Any]], bool]:
        return lambda got: (
            got.get("reason") == "FunctionsMissing"
            and function in got["message"]
            and "bookstream setup --library main" in got["message"]
        )

    # Taking over a stale claim needs bs1_compare_and_set: nothing claimed or applied.
    assert missing("bs1_compare_and_set")(got := await ready()), got
    assert find(api, "statefulsets", "lib-lending") is None
    assert b"uid-gone" in (client.get(claim) or b"")
    client.function_load(CoreFunctions.source)
    assert (await ready()).get("reason") == "WorkersNotReady"
    # Retiring lib-lending-1 (one replica) needs bs1_hand_over: it stays.
    client.xadd(inbox, {"n": "1"})
    client.xreadgroup("lending", f"{NS}.lib-lending-1", {inbox: ">"})
    client.function_flush()
    assert missing("bs1_hand_over")(got := await ready()), got
    assert len(client.xinfo_consumers(inbox, "lending")) == 1
    assert client.acl_log() == []
