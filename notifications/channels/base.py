"""What every channel shares: the error that says whether a failed delivery may be retried."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class DeliveryError(Exception):
    """A notification could not be delivered.

    ``permanent`` failures (a revoked webhook, a rejected address) are not retried: retrying
    cannot help. Others (timeouts, 5xx, 429) are, after ``retry_after`` seconds if the server
    said so. The message never contains the channel's secret.
    """

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class Notification:
    """A rendered message, ready for any channel."""

    kind: str  # alert, reminder, recovery, success, summary
    database: str
    subject: str
    text: str
    html: str
    fields: dict[str, Any] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)  # content id -> PNG, for email
