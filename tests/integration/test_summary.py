"""The weekly summary, from real backups and their run journal: printed, previewed (and
rendered by headless Chromium), and sent by email with its chart inline."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import Database, base_env, run_bakup
from tests.support.receivers import SmtpReceiver

pytestmark = pytest.mark.integration

BAR_COLOURS = ((0x1F, 0x6F, 0xEB), (0x0B, 0x3D, 0x91))  # notifications/chart.py


@pytest.fixture
def history(small_db: Database, tmp_path: Path) -> dict[str, str]:
    """Two good backups and one failure of ``small_db``."""
    env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(tmp_path / "backups"))
    assert run_bakup("backup", env=env).returncode == 0
    assert run_bakup("backup", env=env).returncode == 0
    wrong = small_db.server.url(small_db.name, password="wrong")
    assert run_bakup("backup", env={**env, "DATABASE_URL": wrong}).returncode == 1
    assert run_bakup("verify", env=env).returncode == 0
    return env


def test_the_summary_counts_the_weeks_backups_and_failures(history: dict[str, str]) -> None:
    result = run_bakup("summary", env=history)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "backups taken / failed:  2 / 1 (67 %)" in text
    assert "newest verified backup:  postgres_backup_" in text
    assert "in 2 backups" in text
    assert "▁" in text or "█" in text  # the sparkline


def test_the_preview_embeds_the_chart_and_chromium_shows_it(
    history: dict[str, str], tmp_path: Path
) -> None:
    preview = tmp_path / "summary.html"
    result = run_bakup("summary", "--preview", str(preview), env=history)
    assert result.returncode == 0, result.stderr
    html = preview.read_text()
    assert 'src="data:image/png;base64,' in html
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium missing: run scripts/install-system-packages")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=800,900",
            preview.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    image = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    colours = dict((colour, count) for count, colour in image.getcolors(maxcolors=1 << 20))
    bars = sum(colours.get(colour, 0) for colour in BAR_COLOURS)
    assert bars > 200, "the chart's bars are not on the rendered page"


def test_the_summary_is_sent_by_email_with_the_chart_inline(
    history: dict[str, str], smtp: SmtpReceiver
) -> None:
    env = {
        **history,
        "SMTP_URL": smtp.url,
        "ALERT_EMAIL_FROM": "bakup@example.com",
        "ALERT_EMAIL_TO": "ops@example.com",
    }
    result = run_bakup("summary", "--send", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    [message] = smtp.messages
    assert message["Subject"].startswith("bakup weekly summary")
    html_part = message.get_body(("html",))
    assert 'src="cid:size-0@bakup"' in html_part.get_content()
    images = [part for part in message.walk() if part.get_content_type() == "image/png"]
    assert len(images) == 1 and images[0]["Content-ID"] == "<size-0@bakup>"
    Image.open(io.BytesIO(images[0].get_content())).verify()
    assert "2 / 1" in message.get_body(("plain",)).get_content()
