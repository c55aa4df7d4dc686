"""Metrics as deployed: a real worker with several processes, scraped directly and by a real
Prometheus server evaluating the shipped alert rules and the dashboard's queries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
import yaml
from celery import Celery

from tests.conftest import REPO, Database
from tests.end_to_end.conftest import Services, complete_backups, wait_for, worker_env
from tests.support.postgres_server import free_port

pytestmark = pytest.mark.end_to_end

DEPLOY = REPO / "deploy"


def scrape(port: int) -> dict[str, float]:
    """Return every bakup sample of the worker's /metrics as {series: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("bakup_"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


def two_databases(tmp_path: Path, good: Database, schedule: str) -> tuple[Path, dict[str, str]]:
    """A BAKUP_CONFIG with a working database and one whose password is wrong."""
    config = tmp_path / "bakup.toml"
    config.write_text(
        f'[[targets]]\nname = "good"\nurl_env = "GOOD_URL"\nschedule = "{schedule}"\n\n'
        f'[[targets]]\nname = "broken"\nurl_env = "BROKEN_URL"\nschedule = "{schedule}"\n'
    )
    urls = {
        "GOOD_URL": good.url,
        "BROKEN_URL": good.server.url(good.name, password="wrong-password"),
    }
    return config, urls


@pytest.fixture
def metrics_worker(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services
) -> Iterator[tuple[int, Path, dict[str, str]]]:
    config, urls = two_databases(tmp_path, small_db, "every 2s")
    port = free_port()
    env = worker_env(
        small_db,
        tmp_path / "backups",
        redis_url,
        BAKUP_CONFIG=str(config),
        METRICS_PORT=str(port),
        BACKUP_RETRIES="0",
        **urls,
    )
    services.start("worker", "--beat", "--concurrency", "2", env=env)
    yield port, tmp_path / "backups", env


def test_worker_metrics_add_up_across_processes_and_survive_a_restart(
    metrics_worker: tuple[int, Path, dict[str, str]], services: Services
) -> None:
    port, backup_dir, env = metrics_worker
    success = 'bakup_backups_total{database="good",outcome="success"}'
    failure = 'bakup_backup_failures_total{database="broken",stage="connect"}'
    wait_for(lambda: _value(port, success) >= 4 and _value(port, failure) >= 2, 60, "backups")
    samples = scrape(port)
    assert samples['bakup_backups_total{database="broken",outcome="success"}'] == 0
    assert samples['bakup_schedule_period_seconds{database="good"}'] == 2
    assert samples['bakup_build_info{version="0.1.0"}'] == 1
    assert samples['bakup_stored_backups{database="good"}'] >= 1

    for service in services.started:
        assert service.stop() == 0
    config = Path(env["BAKUP_CONFIG"])  # no more scheduled runs: the values come from disk
    config.write_text(config.read_text().replace('"every 2s"', '"disable"'))
    # Backups beat queued before the stop would run after the restart: wait for every
    # process of the old worker (its beat too) to be gone, then drop queued and unacked ones.
    for service in services.started:
        wait_for(lambda s=service: not _group_alive(s.process.pid), 30, "the old worker to go")
    with Celery(broker=env["REDIS_URL"]).connection_for_write() as connection:
        connection.default_channel.queue_purge("bakup")
    redis.Redis.from_url(env["REDIS_URL"]).delete("unacked", "unacked_index")
    newest = complete_backups(backup_dir / "good")[-1]
    restarted = services.start("worker", env=env)
    last_success = 'bakup_backup_last_success_timestamp_seconds{database="good"}'
    wait_for(lambda: _value(port, last_success) > 0, 30, "gauges restored after the restart")
    restored = scrape(port)
    finished = newest["finished_at"].replace("Z", "+00:00")
    assert restored['bakup_backup_last_success_timestamp_seconds{database="good"}'] == (
        pytest.approx(datetime.fromisoformat(finished).timestamp(), abs=1)
    )
    assert restored['bakup_backup_size_bytes{database="good"}'] == newest["size_bytes"]
    assert restored['bakup_backups_total{database="good",outcome="success"}'] == 0
    restarted.stop()


def _group_alive(pgid: int) -> bool:
    found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    return bool(found.stdout.strip())


def _value(port: int, series: str) -> float:
    try:
        return scrape(port).get(series, 0.0)
    except OSError:
        return 0.0


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[int, Callable[[int], None]]]:
    """A Prometheus server to be started (by calling the second item) for a worker's port."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus missing: run scripts/install-system-packages")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    process = None

    def start(target_port: int) -> None:
        nonlocal process
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {DEPLOY / 'prometheus' / 'alerts.yml'}\n"
            "scrape_configs:\n  - job_name: bakup\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("wb"),
        )

    yield port, start
    if process is not None:
        process.terminate()
        process.wait(timeout=30)


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def alerts(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=10) as response:
        return json.loads(response.read())["data"]["alerts"]


def test_prometheus_scrapes_the_worker_and_every_dashboard_and_alert_query_has_data(
    metrics_worker: tuple[int, Path, dict[str, str]],
    prometheus: tuple[int, Callable[[int], None]],
) -> None:
    metrics_port, _, _ = metrics_worker
    prometheus_port, start = prometheus
    start(metrics_port)
    wait_for(
        lambda: _has(prometheus_port, 'bakup_backups_total{database="good",outcome="success"} > 1'),
        90,
        "Prometheus to see successful backups",
    )
    time.sleep(3)  # a few more scrapes, so rate() and increase() have two samples

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "bakup.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$database", ".*")
            if "bakup_restore_test_duration_seconds" in expr:
                continue  # appears with the first test restore: this worker verifies integrity
            assert query(prometheus_port, expr), f"{panel['title']}: no data for {expr}"

    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]
    for rule in rules["rules"]:
        for name in set(re.findall(r"\b(bakup_[a-z_]+|up)\b", rule["expr"])):
            if name == "bakup_notifications_total":
                continue  # its series appear with the notification channels
            assert query(prometheus_port, name), f"{rule['alert']}: no data for {name}"

    def failure_alert() -> bool:
        return any(
            alert["labels"]["alertname"] == "BakupBackupFailed"
            and alert["labels"].get("database") == "broken"
            and alert["state"] in ("pending", "firing")
            for alert in alerts(prometheus_port)
        )

    wait_for(failure_alert, 30, "the BakupBackupFailed alert for the broken database")
    assert not any(
        alert["labels"].get("database") == "good"
        and alert["labels"]["alertname"] == "BakupBackupFailed"
        for alert in alerts(prometheus_port)
    )


def _has(port: int, expr: str) -> bool:
    try:
        return bool(query(port, expr))
    except OSError:
        return False
