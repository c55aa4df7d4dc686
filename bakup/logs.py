"""Log output in the original backup script's format: ``[YYYY-MM-DD HH:MM:SS] message`` (UTC).

Operators grep for the script's lines ("Backup completed successfully",
"ERROR: Failed to create backup"), so their format and wording are kept.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

RULE = "=" * 60


class ScriptFormatter(logging.Formatter):
    """Formats records as ``[YYYY-MM-DD HH:MM:SS] message`` in UTC, as the original script did."""

    converter = staticmethod(time.gmtime)

    def __init__(self) -> None:
        super().__init__("[%(asctime)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S")


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send bakup's log records to ``stream`` (stdout by default) in the script's format.

    Given the level and the stream (stderr for a command whose stdout a program reads, such
    as ``list --json``); replaces handlers installed by an earlier call so it can run twice.
    """
    root = logging.getLogger("bakup")
    for handler in list(root.handlers):
        if getattr(handler, "_bakup", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(ScriptFormatter())
    handler._bakup = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def megabytes(size: int) -> str:
    """Return ``size`` bytes as the script printed it: ``0.03 MB``."""
    return f"{size / (1024 * 1024):.2f} MB"
