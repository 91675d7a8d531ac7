"""The operator reaches a TLS Redis as the workers do: one connection builder
(bookstream_core.connection), with its own TLS files from the workers' variables (a
LibraryInstance names no CA). Against a real redis-server with a TLS port only."""

from __future__ import annotations

import pytest
from bookstream_core.connection import TLSConnection
from bookstream_operator.connection import connect, redis_settings
from bookstream_operator.credentials import Credentials
from bookstream_operator.settings import OperatorConfig, OperatorConfigError
from bookstream_operator.spec import RedisSpec
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import Certs, TlsRedis


def test_the_operator_takes_its_tls_files_from_the_workers_variables(certs: Certs) -> None:
    config = OperatorConfig.from_env(certs.variables())
    assert config.tls_files == certs.files()
    assert OperatorConfig.from_env({}).tls_files == {}
    with pytest.raises(OperatorConfigError, match=r"^cannot read BOOKSTREAM_REDIS_TLS_CA /nope"):
        OperatorConfig.from_env({"BOOKSTREAM_REDIS_TLS_CA": "/nope"})
    only_cert = {"BOOKSTREAM_REDIS_TLS_CERT": str(certs.client_cert)}
    with pytest.raises(
        OperatorConfigError, match=r"^BOOKSTREAM_REDIS_TLS_CERT needs BOOKSTREAM_REDIS_TLS_KEY"
    ):
        OperatorConfig.from_env(only_cert)


async def test_the_operator_reaches_a_tls_redis_with_its_own_ca_and_certificate(
    tls_redis: TlsRedis, certs: Certs
) -> None:
    files = OperatorConfig.from_env(certs.variables()).tls_files
    # spec.redis.tls with a redis:// URL, as the CRD's users write it, and rediss:// alike.
    for spec in (
        RedisSpec(url=f"redis://127.0.0.1:{tls_redis.port}", tls=True),
        RedisSpec(url=tls_redis.url()),
    ):
        async with connect(redis_settings(spec, Credentials(), files)) as client:
            assert client.connection_pool.connection_class is TLSConnection
            assert await client.ping() is True
            assert await client.client_getname() == "bookstream-operator"


async def test_without_the_private_ca_the_operator_does_not_trust_the_server(
    tls_redis: TlsRedis,
) -> None:
    spec = RedisSpec(url=tls_redis.url())
    async with connect(redis_settings(spec, Credentials())) as client:
        with pytest.raises(RedisConnectionError, match="certificate verify failed"):
            await client.ping()


def test_a_plain_library_ignores_the_operators_tls_files(certs: Certs) -> None:
    """One operator serves TLS and plain libraries: its files apply to TLS ones only."""
    settings = redis_settings(RedisSpec(url="redis://redis:6379"), Credentials(), certs.files())
    assert (settings.url, settings.tls_ca) == ("redis://redis:6379", None)
