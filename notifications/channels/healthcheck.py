"""Dead man's switch, healthchecks.io style: ``<url>/start`` when a backup starts, ``<url>``
on success, ``<url>/fail`` (with the error as body) on failure. The outside service notices
when pings stop altogether, which nothing inside bakup can."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from notifications.channels.base import DeliveryError
from notifications.channels.http import TIMEOUT, describe

SUFFIXES = {"start": "/start", "success": "", "fail": "/fail"}


@dataclass(frozen=True)
class HealthcheckPing:
    """Pings a healthchecks.io-style URL."""

    url: str = field(repr=False)
    name: str = "healthcheck"

    def ping(self, state: str, body: str = "") -> None:
        """Ping for ``state`` (start, success, fail); raises DeliveryError."""
        target = self.url.rstrip("/") + SUFFIXES[state]
        try:
            with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client:
                response = client.post(target, content=body.encode()[:10000])
        except httpx.HTTPError as error:
            raise DeliveryError(
                f"ping to {describe(self.url)} failed: {type(error).__name__}"
            ) from None
        if response.status_code >= 400:
            raise DeliveryError(
                f"ping to {describe(self.url)} answered {response.status_code}",
                permanent=400 <= response.status_code < 500 and response.status_code != 429,
            )
