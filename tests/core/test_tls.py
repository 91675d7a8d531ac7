"""TLS to Redis: a real redis-server with a TLS port only, requiring client certificates
(a CA, the server's and the client's certificates made by trustme for each run).

The scenario runs end to end over TLS; a wrong CA, a missing or untrusted client
certificate and a certificate for another address each fail with one line; TLS settings
that cannot work are refused before anything connects.
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from bookstream import Client
from bookstream_core.config import (
    ConfigError,
    add_worker_arguments,
    build_redis_settings,
    normalize_address,
    worker_settings_from,
)
from bookstream_core.tls import client_context, diagnose, tls_failure
from cryptography.hazmat.primitives import serialization
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import (
    Certs,
    RedisServer,
    TlsRedis,
    WorkerProcess,
    free_port,
    run_cli,
    wait_for,
    worker_command,
)


def bookstream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(env, *args, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_the_scenario_over_tls_with_client_certificates(
    tls_redis: TlsRedis,
    certs: Certs,
    start_worker: Callable[..., WorkerProcess],
    bookstream_env: dict[str, str],
) -> None:
    url = tls_redis.url()
    # One worker told by options, the other by variables (redis:// and BOOKSTREAM_REDIS_SSL).
    start_worker("lending", tls_redis.server, name="w1", redis=url, extra=certs.options())
    start_worker(
        "shelving",
        tls_redis.server,
        name="w1",
        redis=f"redis://127.0.0.1:{tls_redis.port}",
        env={"BOOKSTREAM_REDIS_SSL": "true", **certs.variables()},
    )
    tls = ["--redis", url, *certs.options()]
    first = bookstream(bookstream_env, "request", "user1", "alice", "geb", "cities", "--json", *tls)
    assert first.returncode == 0, first.stderr
    assert sorted(json.loads(first.stdout)["lent"]) == ["alice", "cities", "geb"]
    back = bookstream(bookstream_env, "return", "user1", "cities", "--json", *tls)
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["books_in_hand"] == ["alice", "geb"]

    by_variables = {**bookstream_env, "BOOKSTREAM_REDIS_URL": url, **certs.variables()}
    third = bookstream(by_variables, "request", "user2", "geb", "cities", "--json")
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["lent"] == ["cities"]
    where = bookstream(by_variables, "status", "--book", "geb")
    assert where.stdout.strip() == "'geb': lent to 'user1'", where.stderr

    with Client(url, **certs.files()) as client:
        assert client.user_books("user2") == ["cities"]

    # Every bookstream connection came in on the TLS port (the only TCP port).
    names = {
        c["name"]: c["laddr"]
        for c in tls_redis.server.client().client_list()
        if c["name"].startswith("bookstream")
    }
    assert names and all(a.endswith(f":{tls_redis.port}") for a in names.values()), names


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


def test_a_wrong_ca_fails_with_one_clear_line(
    tls_redis: TlsRedis, certs: Certs, bookstream_env: dict[str, str]
) -> None:
    url = f"rediss://:hunter2@127.0.0.1:{tls_redis.port}"
    given = ["--tls-ca", str(certs.other_ca), "--tls-cert", str(certs.client_cert)]
    given += ["--tls-key", str(certs.client_key), "--password", "s3cret-pw"]
    for command in (["status"], ["request", "user1", "geb"]):
        line = one_line(bookstream(bookstream_env, *command, "--redis", url, *given))
        assert line == (
            "bookstream: error: TLS: the certificate of Redis at "
            f"rediss://127.0.0.1:{tls_redis.port} is not trusted (self-signed certificate in "
            "certificate chain): give the CA that signed it with --tls-ca"
        )
    # Without --tls-ca the system's CAs are asked, and do not know this one either.
    line = one_line(bookstream(bookstream_env, "status", "--redis", tls_redis.url()))
    assert "is not trusted" in line


def test_a_client_certificate_missing_or_untrusted_fails_with_one_line(
    tls_redis: TlsRedis, certs: Certs, bookstream_env: dict[str, str]
) -> None:
    where = tls_redis.url()
    missing = bookstream(bookstream_env, "status", "--redis", where, "--tls-ca", str(certs.ca))
    assert one_line(missing) == (
        f"bookstream: error: TLS: Redis at {where} requires a client certificate (tlsv13 alert "
        "certificate required): give --tls-cert and --tls-key"
    )
    untrusted = bookstream(
        bookstream_env,
        *("status", "--redis", where, "--tls-ca", str(certs.ca)),
        *("--tls-cert", str(certs.stranger_cert), "--tls-key", str(certs.stranger_key)),
    )
    assert one_line(untrusted) == (
        f"bookstream: error: TLS: Redis at {where} refused the client certificate (tlsv1 alert "
        "unknown ca): is --tls-cert signed by a CA the server trusts?"
    )


def test_a_connection_only_reset_is_explained_by_asking_the_server(
    tls_redis: TlsRedis, certs: Certs
) -> None:
    """TLS 1.3 refuses a missing client certificate after the handshake: a client that has
    already written sees, now and then, only the reset. diagnose then asks the server."""
    settings = build_redis_settings(url=tls_redis.url(), tls_ca=str(certs.ca))
    # What redis-py raises then: its ConnectionError, the reset as its context.
    reset = RedisConnectionError("Error while reading from 127.0.0.1")
    reset.__context__ = ConnectionResetError(104, "Connection reset by peer")
    assert tls_failure(reset, settings) is None
    assert diagnose(reset, settings) == (
        f"TLS: Redis at {tls_redis.url()} requires a client certificate (tlsv13 alert "
        "certificate required): give --tls-cert and --tls-key"
    )
    # A server that accepts the connection says nothing: the reset stays unexplained.
    with_cert = build_redis_settings(url=tls_redis.url(), **certs.files())
    assert diagnose(reset, with_cert) is None


TLS_HINT = (
    "(is the server using TLS? it answers a TLS handshake there: use rediss:// (or --ssl) "
    "and --tls-ca for a private CA)"
)
PLAIN_HINT = (
    "(is the server not using TLS? it answers plain RESP there: use redis://, without --ssl "
    "and the --tls-* options)"
)


def test_redis_url_to_a_tls_port_names_tls(
    tls_redis: TlsRedis, bookstream_env: dict[str, str]
) -> None:
    """redis-py only sees the connection reset: the line says why it probably was."""
    where = f"redis://127.0.0.1:{tls_redis.port}"
    for command in (["status"], ["request", "u1", "geb"]):
        line = one_line(bookstream(bookstream_env, *command, "--redis", where, "--timeout", "3"))
        assert line.startswith(f"bookstream: error: cannot reach Redis at {where}: "), line
        assert line.endswith(TLS_HINT), line


def test_rediss_url_to_a_plain_port_says_it_is_plain(
    redis_factory: Callable[..., RedisServer], certs: Certs, bookstream_env: dict[str, str]
) -> None:
    """A plain Redis waits for the rest of a line that a TLS hello never ends: a timeout."""
    plain = redis_factory(tcp=True)
    for url in (f"rediss://127.0.0.1:{plain.port}", f"127.0.0.1:{plain.port}"):
        tls = ["--tls-ca", str(certs.ca)] + (["--ssl"] if "://" not in url else [])
        line = one_line(
            bookstream(bookstream_env, "status", "--redis", url, *tls, "--timeout", "2")
        )
        where = f"rediss://127.0.0.1:{plain.port}"
        assert line.startswith(f"bookstream: error: cannot reach Redis at {where}: "), line
        assert line.endswith(PLAIN_HINT), line


def test_nobody_listening_gets_no_tls_hint(bookstream_env: dict[str, str]) -> None:
    for url in (f"redis://127.0.0.1:{free_port()}", f"rediss://127.0.0.1:{free_port()}"):
        line = one_line(bookstream(bookstream_env, "status", "--redis", url, "--timeout", "2"))
        assert "TLS" not in line and "RESP" not in line, line


def test_a_certificate_for_another_address_fails_with_one_line(
    tls_redis: TlsRedis, certs: Certs, bookstream_env: dict[str, str]
) -> None:
    where = tls_redis.url("127.0.0.2")
    result = bookstream(bookstream_env, "status", "--redis", where, *certs.options())
    assert one_line(result) == (
        f"bookstream: error: TLS: the certificate of Redis at {where} is not for that address (IP "
        "address mismatch, certificate is not valid for '127.0.0.2'): connect by a host name "
        "or address the certificate names"
    )
    # The names it does carry work, localhost included.
    ok = bookstream(
        bookstream_env, "status", "--redis", tls_redis.url("localhost"), *certs.options()
    )
    assert ok.returncode == 0, ok.stderr


def test_a_worker_with_a_wrong_ca_says_so_and_retries_until_the_ca_is_right(
    tls_redis: TlsRedis, certs: Certs, bookstream_env: dict[str, str], tmp_path: Path
) -> None:
    """As for an unreachable Redis: one clear line, not ready, retrying; a CA file put
    right in place (a rotated Secret) is read at the next attempt."""
    ca = tmp_path / "ca.pem"
    ca.write_bytes(certs.other_ca.read_bytes())
    log = tmp_path / "lending.log"
    env = {**bookstream_env, **certs.variables(), "BOOKSTREAM_REDIS_TLS_CA": str(ca)}
    # A user with a password (in the URL), which no line may show.
    admin = tls_redis.server.client()
    admin.acl_setuser("w", enabled=True, passwords=["+pw-9x"], keys=["*"], channels=["*"],
                      commands=["+@all"])  # fmt: skip
    url = f"rediss://w:pw-9x@127.0.0.1:{tls_redis.port}"
    port = free_port()
    argv = [worker_command("lending"), "w1", "--redis", url, "--metrics-port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: "is not trusted" in log.read_text(), timeout=20)
        assert proc.poll() is None, log.read_text()
        text = log.read_text()
        assert "redis unavailable at start, retrying" in text
        assert "give the CA that signed it with --tls-ca" in text
        assert "Traceback" not in text and "pw-9x" not in text
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        ca.write_bytes(certs.ca.read_bytes())
        lock = "bs:{main}:worker:lending:w1"
        probe = tls_redis.server.client()
        wait_for(lambda: probe.exists(lock) == 1, timeout=20)
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0, log.read_text()


# --------------------------------------------------------------------------- settings


def parse(*argv: str, env: dict[str, str] | None = None) -> object:
    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    return worker_settings_from("lending", parser.parse_args(list(argv)), env or {})


def test_tls_settings_reach_the_worker(certs: Certs) -> None:
    s = parse("--redis", "redis://h:1", "--ssl", *certs.options()).redis  # type: ignore[attr-defined]
    assert (s.url, s.tls_ca, s.tls_key) == ("rediss://h:1", str(certs.ca), str(certs.client_key))
    s = parse(env={"BOOKSTREAM_REDIS_URL": "rediss://h:1", **certs.variables()}).redis  # type: ignore[attr-defined]
    assert s.tls_cert == str(certs.client_cert)


def test_the_given_ca_is_the_only_one_trusted(certs: Certs) -> None:
    """With --tls-ca the system's CAs are not asked too (redis-py's own context would)."""
    context = client_context(*certs.files().values())
    (only,) = context.get_ca_certs()
    assert only["subject"] == only["issuer"]  # the trustme CA, self-signed
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def encrypted_key(certs: Certs) -> Path:
    key = serialization.load_pem_private_key(certs.client_key.read_bytes(), password=None)
    path = certs.folder / "encrypted.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return path


def test_tls_settings_that_cannot_work_are_refused_naming_the_option(certs: Certs) -> None:
    ca, cert, key = str(certs.ca), str(certs.client_cert), str(certs.client_key)
    tls = ("--redis", "rediss://h:1")
    needs_tls, pair = "needs TLS: a rediss:// URL or --ssl", "(a client certificate and its key)"
    variables = {"BOOKSTREAM_REDIS_TLS_CERT": cert, "BOOKSTREAM_REDIS_TLS_KEY": key}
    encrypted = encrypted_key(certs)
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["--redis", "redis://h:1", "--tls-ca", ca], {}, f"--tls-ca {needs_tls}"),
        (["-a", "h:1"], variables, f"BOOKSTREAM_REDIS_TLS_CERT {needs_tls}"),
        ([*tls, "--tls-cert", cert], {}, f"--tls-cert needs --tls-key {pair}"),
        (
            [*tls],
            {"BOOKSTREAM_REDIS_TLS_KEY": key},
            f"BOOKSTREAM_REDIS_TLS_KEY needs --tls-cert {pair}",
        ),
        (
            [*tls, "--tls-ca", "/no/ca.pem"],
            {},
            "cannot read --tls-ca /no/ca.pem: No such file or directory",
        ),
        (
            [*tls, "--tls-ca", str(certs.folder)],
            {},
            f"cannot read --tls-ca {certs.folder}: Is a directory",
        ),
        ([*tls, "--tls-ca", ""], {}, "--tls-ca is empty: give a file"),
        ([*tls, "--tls-ca", key], {}, f"--tls-ca {key} holds no PEM certificate"),
        (
            [*tls, "--tls-cert", cert, "--tls-key", str(certs.stranger_key)],
            {},
            f"--tls-key {certs.stranger_key} is not the key of --tls-cert {cert}",
        ),
        (
            [*tls, "--tls-cert", cert, "--tls-key", str(encrypted)],
            {},
            f"--tls-key {encrypted} is encrypted: give the key unencrypted (there is no passphrase",
        ),
        (
            ["--ssl"],
            {},
            "--ssl needs a TCP address (a redis:// URL or host:port): a unix socket "
            "has no TLS, nor has the embedded server",
        ),
        (["-a", "/tmp/r.sock"], {"BOOKSTREAM_REDIS_SSL": "on"}, "BOOKSTREAM_REDIS_SSL needs a TCP"),
        (
            ["--redis", "rediss://h:1/0?ssl_cert_reqs=none"],
            {},
            "--redis: a Redis URL carries no TLS settings (ssl_...): give --tls-ca, --tls-cert, "
            "--tls-key; verification is always on",
        ),
    ]
    for argv, env, message in cases:
        with pytest.raises(ConfigError) as caught:
            parse(*argv, env=env)
        assert str(caught.value).startswith(message), (argv, str(caught.value))


def test_the_cli_and_a_worker_refuse_them_in_one_line(
    certs: Certs, bookstream_env: dict[str, str]
) -> None:
    argv = ["--redis", "rediss://127.0.0.1:1", "--tls-cert", str(certs.client_cert)]
    cli = bookstream(bookstream_env, "status", *argv)
    assert (cli.returncode, cli.stderr) == (
        2,
        "bookstream: error: --tls-cert needs --tls-key (a client certificate and its key)\n",
    )
    worker = subprocess.run(
        [worker_command("shelving"), *argv],
        capture_output=True,
        text=True,
        env=bookstream_env,
        timeout=60,
        check=False,
    )
    assert (worker.returncode, worker.stderr) == (
        2,
        "bookstream-shelving: error: --tls-cert needs --tls-key (a client certificate and its "
        "key)\n",
    )


def test_a_password_in_the_url_stays_out_of_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        normalize_address("rediss://app:hunter2@h:99999")
    assert "hunter2" not in str(caught.value)
    assert "rediss://app:***@h:99999" in str(caught.value)


def test_bench_over_tls_with_client_certificates(
    tls_redis: TlsRedis, certs: Certs, bookstream_env: dict[str, str]
) -> None:
    """bench takes the TLS options of every command and gives them to its workers (as
    variables) and to redis-benchmark (--reference)."""
    done = bookstream(
        bookstream_env, "bench", "--json", "--no-progress", "--events", "500", "--reference",
        "--redis", tls_redis.url(), *certs.options(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["correct"] is True and result["reference_ops_per_s"] > 0
    assert result["redis"] == tls_redis.url()
