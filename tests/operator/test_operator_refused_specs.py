"""Specs the operator refuses (``InvalidSpec``) before it reads a Secret or reaches Redis.

A Secret reference's name becomes a request path (``/api/v1/namespaces/NS/secrets/NAME``):
a name with ``../`` made the HTTP client resolve it to another namespace's Secret, which
the operator then sent to the URL's Redis. A ``passwordSecretRef`` naming a role's key
(``lending``...) handed one worker's password to the operator and to every worker. A Redis
URL with a query made redis-py use another host (or credentials) than the status showed;
an unparseable one raised on every pass, leaving no status. The CRD refuses all of these
(tests/operator/test_operator_crd.py); the operator refuses them too, for objects stored
before its rules. Against KMock (tests/operator/kmock_env.py) and a real redis-server
standing for the Redis of whoever wrote the LibraryInstance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import kmock
import pytest
import redis
from bookstream_core import roles
from bookstream_core.roles import ROLES
from bookstream_operator.kube import Kube
from bookstream_operator.reconcile import Result
from bookstream_operator.spec import ROLE_KEY, URL_QUERY

from tests.operator.kmock_env import KEYS, NS, OTHER_NS, condition, find, one_pass
from tests.operator.test_operator_credentials import ROLE_PASSWORDS, secret, secret_requests

if TYPE_CHECKING:
    from conftest import RedisServer

#: The chart's role Secret in another namespace: what a traversal reached.
VICTIM = "bs-bookstream-redis-users"
NOT_NAMES = [
    f"../../{OTHER_NS}/secrets/{VICTIM}",
    f"../{OTHER_NS}/secrets/{VICTIM}",
    f"x/../../../{OTHER_NS}/secrets/{VICTIM}",
    f"{VICTIM}?watch=1",
    f"{VICTIM}#x",
    "%2e%2e",
    "Users",
    "users.",
    "-users",
    "a" * 254,
]


def ready(result: Result) -> dict[str, Any]:
    return condition({"status": result.status}, "Ready") or {}


@pytest.mark.parametrize("name", NOT_NAMES)
@pytest.mark.parametrize("field", ["passwordSecretRef", "usersSecretRef"])
async def test_a_secret_name_that_is_no_name_is_refused_before_any_request(
    api: kmock.KubernetesEmulator,
    redis_factory: Callable[..., RedisServer],
    field: str,
    name: str,
    kube: Kube,
) -> None:
    # The writer's Redis accepts exactly the victim's password: had the operator read the
    # victim, it would have logged in and written its claim there.
    server = redis_factory()
    server.client().config_set("requirepass", ROLE_PASSWORDS["lending"])
    writers = redis.Redis(unix_socket_path=str(server.socket), password=ROLE_PASSWORDS["lending"])
    server.clients.append(writers)
    api.objects[kmock.resource("", "v1", "secrets"), OTHER_NS, VICTIM] = secret(
        VICTIM, ROLE_PASSWORDS, ns=OTHER_NS
    )
    ref = {"name": name, "key": "lending"} if field == "passwordSecretRef" else {"name": name}
    result = await one_pass(kube, {"redis": {"url": server.url, field: ref}})
    got = ready(result)
    assert got.get("reason") == "InvalidSpec", got
    assert f"spec.redis.{field}.name must be a Secret's name" in got["message"]
    assert result.permanent_failure
    assert secret_requests(api) == []
    assert writers.get(KEYS.prefix + "operator:claim") is None
    assert find(api, "statefulsets", "lib-lending") is None


async def test_the_api_client_builds_no_path_from_a_name_that_is_no_name(
    api: kmock.KubernetesEmulator,
    kube: Kube,
) -> None:
    """The last guard, whatever a caller passes: no request at all."""
    for name in NOT_NAMES:
        with pytest.raises(ValueError, match="not a Kubernetes namespace and name"):
            await kube.secret_labels(NS, name)
        with pytest.raises(ValueError, match="not a Kubernetes namespace and name"):
            await kube.secret_data(NS, name)
    with pytest.raises(ValueError, match="not a Kubernetes namespace and name"):
        await kube.secret_data(f"../{OTHER_NS}", VICTIM)
    # A claim's holder comes from Redis: a name no object can have is no object.
    assert await kube.instance_uid(NS, f"../../{OTHER_NS}/secrets/{VICTIM}") is None
    assert await kube.instance_uid("?", "?") is None
    assert secret_requests(api) == []
    assert not [r for r in list(api) if "aiohttp" not in r.headers.get("User-Agent", "")]


@pytest.mark.parametrize("role", ROLES)
async def test_a_password_reference_to_a_role_s_key_is_refused_before_any_request(
    api: kmock.KubernetesEmulator,
    redis_factory: Callable[..., RedisServer],
    role: str,
    kube: Kube,
) -> None:
    """The role Secret is labelled and in the namespace: only the key stands between a
    LibraryInstance's writer and a worker's password (which both worker sets would mount)."""
    server = redis_factory()
    server.client().config_set("requirepass", ROLE_PASSWORDS[role])
    writers = redis.Redis(unix_socket_path=str(server.socket), password=ROLE_PASSWORDS[role])
    server.clients.append(writers)
    api.objects[kmock.resource("", "v1", "secrets"), NS, "main-users"] = secret(
        "main-users", ROLE_PASSWORDS
    )
    ref = {"name": "main-users", "key": role}
    result = await one_pass(kube, {"redis": {"url": server.url, "passwordSecretRef": ref}})
    assert ready(result).get("reason") == "InvalidSpec"
    assert ready(result)["message"] == ROLE_KEY
    assert secret_requests(api) == []
    assert writers.get(KEYS.prefix + "operator:claim") is None
    assert find(api, "statefulsets", "lib-lending") is None
    assert find(api, "statefulsets", "lib-shelving") is None


async def test_a_url_with_a_query_reaches_no_redis(
    api: kmock.KubernetesEmulator,
    redis_factory: Callable[..., RedisServer],
    kube: Kube,
) -> None:
    """redis-py would connect to ?host=&port= while the status showed redis://localhost."""
    server = redis_factory(tcp=True)
    password = ROLE_PASSWORDS["operator"]
    server.client().execute_command(
        "ACL", "SETUSER", *roles.setuser_arguments("main", "operator", password)
    )
    api.objects[kmock.resource("", "v1", "secrets"), NS, "main-users"] = secret(
        "main-users", ROLE_PASSWORDS
    )
    url = f"redis://?host=127.0.0.1&port={server.port}"
    result = await one_pass(kube, {"redis": {"url": url, "usersSecretRef": {"name": "main-users"}}})
    assert ready(result).get("reason") == "InvalidSpec"
    assert ready(result)["message"] == URL_QUERY
    assert secret_requests(api) == []
    assert server.client().get(KEYS.prefix + "operator:claim") is None
    assert find(api, "configmaps", "lib-config") is None


@pytest.mark.parametrize("url", ["redis://[::1", "redis://[redis]:6379"])
async def test_a_url_the_crd_admits_but_no_client_can_parse_is_an_invalid_spec(
    api: kmock.KubernetesEmulator,
    url: str,
    kube: Kube,
) -> None:
    """It raised a bare ValueError on every pass: no status was ever written."""
    result = await one_pass(kube, {"redis": {"url": url}})
    assert ready(result).get("reason") == "InvalidSpec"
    assert ready(result)["message"].startswith("spec.redis.url is not a valid URL: ")
    assert result.permanent_failure
