"""Progress of a long backup, restore or verification, shown where the operator looks.

On a terminal (the stream is a tty) a live line: what is being done, how much, the rate, the
table being processed and, when the total is known (the previous backup's size), an ETA.
Anywhere else (cron mail, the worker's log, a pipe) one plain line every ``interval`` seconds
(30 by default; ``PROGRESS_INTERVAL`` overrides it, 0 turns the lines off), in the log's
``[YYYY-MM-DD HH:MM:SS] message`` format, and nothing at all for work that ends before the
first interval: a nightly log gains a line per half-minute of a long dump, not a line per MB.

Lines go to the stream given (stderr by default), never to stdout: stdout carries
``--json`` output and the script's log lines. They name the action, sizes and table names
only, never a connection string. Writing them can never fail the work: a broken stream is
ignored.

The live line is drawn by tqdm: it has no dependencies of its own (rich brings Pygments and
markdown-it, and a console that wants to own the terminal), it imports in a few
milliseconds, its ``update`` is a counter increment and a comparison between redraws (bakup
calls it per 1 MiB block), and it is maintained, widely used and typed (types-tqdm).

Use::

    with Progress("Backing up app", total=previous_size) as progress:
        for chunk in chunks:
            progress.set_item(table)
            progress.advance(len(chunk))
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Never, TextIO

from tqdm import tqdm

from bakup.logs import ScriptFormatter

DEFAULT_INTERVAL = 30.0
# How often the live line is redrawn while no bytes arrive (a stalled dump, an index build).
LIVE_REFRESH_SECONDS = 1.0

_logger = logging.getLogger("bakup.progress")


class _StreamOfRecord(logging.Handler):
    """Writes each progress record to the stream its Progress was given, in the log format."""

    def emit(self, record: logging.LogRecord) -> None:
        stream: TextIO | None = getattr(record, "progress_stream", None)
        if stream is None:
            return
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """A progress line that cannot be written is dropped: it must never fail the work."""


def _install_logger() -> None:
    # A child of "bakup" (its level applies) that does not propagate: the CLI's "bakup"
    # handler writes to stdout, which progress must never reach.
    if not any(isinstance(handler, _StreamOfRecord) for handler in _logger.handlers):
        handler = _StreamOfRecord()
        handler.setFormatter(ScriptFormatter())
        _logger.addHandler(handler)
    _logger.propagate = False


_install_logger()


def progress_interval(
    default: float = DEFAULT_INTERVAL, env: Mapping[str, str] | None = None
) -> float:
    """Return the seconds between two progress lines: ``PROGRESS_INTERVAL`` from ``env``
    (``os.environ`` by default) when it is a number, else ``default``. 0 or less: no lines.
    Raises nothing: a mistyped value leaves the default."""
    value = (os.environ if env is None else env).get("PROGRESS_INTERVAL", "").strip()
    try:
        return float(value) if value else default
    except ValueError:
        return default


def format_size(size: float) -> str:
    """Return ``size`` bytes for a person: ``812 B``, ``3.4 MB``, ``1.21 GB`` (1024-based,
    as the log's "Backup compressed successfully: X MB" line counts)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            break
        size /= 1024
    if unit == "B":
        return f"{int(size)} B"
    return f"{size:.2f} {unit}" if abs(size) < 10 else f"{size:.1f} {unit}"


def format_duration(seconds: float) -> str:
    """Return ``seconds`` as ``M:SS`` or ``H:MM:SS``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_progress_line(
    action: str,
    done: int,
    elapsed: float,
    *,
    total: int | None = None,
    unit: str = "bytes",
    item: str | None = None,
    rate: float | None = None,
) -> str:
    """Return one plain progress line, for example ``Backing up app: 1.50 GB in 2:05
    (12.3 MB/s), table public.orders, 61% of ~2.46 GB, about 1:20 left``.

    Given the action, the amount done, the seconds since the start, the expected total (an
    estimate: once passed, no percentage), the unit (``bytes``, or a name for counted items),
    the current item and the recent rate per second (by default the average since the start).
    """
    if rate is None:
        rate = done / elapsed if elapsed > 0 else 0.0
    if unit == "bytes":
        amount, speed = format_size(done), f"{format_size(rate)}/s"
    else:
        amount, speed = f"{done} {unit}", f"{rate:.1f} {unit}/s"
    parts = [f"{action}: {amount} in {format_duration(elapsed)} ({speed})"]
    if item:
        parts.append(f"table {item}" if unit == "bytes" else item)
    if total and 0 < done < total:
        shown = format_size(total) if unit == "bytes" else f"{total} {unit}"
        part = f"{100 * done // total}% of ~{shown}"
        average = done / elapsed if elapsed > 0 else 0.0
        if average > 0:
            part += f", about {format_duration((total - done) / average)} left"
        parts.append(part)
    return ", ".join(parts)


class Progress:
    """Progress of one action: a live line on a terminal, a log line per interval elsewhere.

    ``action`` says what is done ("Backing up app"); ``total`` is the expected amount when
    known (an estimate is fine); ``unit`` is ``bytes`` or the name of counted items;
    ``stream`` is where output goes (stderr by default, never stdout); ``interval`` is the
    seconds between plain lines (``PROGRESS_INTERVAL`` overrides it). Also a context manager
    that closes it on exit. No method raises.
    """

    def __init__(
        self,
        action: str,
        *,
        total: int | None = None,
        unit: str = "bytes",
        stream: TextIO | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.action = action
        self.unit = unit
        self.total = total
        self.done = 0
        self.item: str | None = None
        self.stream = stream if stream is not None else _default_stream()
        self.interval = progress_interval(interval)
        self._started = time.monotonic()
        self._last_done = 0
        self._last_at = self._started
        self._stop = threading.Event()
        self._closed = False
        self._bar: tqdm[Never] | None = None
        self._ticker: threading.Thread | None = None
        if _is_terminal(self.stream):
            self._bar = _open_bar(action, total, unit, self.stream)
            self._start_ticker(LIVE_REFRESH_SECONDS)
        elif self.interval > 0:
            self._start_ticker(self.interval)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def advance(self, amount: int) -> None:
        """Count ``amount`` more bytes (or items) done since the last call."""
        self.done += amount
        if self._bar is not None:
            with contextlib.suppress(Exception):
                self._bar.update(amount)

    def set_item(self, name: str) -> None:
        """Name what is processed now (the table whose data is read); shown from the next
        redraw or line on."""
        if name == self.item:
            return
        self.item = name
        if self._bar is not None:
            with contextlib.suppress(Exception):
                self._bar.set_postfix_str(name, refresh=False)

    def set_total(self, total: int | None) -> None:
        """Set (or, with None, forget) the expected total."""
        self.total = total
        if self._bar is not None:
            with contextlib.suppress(Exception):
                self._bar.total = total
                self._bar.refresh()

    def close(self) -> None:
        """Stop the lines and clear the live line (the log's own lines follow on a clean
        line). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        ticker = self._ticker
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join(timeout=5)
        if self._bar is not None:
            with contextlib.suppress(Exception):
                self._bar.close()

    def line(self, now: float | None = None) -> str:
        """Return the plain progress line as of ``now`` (a time.monotonic() reading): the
        rate is the one since the previous line."""
        now = time.monotonic() if now is None else now
        done = self.done
        span = now - self._last_at
        rate = (done - self._last_done) / span if span > 0 else None
        self._last_done, self._last_at = done, now
        return format_progress_line(
            self.action,
            done,
            now - self._started,
            total=self.total,
            unit=self.unit,
            item=self.item,
            rate=rate,
        )

    # -- the ticker -------------------------------------------------------------------

    def _start_ticker(self, period: float) -> None:
        self._ticker = threading.Thread(
            target=self._tick, args=(period,), name="bakup-progress", daemon=True
        )
        self._ticker.start()

    def _tick(self, period: float) -> None:
        """Every ``period`` seconds until closed: redraw the live line (so the clock moves
        while no bytes arrive) or log a plain line (stalled or not: a stall is news)."""
        while not self._stop.wait(period):
            try:
                if self._bar is not None:
                    self._bar.refresh()
                else:
                    _logger.info(self.line(), extra={"progress_stream": self.stream})
            except Exception:  # progress must never take the work down
                continue


def _default_stream() -> TextIO:
    """stderr; under Celery, whose worker replaces sys.stderr with a logger proxy (that
    would turn each line into a WARNING record), the process's real stderr."""
    stream = sys.stderr
    try:
        usable = stream.fileno() >= 0
    except Exception:
        usable = False
    if not usable and sys.__stderr__ is not None and type(stream).__name__ == "LoggingProxy":
        return sys.__stderr__
    return stream


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except Exception:
        return False


def _open_bar(action: str, total: int | None, unit: str, stream: TextIO) -> tqdm[Never]:
    """The live line: leave=False clears it at the end, so an error or the log's next line
    starts on a clean line."""
    is_bytes = unit == "bytes"
    bar: tqdm[Never] = tqdm(
        total=total,
        desc=action,
        unit="B" if is_bytes else f" {unit}",
        unit_scale=is_bytes,
        unit_divisor=1024,
        file=stream,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
        smoothing=0.1,
    )
    return bar
