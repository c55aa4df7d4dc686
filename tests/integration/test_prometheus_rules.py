"""promtool on the shipped Prometheus files: configuration and rules valid, every alert rule
unit-tested."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import REPO

PROMETHEUS = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: run scripts/install-system-packages"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=PROMETHEUS)


def test_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_rule_passes_its_unit_tests() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_rule_has_a_unit_test_and_runbook_annotations() -> None:
    import yaml

    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    for rule in rules:
        assert rule["alert"] in tested, rule["alert"]
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 80


def test_prometheus_configuration_is_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_dashboard_is_provisioned_from_the_folder_it_ships_in() -> None:
    dashboard = json.loads((GRAFANA / "dashboards" / "bakup.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    datasource = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "uid: prometheus" in datasource
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        assert all(target["expr"] for target in panel["targets"])
