"""Generic webhook: the notification as JSON, signed with HMAC-SHA256 when WEBHOOK_SECRET is
set (header ``X-Bakup-Signature-256: sha256=<hex of the body's HMAC>``), so receivers can
check it came from bakup."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field

from notifications.channels.base import Notification
from notifications.channels.http import post_bytes

SIGNATURE_HEADER = "X-Bakup-Signature-256"


@dataclass(frozen=True)
class WebhookChannel:
    """Posts notifications as JSON to any URL."""

    url: str = field(repr=False)
    secret: str | None = field(default=None, repr=False)
    name: str = "webhook"

    def send(self, notification: Notification) -> None:
        """Deliver ``notification``; raises DeliveryError."""
        body = json.dumps(
            {
                "kind": notification.kind,
                "database": notification.database,
                "subject": notification.subject,
                "text": notification.text,
                **{k: v for k, v in notification.fields.items() if not k.startswith("slack")},
            },
            separators=(",", ":"),
            default=str,
        ).encode()
        headers = {}
        if self.secret:
            digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        post_bytes(self.url, body, headers=headers, label="webhook")
