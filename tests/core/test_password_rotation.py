"""What rotating a role's password does to a running worker, as the docs say it: no restart.

A worker reads its password file (a mounted Secret) for every new connection. After
``bookstream setup`` gives the role's Redis user a new password, connections already open
stay logged in; a new one fails (as Redis being unreachable: the worker retries) until the
file holds the new password, which the kubelet writes into a mounted Secret within about a
minute; from then on new connections log in again, from the same client, never restarted.
Against a real redis-server.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from bookstream_core import roles
from bookstream_core.config import build_redis_settings
from bookstream_core.connection import UNREACHABLE, connect
from redis.exceptions import AuthenticationError

if TYPE_CHECKING:
    from tests.conftest import RedisServer


async def test_a_rotated_password_reaches_a_running_client_without_a_restart(
    redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = redis_factory()
    admin = server.client()
    user = roles.user_name("main", "lending")
    admin.execute_command("ACL", "SETUSER", *roles.setuser_arguments("main", "lending", "old-Pw"))
    mounted = tmp_path / "password"
    mounted.write_text("old-Pw\n")
    settings = build_redis_settings(url=server.url, user=user, password_file=str(mounted))
    client = connect(settings, max_connections=4)
    pool = client.connection_pool
    try:
        held = await pool.get_connection()
        await held.send_command("PING")
        assert await held.read_response() == b"PONG"

        # setup, as it rotates: the user reset with the new password only.
        admin.execute_command(
            "ACL", "SETUSER", *roles.setuser_arguments("main", "lending", "new-Pw")
        )
        await held.send_command("PING")
        assert await held.read_response() == b"PONG"  # an open connection stays logged in
        # A new connection before the kubelet updated the file: refused, and the worker
        # takes that for Redis unreachable (it reports not ready and retries).
        with pytest.raises(UNREACHABLE) as refused:
            await pool.get_connection()
        assert isinstance(refused.value.__cause__ or refused.value, AuthenticationError)

        mounted.write_text("new-Pw\n")  # the kubelet's update of the mounted Secret
        fresh = await pool.get_connection()
        await fresh.send_command("PING")
        assert await fresh.read_response() == b"PONG"  # logged in as the role, new password
        await pool.release(fresh)
        await pool.release(held)
    finally:
        await client.aclose()
