"""Crash points, so that tests can kill bakup at each step of a backup's lifecycle with a real
SIGKILL and check that nothing is lost or listed half-made.

``BAKUP_CRASH_AT=<point>`` in the environment makes the process kill itself when it reaches
that point; ``BAKUP_PAUSE_AT=<point>:<seconds>`` makes it stop there that long (a run that
froze, or that works longer than its lease). Unset (always, in production), ``reach`` does
nothing. The points are named in docs/backup-lifecycle.md.
"""

from __future__ import annotations

import os
import signal
import time

POINTS = (
    "claimed",  # the claim is recorded, no data yet
    "published",  # the data is under its final name, the claim not yet replaced
    "completed",  # the backup is recorded complete, the prune after it not begun
    "retiring",  # retention marked a backup deleting, its data still there
    "retired-data",  # its data deleted, its manifest not yet
    "verifying",  # a verification read the backup and is about to record the result
    "chunks-stored",  # a deduplicated backup stored its chunks, its index not yet written
    "collecting",  # a chunk collection is recorded, nothing deleted yet
    "collected-one",  # a chunk collection deleted one unreferenced chunk
)
# The points only deduplicated backups reach (their chunks, and the prune's collection).
DEDUP_POINTS = ("chunks-stored", "collecting", "collected-one")


def reach(point: str) -> None:
    """Die here, at once and without clean-up, or pause here, if the environment asks for
    ``point``."""
    if os.environ.get("BAKUP_CRASH_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
    paused, _, seconds = os.environ.get("BAKUP_PAUSE_AT", "").partition(":")
    if paused == point:
        time.sleep(float(seconds or 0))
