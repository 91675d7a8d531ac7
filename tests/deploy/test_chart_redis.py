"""The chart's Redis is secure by default: it always requires a password, which reaches it only
through a mounted Secret; it never evicts; its ACL users live on the data volume; the setup
Job provisions the library's role users; and no password is in any rendered object but a
Secret. The shipped redis.conf and admin script run here against a real redis-server."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from tests.conftest import VENV_BIN, free_port
from tests.deploy import tools
from tests.deploy.tools import Doc

pytestmark = pytest.mark.usefixtures("k8s_bin")

ROLES = ["lending", "shelving", "client", "viewer", "operator"]


def _config(objects: list[Doc]) -> dict[str, str]:
    data: dict[str, str] = tools.one(objects, "ConfigMap", "rel-bookstream-redis-config")["data"]
    return data


def directives(conf: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in conf.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.strip().partition(" ")
            assert name not in out, f"{name} given twice"
            out[name] = value
    return out


def test_redis_config_requires_auth_and_never_evicts() -> None:
    conf = directives(_config(tools.render({"redis.maxmemory": "1gb"}))["redis.conf"])
    assert conf["maxmemory"] == "1gb"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["appendonly"] == "yes"
    assert conf["proto-max-bulk-len"] == "1mb"  # breaker: one 100 MB submission
    assert conf["client-output-buffer-limit"] == "normal 64mb 32mb 60"  # breaker: unread replies
    # Users come from the aclfile on the data volume; no password and no user in the file
    # (requirepass would be ignored beside an aclfile).
    assert conf["dir"] == "/data" and conf["aclfile"] == "/data/users.acl"
    assert not {"requirepass", "user", "masterauth"} & set(conf)
    assert directives(_config(tools.render())["redis.conf"])["maxmemory"] == "256mb"


def test_redis_gets_its_password_only_from_a_mounted_secret() -> None:
    objects = tools.render({"redis.auth.password": "given-pw-1"})
    pod = tools.one(objects, "StatefulSet", "rel-bookstream-redis")["spec"]["template"]["spec"]
    admin = next(v for v in pod["volumes"] if v["name"] == "admin")
    assert admin["secret"] == {
        "secretName": "rel-bookstream-redis",
        "items": [{"key": "password", "path": "password"}],
        "defaultMode": 0o440,
    }
    for container in pod["initContainers"] + pod["containers"]:
        assert "env" not in container and "envFrom" not in container, container["name"]
        assert "given-pw-1" not in json.dumps(container)
        mount = next(m for m in container["volumeMounts"] if m["name"] == "admin")
        assert mount == {"name": "admin", "mountPath": "/etc/redis-auth", "readOnly": True}
    (init,) = pod["initContainers"]
    assert init["command"] == [
        "sh",
        "/etc/redis/admin-user.sh",
        "/etc/redis-auth/password",
        "/data/users.acl",
    ]


@pytest.mark.parametrize(
    ("value", "bad"),
    [("0", True), ("lots", True), ("256Mi", True), ("256mb", False), ("2GB", False)],
)
def test_maxmemory_must_be_a_redis_size(value: str, bad: bool) -> None:
    proc = tools.helm("template", "rel", str(tools.CHART), "--set", f"redis.maxmemory={value}",
                      check=False)  # fmt: skip
    assert (proc.returncode != 0) is bad, proc.stderr
    if bad:
        assert "/redis/maxmemory" in proc.stderr


# --------------------------------------------------------------------------- a real Redis


class ChartRedis:
    """redis-server with the chart's redis.conf, started the way the pod starts it: the
    chart's admin script first, then redis-server on the file. Only where things live
    (port, interface, the data directory) is changed."""

    def __init__(self, config: dict[str, str], directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        # redis-server enters `dir` while reading the file (before any option could override
        # it): point the file's /data at this directory instead.
        conf = config["redis.conf"].replace("/data", str(directory))
        assert conf.count(str(directory)) == 2  # dir, aclfile
        (directory / "redis.conf").write_text(conf)
        (directory / "admin-user.sh").write_text(config["admin-user.sh"])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def acl(self) -> Path:
        return self.directory / "users.acl"

    def admin_script(self, password: str) -> subprocess.CompletedProcess[str]:
        secret = self.directory / "password"
        secret.write_text(password)
        return subprocess.run(
            ["sh", str(self.directory / "admin-user.sh"), str(secret), str(self.acl)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def start(self, password: str) -> None:
        script = self.admin_script(password)
        assert script.returncode == 0, script.stderr
        d = self.directory
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", str(d / "redis.conf"),
             "--port", str(self.port), "--bind", "127.0.0.1", "--logfile", str(d / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (d / "redis.log").read_text()[-2000:]
            try:
                with self.client() as probe:
                    probe.ping()
            except redis.AuthenticationError:
                return  # up, and asking for a password
            except redis.ConnectionError:
                time.sleep(0.02)
        pytest.fail("redis-server did not answer within 10 s")

    def client(self, username: str | None = None, password: str | None = None) -> redis.Redis:
        return redis.Redis(port=self.port, username=username, password=password, socket_timeout=5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def chart_redis() -> Iterator[ChartRedis]:
    directory = Path(tempfile.mkdtemp(prefix="bsc-", dir="/tmp"))
    server = ChartRedis(_config(tools.render()), directory)
    yield server
    if server.process is not None and server.process.poll() is None:
        server.process.kill()
        server.process.wait(timeout=10)
    shutil.rmtree(directory, ignore_errors=True)


def test_the_chart_redis_requires_auth_and_never_evicts(chart_redis: ChartRedis) -> None:
    chart_redis.start("adm1n-pw")
    with chart_redis.client() as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with chart_redis.client("default", "wrong") as wrong, pytest.raises(redis.AuthenticationError):
        wrong.ping()
    with chart_redis.client("default", "adm1n-pw") as admin:
        assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert admin.config_get("maxmemory") == {"maxmemory": str(256 * 1024 * 1024)}
    # The aclfile holds the password's hash, never the password.
    text = chart_redis.acl.read_text()
    assert "adm1n-pw" not in text
    assert hashlib.sha256(b"adm1n-pw").hexdigest() in text


def test_role_users_survive_a_restart_and_the_admin_password_follows_the_secret(
    chart_redis: ChartRedis,
) -> None:
    chart_redis.start("first-pw")
    with chart_redis.client("default", "first-pw") as admin:
        # What `bookstream setup --acl` does for each role: a user, then ACL SAVE.
        admin.acl_setuser("bs-main-viewer", enabled=True, passwords=["+viewer-pw"],
                          keys=["bs:{main}:*"], commands=["+get"])  # fmt: skip
        admin.execute_command("ACL", "SAVE")
    chart_redis.stop()
    # A new admin password in the Secret, then a restart: the script rewrites only the
    # admin's line.
    chart_redis.start("second-pw")
    with chart_redis.client("bs-main-viewer", "viewer-pw") as viewer:
        assert viewer.get("bs:{main}:x") is None
    with chart_redis.client("default", "first-pw") as old, pytest.raises(redis.AuthenticationError):
        old.ping()
    with chart_redis.client("default", "second-pw") as admin:
        assert admin.ping()
    assert chart_redis.acl.read_text().count("user default ") == 1


@pytest.mark.parametrize("password", ["", "two words", "tab\there", " lead"])
def test_the_admin_script_refuses_an_unusable_password(
    chart_redis: ChartRedis, password: str
) -> None:
    proc = chart_redis.admin_script(password)
    assert proc.returncode == 1
    assert "empty or holds whitespace" in proc.stderr
    assert not chart_redis.acl.exists()


def test_the_admin_script_takes_a_trailing_newline_as_bookstream_does(
    chart_redis: ChartRedis,
) -> None:
    """A Secret made from a file often ends in a newline; bookstream's --password-file drops
    it, so the admin's hash must be the password's without it."""
    assert chart_redis.admin_script("pw-in-a-file\n").returncode == 0
    assert hashlib.sha256(b"pw-in-a-file").hexdigest() in chart_redis.acl.read_text()


# --------------------------------------------------------------------------- the pods, for real


class Pod:
    """A rendered container run here as a process: its image's command with its args and
    env, each Secret volume a folder holding the Secret's items, the chart Redis' URL
    pointing at the local server."""

    def __init__(self, pod: Doc, secrets: dict[str, Doc], root: Path, url: str) -> None:
        (self.container,) = pod["containers"]
        self.paths: dict[str, str] = {}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for mount in self.container.get("volumeMounts", []):
            local = root / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            self.paths[mount["mountPath"]] = str(local)
            source = volumes[mount["name"]].get("secret")
            if source is not None:
                data = secrets[source["secretName"]]["data"]
                items = source.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    (local / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
        self.url = url

    def local(self, value: str) -> str:
        if value.startswith("redis://"):
            return self.url
        for mount, local in self.paths.items():
            if value == mount or value.startswith(mount + "/"):
                return local + value[len(mount) :]
        return value

    def run(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        variables = {e["name"]: self.local(e["value"]) for e in self.container.get("env", [])}
        argv = [self.local(a) for a in (list(args) or self.container["args"])]
        return subprocess.run([str(VENV_BIN / "bookstream"), *argv], env={**env, **variables},
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_the_setup_job_provisions_role_users_that_survive_a_restart(
    chart_redis: ChartRedis, bookstream_env: dict[str, str], tmp_path: Path
) -> None:
    """The chart's setup Job, helm test pod and CLI example, run as rendered against Redis
    started from the chart's config: setup makes the users with the role Secret's passwords
    (changing no file), ACL SAVE puts them in the aclfile, and after a restart the test pod
    audits as viewer, the CLI example asks as client and a worker runs as lending."""
    objects = tools.render()
    secrets = {s["metadata"]["name"]: s for s in tools.by_kind(objects, "Secret")}
    admin = base64.b64decode(secrets["rel-bookstream-redis"]["data"]["password"]).decode()
    chart_redis.start(admin)
    url = f"redis://127.0.0.1:{chart_redis.port}"
    job = tools.one(objects, "Job", "rel-bookstream-setup")["spec"]["template"]["spec"]
    setup = Pod(job, secrets, tmp_path, url)
    users = Path(setup.paths["/etc/bookstream/users"])
    before = {f.name: f.read_bytes() for f in users.iterdir()}
    done = setup.run(bookstream_env)
    assert done.returncode == 0, done.stderr
    assert {f.name: f.read_bytes() for f in users.iterdir()} == before  # a read-only Secret
    assert "bs-main-viewer" in chart_redis.acl.read_text()

    chart_redis.stop()
    chart_redis.start(admin)
    for role in ROLES:
        with chart_redis.client(f"bs-main-{role}", (users / role).read_text()) as user:
            assert user.ping(), role
    test_pod = Pod(tools.one(objects, "Pod")["spec"], secrets, tmp_path / "test", url)
    audit = test_pod.run(bookstream_env)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    example = tools.one(tools.load_docs([tools.K8S / "examples" / "cli-job.yaml"]), "Job")
    # The example names the kustomize base's Secret: give it this render's.
    base_secrets = {"bookstream-redis-users": secrets["rel-bookstream-redis-users"]}
    cli = Pod(example["spec"]["template"]["spec"], base_secrets, tmp_path / "cli", url)
    seen = cli.run(bookstream_env, "status")  # what NOTES.txt says the same pod runs too
    assert seen.returncode == 0, seen.stdout + seen.stderr
    # The audit replays every patron's outcomes: the viewer's, not the client's.
    refused = cli.run(bookstream_env, "audit")
    assert refused.returncode == 3 and "no permissions" in refused.stderr
    asked = cli.run(bookstream_env, "request", "--no-wait", "user1", "geb")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    log = tmp_path / "lending.log"
    with open(log, "wb") as out:
        lending = subprocess.Popen(
            [str(VENV_BIN / "bookstream-lending"), "l1"],
            env={**bookstream_env, "BOOKSTREAM_REDIS_URL": url, "BOOKSTREAM_LIBRARY": "main",
                 "BOOKSTREAM_REDIS_USER": "bs-main-lending",
                 "BOOKSTREAM_REDIS_PASSWORD_FILE": str(users / "lending")},
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        with chart_redis.client("default", admin) as r:
            deadline = time.monotonic() + 20
            while r.get("bs:{main}:worker:lending:l1") is None:
                assert lending.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the lending worker did not start"
                time.sleep(0.05)
    finally:
        lending.kill()
        lending.wait(timeout=10)


# --------------------------------------------------------------------------- role users, setup


def test_the_role_secret_holds_one_password_per_role() -> None:
    secret = tools.one(tools.render(), "Secret", "rel-bookstream-redis-users")
    assert secret["metadata"]["labels"]["bookstream.io/redis-credentials"] == "true"
    assert sorted(secret["data"]) == sorted(ROLES)
    passwords = [base64.b64decode(v).decode() for v in secret["data"].values()]
    assert len(set(passwords)) == len(ROLES)
    assert all(len(p) == 32 and p.isalnum() for p in passwords)
    # A Secret of one's own replaces it.
    mine = tools.render({"redis.auth.existingUsersSecret": "mine"})
    assert not [s for s in tools.by_kind(mine, "Secret") if "users" in s["metadata"]["name"]]
    with_li = {"libraryInstance.enabled": "true", "redis.auth.existingUsersSecret": "mine"}
    li = tools.one(tools.render(with_li), "LibraryInstance")
    assert li["spec"]["redis"]["usersSecretRef"] == {"name": "mine"}


def test_the_setup_job_is_a_hook_with_the_secrets_mounted_read_only() -> None:
    objects = tools.render({"libraryInstance.spec.library": "east"})
    job = tools.one(objects, "Job", "rel-bookstream-setup")
    annotations = job["metadata"]["annotations"]
    # After a rollback too (breaker): the role Secret goes back to older passwords while
    # Redis' users keep the newer ones, which setup replaces with the Secret's.
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade,post-rollback"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "bookstream/cli:0.1.0"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert container["args"] == [
        "setup", "--library", "east", "--acl", mounts["users"]["mountPath"],
    ]  # fmt: skip
    # The admin (the default user): its password a file, no secretKeyRef variable.
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "BOOKSTREAM_REDIS_URL": "redis://rel-bookstream-redis.books.svc:6379",
        "BOOKSTREAM_REDIS_PASSWORD_FILE": mounts["admin"]["mountPath"] + "/password",
    }
    assert mounts["admin"]["readOnly"] is True and mounts["users"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["admin"]["secret"]["secretName"] == "rel-bookstream-redis"
    users = volumes["users"]["secret"]
    assert users["secretName"] == "rel-bookstream-redis-users"
    assert users["items"] == [{"key": r, "path": r} for r in ROLES]
    # 0440 and the pod's fsGroup: the non-root user reads them, nobody else.
    assert users["defaultMode"] == volumes["admin"]["secret"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "setup"


def test_no_setup_job_without_the_charts_redis_or_when_turned_off() -> None:
    assert not tools.by_kind(tools.render({"setup.enabled": "false"}), "Job")
    objects = tools.render({"redis.enabled": "false"})
    assert not tools.by_kind(objects, "Job") and not tools.by_kind(objects, "Secret")


# --------------------------------------------------------------------------- no password


SECRET_VALUES = [
    {},
    {"redis.auth.password": "Given-Admin-Pw-42"},
    {"redis.auth.existingSecret": "mine", "redis.auth.existingUsersSecret": "theirs"},
    {"libraryInstance.enabled": "true", "monitoring.serviceMonitor.enabled": "true"},
]


@pytest.mark.parametrize("values", SECRET_VALUES, ids=["generated", "given", "existing", "li"])
def test_a_password_is_in_no_rendered_object_but_a_secret(values: dict[str, str]) -> None:
    objects = tools.render(values, api_versions=["monitoring.coreos.com/v1"])
    passwords = {v for v in values.values() if "Pw" in v}
    for secret in tools.by_kind(objects, "Secret"):
        passwords |= {base64.b64decode(v).decode() for v in secret["data"].values()}
    assert passwords or "redis.auth.existingSecret" in values
    forms = passwords | {base64.b64encode(p.encode()).decode() for p in passwords}
    for obj in objects:
        if obj["kind"] == "Secret":
            continue
        text = yaml.safe_dump(obj)
        for form in forms:
            assert form not in text, f"{obj['kind']} {obj['metadata']['name']} holds a password"
        # No variable carries one either, not even by reference: files only.
        for container in _containers(obj):
            for var in container.get("env", []):
                assert "secretKeyRef" not in var.get("valueFrom", {}), (obj["kind"], var)
    install = ["install", "rel", str(tools.CHART), "--namespace", "books", "--dry-run=client"]
    notes = tools.helm(*install, *tools.set_args(values)).stdout.split("NOTES:", 1)[1]
    assert not [f for f in forms if f in notes]


@pytest.mark.parametrize(
    "values",
    [{}, {"libraryInstance.enabled": "true", "redis.auth.existingUsersSecret": "users"}],
    ids=["default", "li"],
)
def test_no_rendered_object_but_a_secret_depends_on_the_admin_password(
    values: dict[str, str],
) -> None:
    """Breaker: the Redis pod's checksum/config hashed the admin password, unsalted, so
    whoever may view the StatefulSet could test guesses offline. Two passwords, one
    render: every object but the Secrets, annotations and labels included, is the same."""

    def render(password: str) -> list[Doc]:
        objects = tools.render({**values, "redis.auth.password": password})
        return [obj for obj in objects if obj["kind"] != "Secret"]

    one, two = render("Admin-Pw-One-1"), render("Admin-Pw-Two-2")
    assert one and len(one) == len(two)
    for a, b in zip(one, two, strict=True):
        assert a == b, f"{a['kind']} {a['metadata']['name']} depends on the admin password"


def _containers(obj: Doc) -> list[Doc]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec") if "template" in spec else spec
    if not isinstance(pod, dict):
        return []
    found: list[Doc] = pod.get("containers", []) + pod.get("initContainers", [])
    return found
