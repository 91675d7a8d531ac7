"""Settings: options over BOOKSTREAM_* variables over defaults, built once at the entry."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest
from bookstream_core.config import (
    ConfigError,
    add_worker_arguments,
    default_home,
    normalize_address,
    one_of,
    read_password_file,
    worker_settings_from,
)
from bookstream_core.settings import BY_KEY

from tests.conftest import VENV_BIN, RedisServer, run_cli


def parse(*argv: str, env: dict[str, str] | None = None) -> object:
    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    return worker_settings_from("lending", parser.parse_args(list(argv)), env or {})


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("localhost", "redis://localhost:6379"),
        ("10.0.0.5:6380", "redis://10.0.0.5:6380"),
        ("/var/run/redis.sock", "unix:///var/run/redis.sock"),
        ("rediss://h:1", "rediss://h:1"),
        ("unix:///tmp/r.sock", "unix:///tmp/r.sock"),
    ],
)
def test_addresses_of_the_original_main_py(address: str, url: str) -> None:
    assert normalize_address(address) == url


@pytest.mark.parametrize("bad", ["", "http://x", "host:port"])
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(ConfigError):
        normalize_address(bad)


def test_defaults_and_generated_name() -> None:
    s = parse()
    assert s.library == "main" and not s.force  # type: ignore[attr-defined]
    assert s.redis.url is None  # type: ignore[attr-defined]  (embedded)
    assert s.domain.user_limit == 5 and s.domain.storage_capacity == 20  # type: ignore[attr-defined]
    assert s.name.startswith("lending-")  # type: ignore[attr-defined]


def test_environment_is_what_a_pod_uses(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    env = {
        "BOOKSTREAM_REDIS_URL": "redis://redis:6379",
        "BOOKSTREAM_REDIS_PASSWORD_FILE": str(secret),
        "BOOKSTREAM_REDIS_SSL": "true",
        "BOOKSTREAM_REDIS_DB": "2",
        "BOOKSTREAM_LIBRARY": "branch-7",
        "BOOKSTREAM_WORKER_NAME": "lib-lending-0",
        "BOOKSTREAM_FORCE": "true",
        "BOOKSTREAM_METRICS_PORT": "9108",
        "BOOKSTREAM_LOG_FORMAT": "json",
        "BOOKSTREAM_USER_LIMIT": "3",
        "BOOKSTREAM_STORAGE_CAPACITY": "0",
        "BOOKSTREAM_MAX_DELIVERIES": "7",
        "BOOKSTREAM_RETENTION_S": "60",
        "BOOKSTREAM_IN_FLIGHT": "5",
    }
    s = parse(env=env)
    assert s.redis.url == "rediss://redis:6379"  # type: ignore[attr-defined]
    # The file is kept, read again for every connection (a rotated password is used).
    assert s.redis.password is None and s.redis.db == 2  # type: ignore[attr-defined]
    assert read_password_file(s.redis.password_file) == "s3cret"  # type: ignore[attr-defined]
    assert (s.library, s.name, s.force) == ("branch-7", "lib-lending-0", True)  # type: ignore[attr-defined]
    assert s.observability.metrics_port == 9108  # type: ignore[attr-defined]
    assert s.observability.log_format == "json"  # type: ignore[attr-defined]
    assert (s.domain.user_limit, s.domain.storage_capacity) == (3, 0)  # type: ignore[attr-defined]
    assert (s.runtime.max_deliveries, s.runtime.retention_s) == (7, 60)  # type: ignore[attr-defined]
    assert s.runtime.in_flight == 5  # type: ignore[attr-defined]


def test_options_win_over_the_environment() -> None:
    env = {"BOOKSTREAM_LIBRARY": "env-lib", "BOOKSTREAM_REDIS_URL": "redis://env:1"}
    s = parse("w9", "--library", "opt-lib", "-a", "opt:2", "--password", "pw", env=env)
    assert (s.name, s.library) == ("w9", "opt-lib")  # type: ignore[attr-defined]
    assert (s.redis.url, s.redis.password) == ("redis://opt:2", "pw")  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="either --redis or -a/--address"):
        parse("--redis", "redis://a:1", "-a", "b:2")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--library", "a b"], "invalid library name"),
        (["--user-limit", "0"], "at least 1"),
        (["--in-flight", "0"], "at least 1"),
        (["--metrics-port", "x"], "whole number"),
        (["--password-file", "/nonexistent/pw"], "cannot read password file"),
        (["bad\x00name"], "printable ASCII"),
        (["--batch-size", "10001"], "at most 10000"),
    ],
)
def test_bad_settings_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(*argv)


def test_a_bad_value_is_named_as_it_was_given() -> None:
    with pytest.raises(ConfigError, match=r"^BOOKSTREAM_REDIS_DB must be a whole number"):
        parse(env={"BOOKSTREAM_REDIS_DB": "abc"})
    with pytest.raises(ConfigError, match=r"^--db must be a whole number"):
        parse("--db", "abc", env={"BOOKSTREAM_REDIS_DB": "1"})
    with pytest.raises(ConfigError, match=r"^BOOKSTREAM_LOG_FORMAT must be one of console, json"):
        parse(env={"BOOKSTREAM_LOG_FORMAT": "xml"})


def test_an_empty_option_is_a_value_an_empty_variable_is_unset() -> None:
    with pytest.raises(ConfigError, match="invalid library name ''"):
        parse("--library", "")
    assert parse(env={"BOOKSTREAM_LIBRARY": ""}).library == "main"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["bad name"], {}, "NAME"),
        (["é"], {}, "NAME"),
        ([""], {"BOOKSTREAM_WORKER_NAME": "w1"}, "NAME"),  # an empty option is a value
        (["x" * 201], {}, "NAME"),
        ([], {"BOOKSTREAM_WORKER_NAME": "x y"}, "BOOKSTREAM_WORKER_NAME"),
    ],
)
def test_a_worker_name_redis_would_refuse_is_a_bad_setting(
    argv: list[str], env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{named}: a worker name is 1-200 characters"):
        parse(*argv, env=env)


def test_an_empty_worker_name_variable_is_unset() -> None:
    assert parse(env={"BOOKSTREAM_WORKER_NAME": ""}).name.startswith("lending-")  # type: ignore[attr-defined]
    assert parse("!~w-1.a_b").name == "!~w-1.a_b"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["bookstream-lending", "bad name"], {}),
        (["bookstream-lending", ""], {}),
        (["bookstream-shelving"], {"BOOKSTREAM_WORKER_NAME": "x y"}),
        (["bookstream", "serve", "a b"], {}),
        (["bookstream", "serve", "--batch-size", "1000000000"], {}),
    ],
)
def test_a_worker_with_a_bad_name_or_batch_exits_2_at_once(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
    argv: list[str],
    env: dict[str, str],
) -> None:
    """(It retried its start for ever, Redis refusing the connection's name.)"""
    done = subprocess.run(
        [str(VENV_BIN / argv[0]), *argv[1:], "--redis", redis_server.url],
        capture_output=True, text=True, env={**bookstream_env, **env}, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert f"{argv[0]}: error: " in done.stderr


@pytest.mark.parametrize("bad", ["h:0", "h:65536", "redis://h:99999", "redis://h:x"])
def test_ports_are_checked(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid port"):
        normalize_address(bad)


def test_the_embedded_redis_lives_in_the_users_state_directory(tmp_path: Path) -> None:
    assert default_home({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "bookstream"
    assert default_home({}) == Path.home() / ".local" / "state" / "bookstream"
    assert default_home({"XDG_STATE_HOME": "relative"}) == default_home({})  # XDG: ignored
    home = {"BOOKSTREAM_HOME": str(tmp_path / "mine"), "XDG_STATE_HOME": str(tmp_path)}
    assert default_home(home) == tmp_path / "mine"
    assert parse(env=home).redis.home == tmp_path / "mine"  # type: ignore[attr-defined]


def test_only_lending_workers_take_lendings_rules() -> None:
    parser = argparse.ArgumentParser()
    add_worker_arguments(parser, ("shelving",))
    options = {o for action in parser._actions for o in action.option_strings}
    assert "--batch-size" in options and "--user-limit" not in options


def test_a_yes_no_variable_refuses_anything_else() -> None:
    """Newcomer: BOOKSTREAM_REDIS_SSL=maybe silently meant off."""
    import pytest
    from bookstream_core.config import ConfigError
    from bookstream_core.settings import flag

    assert flag("ssl", None, {"BOOKSTREAM_REDIS_SSL": "yes"}) is True
    assert flag("ssl", None, {"BOOKSTREAM_REDIS_SSL": "off"}) is False
    with pytest.raises(ConfigError, match="BOOKSTREAM_REDIS_SSL"):
        flag("ssl", None, {"BOOKSTREAM_REDIS_SSL": "maybe"})


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "large"])
def test_a_password_file_is_a_small_regular_file(
    kind: str, tmp_path: Path, bookstream_env: dict[str, str]
) -> None:
    """/dev/zero was read until memory ran out, and a FIFO blocked the command forever."""
    path = tmp_path / kind
    if kind == "/dev/zero":
        path = Path(kind)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("x" * 4097)
    why = "is over 4096 bytes" if kind == "large" else "is not a regular file"
    with pytest.raises(ConfigError, match=f"^password file {path} {why}$"):
        parse("--password-file", str(path))
    done = run_cli(bookstream_env, "status", "--password-file", str(path), timeout=30)
    assert (done.returncode, done.stderr) == (2, f"bookstream: error: password file {path} {why}\n")
    (tmp_path / "ok").write_text("p" * 4095 + "\n")  # 4096 bytes: still a password
    assert read_password_file(str(tmp_path / "ok")) == "p" * 4095


def test_an_option_wins_over_a_variable_of_the_other_kind(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    env = {"BOOKSTREAM_REDIS_PASSWORD": "from-env"}
    redis = parse("--password-file", str(secret), env=env).redis  # type: ignore[attr-defined]
    assert (redis.password, redis.password_file) == (None, str(secret))
    env = {"BOOKSTREAM_REDIS_PASSWORD_FILE": str(secret)}
    redis = parse("--password", "opt", env=env).redis  # type: ignore[attr-defined]
    assert (redis.password, redis.password_file) == ("opt", None)
    # Two given the same way are a conflict, named as they were given.
    env = {"BOOKSTREAM_REDIS_PASSWORD": "x", "BOOKSTREAM_REDIS_PASSWORD_FILE": str(secret)}
    with pytest.raises(ConfigError, match=r"^give either BOOKSTREAM_REDIS_PASSWORD or BOOKSTREAM_"):
        parse(env=env)
    with pytest.raises(ConfigError, match=r"^give either --password or --password-file, not both"):
        parse("--password", "x", "--password-file", str(secret))


@pytest.mark.parametrize(("first", "second"), [("redis", "address"), ("password", "password_file")])
def test_one_rule_for_both_pairs_an_option_beats_a_variable(first: str, second: str) -> None:
    """A URL or an address, a password or a password file: the same rule, one helper."""
    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    flag = {"redis": "--redis", "address": "--address", "password": "--password",
            "password_file": "--password-file"}  # fmt: skip
    variable = {"redis": "BOOKSTREAM_REDIS_URL", "address": "BOOKSTREAM_REDIS_ADDRESS",
                "password": "BOOKSTREAM_REDIS_PASSWORD",
                "password_file": "BOOKSTREAM_REDIS_PASSWORD_FILE"}  # fmt: skip

    def named(key: str) -> str:
        return "/".join(BY_KEY[key].flags)

    # Each as an option beats the other as a variable, either way round.
    for given, other in ((first, second), (second, first)):
        args = parser.parse_args([flag[given], "x"])
        found = dict(
            zip((first, second), one_of(first, second, args, {variable[other]: "y"}), strict=True)
        )
        assert found == {given: ("x", named(given)), other: (None, "")}
    # Only variables: they count.
    args = parser.parse_args([])
    found = dict(
        zip((first, second), one_of(first, second, args, {variable[second]: "y"}), strict=True)
    )
    assert found == {first: (None, ""), second: ("y", variable[second])}
    # Two the same way conflict, named as given.
    with pytest.raises(ConfigError, match=f"^give either {named(first)} or {named(second)}, not"):
        one_of(first, second, parser.parse_args([flag[first], "x", flag[second], "y"]), {})
    both = {variable[first]: "x", variable[second]: "y"}
    with pytest.raises(ConfigError, match=f"^give either {variable[first]} or {variable[second]}"):
        one_of(first, second, args, both)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://u:pw@[::1/", "invalid Redis URL 'redis://u:***@[::1/': Invalid IPv6 URL"),
        ("redis://:pw@host:6380?db=x", "invalid Redis URL 'redis://:***@host:6380?db=***': "
         "Invalid value for 'db' in connection URL."),
        ("redis://:pw@host:6380?health_check_interval=x",
         "a Redis URL takes no query parameter but db, not health_check_interval"),
        ("rediss://localhost:1/?SSL_CERT_REQS=none", "a Redis URL carries no TLS settings"),
        ("redis://:pw@host:6380/1?DB=2", "a Redis URL takes no query parameter but db, not DB"),
        ("redis://:pw@host:6380/x",
         "invalid Redis URL 'redis://:***@host:6380/x': its path is a database number (/0)"),
    ],
)  # fmt: skip
def test_a_url_redis_py_cannot_use_is_one_line_without_its_password(
    url: str, message: str, bookstream_env: dict[str, str]
) -> None:
    """Each was a traceback from inside redis-py at the first connection."""
    done = run_cli(bookstream_env, "status", "--redis", url, "--timeout", "1")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"bookstream: error: --redis: {message}")
    assert len(done.stderr.splitlines()) == 1 and "pw" not in done.stderr.replace("://", "")


def test_settings_never_show_a_password() -> None:
    shown = repr(parse("--redis", "redis://app:hunter2@h:1/0", "--password", "s3cret"))
    assert "hunter2" not in shown and "s3cret" not in shown
    assert "url='redis://app:***@h:1/0'" in shown
