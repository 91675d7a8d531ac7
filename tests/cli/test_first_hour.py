"""A newcomer's first hour: one embedded Redis per user whatever the folder, and the
README's client snippet runs from any folder, the one holding the clone included."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, RedisServer, WorkerProcess, run_cli

ROOT = Path(__file__).resolve().parents[2]


def _env_without_home(bookstream_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in bookstream_env.items() if k != "BOOKSTREAM_HOME"}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    return env


def test_every_folder_sees_the_same_embedded_redis(
    bookstream_env: dict[str, str], tmp_path: Path
) -> None:
    env = _env_without_home(bookstream_env, tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()

    def bookstream(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "bookstream"), *args], cwd=cwd, env=env, capture_output=True,
            text=True, timeout=60, check=False,
        )  # fmt: skip

    try:
        started = bookstream(one, "embedded", "start")
        assert started.returncode == 0, started.stderr
        socket = tmp_path / "state" / "bookstream" / "redis.sock"
        assert started.stdout.strip().endswith(str(socket))
        assert bookstream(one, "request", "u", "geb", "--no-wait").returncode == 0
        seen = bookstream(two, "status", "--json")
        # The request queued from the other folder (no worker: not yet admitted).
        assert '"submissions_waiting": 1' in seen.stdout
        assert not (one / ".bookstream").exists() and not (two / ".bookstream").exists()
    finally:
        bookstream(one, "embedded", "stop")


@pytest.fixture
def served_embedded(bookstream_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``bookstream serve`` on the embedded Redis of ``bookstream_env``."""
    serve = subprocess.Popen(
        [str(VENV_BIN / "bookstream"), "serve", "--log-level", "warning"],
        env=bookstream_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = run_cli(bookstream_env, "status")
            if status.returncode == 0 and "alive" in status.stdout:
                break
            time.sleep(0.2)
        yield bookstream_env
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        run_cli(bookstream_env, "embedded", "stop")


def test_the_readme_snippet_runs_from_the_folder_holding_the_clone(
    served_embedded: dict[str, str], tmp_path: Path
) -> None:
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"### The Python client\n\n```python\n(.*?)```", readme, re.S)
    assert snippet is not None
    holder = tmp_path / "holder"
    (holder / "bookstream").mkdir(parents=True)  # what `git clone .../bookstream` makes
    (holder / "bookstream" / "README.md").write_text("a clone\n")
    result = subprocess.run(
        [sys.executable, "-c", snippet.group(1) + "\nprint(outcome.status)"],
        cwd=holder, env=served_embedded, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "accepted"


def test_status_of_a_library_no_worker_ever_served_says_to_start_one(
    redis_server: RedisServer,
    bookstream_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    hint = "hint: no lending or shelving worker ever served library main: start them with"
    fresh = run_cli(bookstream_env, "status", server=redis_server)
    assert fresh.returncode == 0 and hint in fresh.stdout and "bookstream serve" in fresh.stdout
    shown = json.loads(run_cli(bookstream_env, "status", "--json", server=redis_server).stdout)
    assert shown["never_served"] == ["lending", "shelving"]
    start_worker("lending", redis_server).terminate()
    half = run_cli(bookstream_env, "status", server=redis_server).stdout
    assert "hint: no shelving worker ever served library main" in half
    start_worker("shelving", redis_server).terminate()
    served = run_cli(bookstream_env, "status", server=redis_server)
    assert "hint:" not in served.stdout  # served once: stopped workers are another story


def test_a_relative_home_is_refused(bookstream_env: dict[str, str], tmp_path: Path) -> None:
    """BOOKSTREAM_HOME=state was resolved against each command's folder: one embedded
    Redis per folder, where the README promises the same one from every folder."""
    for home in ("state", "."):
        env = {**bookstream_env, "BOOKSTREAM_HOME": home}
        for program in (["bookstream", "status"], ["bookstream-lending", "w1"]):
            done = subprocess.run(
                [str(VENV_BIN / program[0]), *program[1:]],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 2, done
            assert done.stderr == (
                f"{program[0]}: error: BOOKSTREAM_HOME must be an absolute path, not {home!r}\n"
            )
        program = "from bookstream import BadInput, Client\ntry:\n    Client()\n"
        program += "except BadInput as exc:\n    print(exc)\n"
        done = subprocess.run(
            [sys.executable, "-c", program],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert "must be an absolute path" in done.stdout, done
    assert list(tmp_path.iterdir()) == []


def test_a_folder_of_other_files_is_not_taken_for_the_home(
    bookstream_env: dict[str, str], tmp_path: Path
) -> None:
    """BOOKSTREAM_HOME=$PWD in a project: its mode was narrowed to 0700 and it was filled
    with Redis's files."""
    project = tmp_path / "project"
    project.mkdir(mode=0o755)
    (project / "setup.py").write_text("")
    env = {**bookstream_env, "BOOKSTREAM_HOME": str(project)}
    for command in (("embedded", "start"), ("embedded", "status"), ("status",)):
        done = run_cli(env, *command)
        assert done.returncode == 2, done
        assert f"{project} holds other files and nothing of an embedded Redis" in done.stderr
    assert stat.S_IMODE(project.stat().st_mode) == 0o755
    assert [p.name for p in project.iterdir()] == ["setup.py"]
    # Its own directory, or an empty one, is used as before.
    (project / "setup.py").unlink()
    try:
        assert run_cli(env, "embedded", "start").returncode == 0
        assert run_cli(env, "embedded", "start").returncode == 0  # again: its files found
    finally:
        run_cli(env, "embedded", "stop")
