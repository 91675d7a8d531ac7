"""A Redis URL the CLI refuses is quoted without its credentials: redis-py reads a password
from the query as well as from user:password@, so every query value is hidden too.

Breaker: ``BOOKSTREAM_REDIS_URL='redis://h:99999/?password=s3cretQ' bookstream status``
printed the password in its error.
"""

from __future__ import annotations

import pytest
from bookstream_core.config import ConfigError, normalize_address

from tests.conftest import run_cli

SECRET = "s3cretQ"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://h:99999/?password={SECRET}", "'redis://h:99999/?password=***'"),
        (
            f"redis://h:99999/0?db=1&pass%77ord={SECRET}",
            "'redis://h:99999/0?db=***&pass%77ord=***'",
        ),
        (f"redis://h:99999/?username=u&{SECRET}", "'redis://h:99999/?username=***&***'"),
        (f"rediss://u:{SECRET}@h:99999/#{SECRET}", "'rediss://u:***@h:99999/#***'"),
        (
            f"redis://[::1/?password={SECRET}",
            "invalid Redis URL 'redis://[::1/?password=***': Invalid IPv6 URL",
        ),
    ],
)
def test_a_refused_url_is_shown_without_any_credential(
    bookstream_env: dict[str, str], url: str, shown: str
) -> None:
    for env, args in (
        ({**bookstream_env, "BOOKSTREAM_REDIS_URL": url}, ["status"]),
        (bookstream_env, ["status", "--redis", url]),
    ):
        done = run_cli(env, *args)
        assert done.returncode == 2, done
        assert shown in done.stderr, done.stderr
        assert SECRET not in done.stdout + done.stderr
        assert "Traceback" not in done.stderr


def test_an_unparseable_url_is_a_configuration_error() -> None:
    """It was a bare ValueError (a traceback from the CLI)."""
    for url in ("redis://[::1", "redis://[redis]:6379"):
        with pytest.raises(ConfigError, match=r"^invalid Redis URL "):
            normalize_address(url)
