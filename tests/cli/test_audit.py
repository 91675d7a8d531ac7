"""``bookstream audit`` catches what it exists to catch, and says it in words."""

from __future__ import annotations

from tests.conftest import RedisServer, run_cli


def test_unread_requests_of_a_library_nobody_serves_fail_the_audit(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    queued = run_cli(
        bookstream_env, "request", "u", "geb", "--no-wait", "--library", "never",
        server=redis_server,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    result = run_cli(bookstream_env, "audit", "--library", "never", server=redis_server)
    assert result.returncode == 1, result.stdout
    assert "holds 1 submission no lending worker has admitted yet" in result.stdout


def test_a_violation_is_described_in_words(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    # A loan Lending has no record of (written by hand: the corruption under test).
    redis_server.client().sadd("bs:{main}:lending:loans:", "geb")
    result = run_cli(bookstream_env, "audit", server=redis_server)
    assert result.returncode == 1
    assert (
        "book 'geb' is among the loans of user '' but Lending's record of it is no record "
        "(on the shelves)" in result.stdout
    )
    assert "None" not in result.stdout and "''s" not in result.stdout


def test_a_redis_that_may_evict_the_library_is_reported(
    redis_server: RedisServer, bookstream_env: dict[str, str]
) -> None:
    redis_server.client().config_set("maxmemory-policy", "allkeys-lru")
    audit = run_cli(bookstream_env, "audit", server=redis_server)
    assert audit.returncode == 1
    assert "maxmemory-policy allkeys-lru" in audit.stdout
    status = run_cli(bookstream_env, "status", server=redis_server)
    assert status.returncode == 0
    assert "PROBLEM: Redis evicts keys under memory pressure" in status.stdout
    redis_server.client().config_set("maxmemory-policy", "noeviction")
    assert run_cli(bookstream_env, "audit", server=redis_server).returncode == 0
