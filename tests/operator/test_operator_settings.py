"""The operator's configuration from the environment, and its logs as configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from bookstream_operator.settings import OperatorConfig, OperatorConfigError


def test_log_settings_come_from_the_workers_variables() -> None:
    config = OperatorConfig.from_env(
        {"BOOKSTREAM_LOG_LEVEL": "WARNING", "BOOKSTREAM_LOG_FORMAT": "json"}
    )
    assert (config.log_level, config.log_format) == ("warning", "json")
    assert (OperatorConfig.from_env({}).log_level, OperatorConfig.from_env({}).log_format) == (
        "info",
        "console",
    )
    for bad in ({"BOOKSTREAM_LOG_LEVEL": "loud"}, {"BOOKSTREAM_LOG_FORMAT": "xml"}):
        with pytest.raises(OperatorConfigError):
            OperatorConfig.from_env(bad)


PROBE = """
import logging, os
from bookstream_operator.main import configure_logging
from bookstream_operator.settings import OperatorConfig
configure_logging(OperatorConfig.from_env(os.environ))
log = logging.getLogger("kopf.objects")
log.debug("a debug line")
log.info("an info line")
log.warning("a warning line")
log.error("an error line")
"""


def _logs(env: dict[str, str]) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def test_the_operator_logs_json_at_the_level_asked_for() -> None:
    lines = _logs({"BOOKSTREAM_LOG_LEVEL": "warning", "BOOKSTREAM_LOG_FORMAT": "json"})
    records = [json.loads(line) for line in lines]
    assert [r["message"] for r in records] == ["a warning line", "an error line"]
    lines = _logs({"BOOKSTREAM_LOG_LEVEL": "debug", "BOOKSTREAM_LOG_FORMAT": "console"})
    assert len(lines) == 4 and "an info line" in lines[1] and not lines[1].startswith("{")
    lines = _logs({"BOOKSTREAM_LOG_LEVEL": "error"})
    assert len(lines) == 1 and "an error line" in lines[0]


def test_a_bad_setting_stops_the_operator_with_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bookstream_operator.main"],
        env={**os.environ, "BOOKSTREAM_LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "BOOKSTREAM_LOG_FORMAT" in proc.stderr
