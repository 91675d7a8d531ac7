"""The alerts: valid rules, unit-tested with promtool, shipped by the chart, with a runbook."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import yaml

from tests.deploy import tools

RULES = tools.CHART / "alerts" / "bookstream.rules.yaml"
RULE_TESTS = tools.ROOT / "deploy" / "prometheus" / "bookstream.rules.test.yaml"
RUNBOOK = tools.ROOT / "docs/runbook.md"
PROM_OPERATOR = ["monitoring.coreos.com/v1"]


def promtool(*args: str) -> str:
    exe = shutil.which("promtool")
    if exe is None:
        tools.missing_tool("promtool is missing: apt-get install prometheus (make test does)")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_rules_are_valid_and_pass_their_unit_tests() -> None:
    assert "SUCCESS: 6 rules found" in promtool("check", "rules", str(RULES))
    promtool("test", "rules", str(RULE_TESTS))


def test_every_alert_is_tested_firing_and_silent() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing, silent = set(), set()
    for case in cases:
        for check in case.get("alert_rule_test") or []:
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names == {
        "BookstreamBacklogHigh",
        "BookstreamOldestPendingTooOld",
        "BookstreamDeadLettersIncreasing",
        "BookstreamNoReadyWorker",
        "BookstreamWorkerLosingRedis",
        "BookstreamOutcomesSlow",
    }
    assert firing == names, names - firing
    assert silent == names, names - silent


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for heading in re.findall(r"(?m)^#+\s+(.+)$", markdown):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_every_alert_has_a_runbook_entry() -> None:
    anchors = _anchors(RUNBOOK.read_text())
    for alert in alerts():
        link = alert["annotations"]["runbook"]
        path, _, anchor = link.partition("#")
        assert path == "docs/runbook.md", link
        assert anchor == alert["alert"].lower() and anchor in anchors, alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}


def test_the_chart_ships_the_same_rules_as_a_prometheus_rule() -> None:
    objects = tools.render(
        {"monitoring.prometheusRule.labels.release": "kps"}, api_versions=PROM_OPERATOR
    )
    rule = tools.one(objects, "PrometheusRule")
    tools.validate(rule)
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert rule["metadata"]["labels"]["release"] == "kps"
    # Without the Prometheus Operator's API, or when turned off: none.
    assert not tools.by_kind(tools.render(), "PrometheusRule")
    off = {"monitoring.prometheusRule.enabled": "false"}
    assert not tools.by_kind(tools.render(off, api_versions=PROM_OPERATOR), "PrometheusRule")
