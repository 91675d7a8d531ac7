"""A run with passwords (role users, an admin password, credentials in a URL), then a search
of everything bookstream printed, logged or served for them: nothing found."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.conftest import RedisServer, WorkerProcess, run_cli
from tests.test_roles import LIB, env_of

ADMIN_PASSWORD = "admin-Secret-4711-do-not-print"


def test_no_password_is_ever_shown(
    redis_factory: Callable[..., RedisServer],
    bookstream_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    server = redis_factory(tcp=True)
    folder = tmp_path / "users"
    seen: list[str] = []

    def cli(env: dict[str, str], *args: str, url: str | None = None) -> int:
        done = run_cli(env, *args, "--redis", url or server.tcp_url)
        seen.extend([done.stdout, done.stderr])
        return done.returncode

    assert cli(bookstream_env, "setup", "--library", LIB, "--acl", str(folder)) == 0
    passwords = [ADMIN_PASSWORD, *(p.read_text().strip() for p in folder.iterdir())]
    client_password = (folder / "client").read_text().strip()
    # Credentials in a URL, the admin password on a command line: the worst habits.
    host = server.tcp_url.split("://", 1)[1]
    url_with_secret = f"redis://bs-{LIB}-client:{client_password}@{host}"

    workers = [
        start_worker("lending", server, library=LIB, metrics=True,
                     env=env_of(bookstream_env, folder, "lending")),
        start_worker("shelving", server, library=LIB, metrics=True,
                     env=env_of(bookstream_env, folder, "shelving")),
    ]  # fmt: skip
    # The admin password last: the fixtures' own connections use the default user.
    server.client().acl_setuser("default", enabled=True, reset_passwords=True,
                                passwords=[f"+{ADMIN_PASSWORD}"])  # fmt: skip
    client = env_of(bookstream_env, folder, "client")
    viewer = env_of(bookstream_env, folder, "viewer")
    plain = {**bookstream_env, "BOOKSTREAM_LIBRARY": LIB}
    assert cli(client, "request", "u1", "b1", "b2") == 0
    assert cli(client, "return", "u1", "b1") == 0
    assert cli(plain, "request", "u2", "b3", url=url_with_secret) == 0
    assert cli(client, "status", "--json") == 0
    assert cli(viewer, "audit", "--json") == 0
    assert cli(plain, "status", "--password", ADMIN_PASSWORD) == 0
    assert cli(plain, "dead-letters", "list", "--password", ADMIN_PASSWORD) == 0
    info = run_cli(plain, "info", "--json")
    assert info.returncode == 0, info.stderr
    seen.append(info.stdout)
    # Refusals and failures print the address and the reason, not the credentials.
    assert cli(viewer, "request", "u3", "b4") != 0  # a viewer may not submit
    assert cli(plain, "status", "--user", f"bs-{LIB}-viewer", "--password", "wrong") != 0
    assert cli(plain, "status", url=url_with_secret.replace(host, "127.0.0.1:1")) != 0
    for worker in workers:
        assert worker.metrics_port is not None
        for path in ("/metrics", "/healthz", "/readyz"):
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{worker.metrics_port}{path}", timeout=5
                ) as page:
                    seen.append(page.read().decode())
            except urllib.error.HTTPError as exc:  # /readyz may say 503
                seen.append(exc.read().decode())
        worker.terminate()
        seen.append(worker.output())
    everything = "\n".join(seen)
    assert "u1" in everything and "bs-acl-" in everything  # the search reads real output
    for password in passwords:
        assert password not in everything
