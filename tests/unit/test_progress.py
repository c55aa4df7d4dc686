"""Progress lines: their wording, when they appear, and that they never fail the work."""

from __future__ import annotations

import io
import logging
import re
import time

import pytest

from bakup.logs import configure_logging
from bakup.progress import (
    Progress,
    format_duration,
    format_progress_line,
    format_size,
    progress_interval,
)

LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(5, "Input/output error")


@pytest.fixture(autouse=True)
def _bakup_logging() -> None:
    configure_logging(logging.INFO, stream=io.StringIO())


def test_sizes_and_durations_read_like_the_log_does() -> None:
    assert format_size(812) == "812 B"
    assert format_size(3.4 * 1024 * 1024) == "3.40 MB"
    assert format_size(1610612736) == "1.50 GB"
    assert format_size(300 * 1024**3) == "300.0 GB"
    assert format_duration(65) == "1:05"
    assert format_duration(3725) == "1:02:05"


def test_a_line_says_action_amount_rate_table_share_and_time_left() -> None:
    line = format_progress_line(
        "Backing up app", 1610612736, 125, total=2641404887, item="public.orders"
    )
    assert line == (
        "Backing up app: 1.50 GB in 2:05 (12.3 MB/s), table public.orders, "
        "60% of ~2.46 GB, about 1:20 left"
    )


def test_a_line_without_total_or_past_the_estimate_has_no_share_or_time_left() -> None:
    assert format_progress_line("Backing up app", 2048, 2) == (
        "Backing up app: 2.00 KB in 0:02 (1.00 KB/s)"
    )
    # The previous backup's size is an estimate: once passed, no "105%" and no negative ETA.
    past = format_progress_line("Backing up app", 2100, 2, total=2000)
    assert "%" not in past and "left" not in past


def test_a_line_counts_items_when_the_unit_is_not_bytes() -> None:
    line = format_progress_line("Restoring app", 3, 2, total=12, unit="tables", item="indexes")
    assert line == (
        "Restoring app: 3 tables in 0:02 (1.5 tables/s), indexes, 25% of ~12 tables, "
        "about 0:06 left"
    )


def test_the_interval_comes_from_progress_interval_and_a_bad_value_keeps_the_default() -> None:
    assert progress_interval(30.0, {}) == 30.0
    assert progress_interval(30.0, {"PROGRESS_INTERVAL": "0.5"}) == 0.5
    assert progress_interval(30.0, {"PROGRESS_INTERVAL": "soon"}) == 30.0


def test_plain_lines_appear_every_interval_in_the_log_format_even_while_stalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROGRESS_INTERVAL", "0.1")
    stream = io.StringIO()
    with Progress("Backing up app", total=10 << 20, stream=stream) as progress:
        progress.set_item("public.orders")
        progress.advance(2 << 20)
        time.sleep(0.45)  # nothing arrives: the lines go on, the stall shows
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2
    for line in lines:
        assert LOG_LINE.match(line), line
        assert "Backing up app: 2.00 MB in" in line and "table public.orders" in line
        assert "20% of ~10.0 MB" in line
    assert "(0 B/s)" in lines[-1]  # the rate is the recent one


def test_work_that_ends_before_the_first_interval_prints_nothing() -> None:
    stream = io.StringIO()
    with Progress("Backing up app", stream=stream, interval=30) as progress:
        progress.advance(1 << 20)
    assert stream.getvalue() == ""


def test_progress_lines_obey_the_bakup_loggers_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROGRESS_INTERVAL", "0.05")
    configure_logging(logging.WARNING, stream=io.StringIO())
    stream = io.StringIO()
    with Progress("Backing up app", stream=stream) as progress:
        progress.advance(1)
        time.sleep(0.2)
    assert stream.getvalue() == ""


def test_a_terminal_gets_a_live_line_that_is_cleared_at_the_end() -> None:
    stream = Terminal()
    with Progress("Backing up app", total=4 << 20, stream=stream) as progress:
        progress.set_item("public.orders")
        for _ in range(4):
            progress.advance(1 << 20)
            time.sleep(0.2)
    text = stream.getvalue()
    assert "Backing up app" in text and "public.orders" in text and "\n" not in text
    # Cleared: the last thing written blanks the line and returns to its start.
    assert text.endswith("\r") and text.rstrip("\r").split("\r")[-1].strip() == ""


def test_a_broken_stream_never_fails_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROGRESS_INTERVAL", "0.05")
    with Progress("Backing up app", stream=BrokenStream()) as progress:
        progress.advance(1)
        progress.set_item("public.t")
        progress.set_total(10)
        time.sleep(0.15)
    with Progress("Backing up app", stream=BrokenStream()) as progress:
        progress.close()
        progress.close()
