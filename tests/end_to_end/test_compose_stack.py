"""The compose file's worker and beat, run natively with the commands and settings the file
gives them (only the addresses of the servers changed), so compose cannot drift from what is
tested here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, Database, base_env
from tests.end_to_end.conftest import Services, complete_backups, wait_for
from tests.support.postgres_server import find_server_bin, free_port
from tests.support.receivers import SmtpReceiver

pytestmark = pytest.mark.end_to_end

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
DOCKERFILE = (REPO / "deploy" / "Dockerfile").read_text()


def command_of(service: str) -> list[str]:
    """The service's full command: the image's ENTRYPOINT plus compose's command."""
    entrypoint = yaml.safe_load(re.search(r"^ENTRYPOINT (.+)$", DOCKERFILE, re.MULTILINE).group(1))
    return [*entrypoint, *COMPOSE["services"][service]["command"]]


def compose_environment(service: str) -> dict[str, str]:
    """What the service's env files set."""
    values = {}
    for env_file in COMPOSE["services"][service]["env_file"]:
        for line in (REPO / env_file).read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = line.split("=", 1)
                values[key.strip()] = value
    return values


def test_the_compose_worker_and_beat_back_up_verify_and_email_as_configured(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services, smtp: SmtpReceiver
) -> None:
    assert command_of("worker") == ["bakup", "worker"]
    assert command_of("beat") == ["bakup", "beat"]
    settings = compose_environment("worker")
    assert settings["NOTIFY_ON_SUCCESS"] == "true" and settings["SMTP_URL"].startswith(
        "smtp://mailpit"
    )
    local = {
        # The stack's server addresses, pointed at the servers of this test.
        "DATABASE_URL": small_db.url,
        "REDIS_URL": redis_url,
        "SMTP_URL": smtp.url,
        # The image's ENV, for a machine that is not the image.
        "BACKUP_DIR": str(tmp_path / "backups"),
        "BEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule"),
        "PG_BIN_DIR": str(find_server_bin()),
        "METRICS_PORT": str(free_port()),
        # Seconds, not the demo's ten minutes.
        "BACKUP_SCHEDULE": "every 3s",
    }
    env = base_env(**{**settings, **local})
    worker = services.start(*command_of("worker")[1:], env=env)
    services.start(*command_of("beat")[1:], env=env)
    wait_for(lambda: worker.count("Backup verified successfully") >= 1, 90, "a verified backup")
    wait_for(lambda: len(smtp.messages) >= 1, 60, "the success email")
    backups = complete_backups(tmp_path / "backups")
    assert backups and backups[0]["verification"]["level"] == "restore"
    assert "succeeded" in smtp.messages[0]["Subject"]
    assert "Traceback" not in worker.output()
