"""Getting the metrics to Prometheus.

- The worker: Celery's prefork pool runs backups in child processes, so the metrics live in
  prometheus-client's multiprocess mode (one file per process in a directory); the main
  process serves /metrics from all of them. Counters of children that exited stay counted, so
  a child's restart never resets them.
- A one-shot `bakup backup` (cron, by hand): pushes its figures to a Pushgateway
  (PUSHGATEWAY_URL, grouped by database, with pushadd so a failed run never erases the last
  success) or writes a node_exporter textfile (METRICS_TEXTFILE), atomically.

The worker's multiprocess folder (``bakup-metrics-*`` in the temporary directory) records its
owner; the worker removes it when it stops, and each start removes those of workers that are
provably dead (killed with SIGKILL, out of memory): a folder is never left behind for good.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("bakup")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_DIR_PREFIX = "bakup-metrics-"
OWNER_FILE = "owner.json"


def prepare_multiprocess_dir(directory: Path) -> None:
    """Empty ``directory`` and point prometheus-client at it. Call before importing it."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(directory)


def create_multiprocess_dir(parent: Path | None = None) -> Path:
    """Make this worker's multiprocess folder and point prometheus-client at it; call before
    importing it. First removes the folders of workers that are provably gone.

    Given the folder to create it in (the temporary directory by default); returns the new
    ``bakup-metrics-*`` folder (0700), which records its owner (host, boot, pid and the pid's
    start time) in ``owner.json``. Raises OSError when it cannot be created.
    """
    from bakup.lifecycle import Owner

    parent = Path(tempfile.gettempdir()) if parent is None else parent
    remove_stale_multiprocess_dirs(parent)
    directory = Path(tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX, dir=parent))
    (directory / OWNER_FILE).write_text(json.dumps(Owner.current().to_json()), encoding="utf-8")
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def remove_stale_multiprocess_dirs(parent: Path) -> list[Path]:
    """Remove the ``bakup-metrics-*`` folders in ``parent`` whose recorded owner is provably
    dead: it ran on this machine since its last boot and no process with its pid and start
    time exists. A folder without a readable owner record, another user's, or one whose
    owner is alive or cannot be judged (another host or container) is kept. Returns the
    folders removed; raises nothing."""
    from bakup.lifecycle import Owner

    removed = []
    for candidate in sorted(parent.glob(f"{METRICS_DIR_PREFIX}*")):
        try:
            if candidate.is_symlink() or candidate.lstat().st_uid != os.getuid():
                continue
            owner = Owner.from_json(json.loads((candidate / OWNER_FILE).read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # no proof its owner is gone: keep it
        if owner.is_gone():
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    if removed:
        log.info("Removed %d metrics folder(s) left by stopped workers", len(removed))
    return removed


def serve_multiprocess(address: str, port: int) -> Any:
    """Serve /metrics aggregated over every process of the worker; returns the server."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    server, _thread = start_http_server(port, addr=address, registry=registry)
    log.info("Serving metrics on http://%s:%d/metrics", address, port)
    return server


def mark_process_dead(pid: int) -> None:
    """Forget the live-only gauges of a child process that exited."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def publish_once(registry: Any, pushgateway_url: str | None, textfile: str | None) -> None:
    """Send a one-shot run's metrics where configured; logs, never raises, on failure: the
    backup's own outcome must not depend on its metrics."""
    from prometheus_client import pushadd_to_gateway, write_to_textfile

    if pushgateway_url:
        try:
            # pushadd replaces only the series this run sends: every database's, restored
            # from the manifests, so a failed run never erases the last success.
            pushadd_to_gateway(
                pushgateway_url,
                job="bakup",
                grouping_key={"instance": socket.gethostname()},
                registry=registry,
                timeout=10,
            )
        except Exception as error:
            log.warning("WARNING: could not push metrics to the Pushgateway: %s", error)
    if textfile:
        try:
            write_to_textfile(textfile, registry)
        except OSError as error:
            log.warning("WARNING: could not write metrics to %s: %s", textfile, error)
