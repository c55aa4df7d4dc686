"""Posting JSON to a webhook with httpx: explicit timeouts, no redirects, and every answer
sorted into delivered, retry later (timeouts, 429 with its Retry-After, 5xx) or give up (other
4xx: a revoked or malformed webhook will not heal by itself)."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx

from notifications.channels.base import DeliveryError

TIMEOUT = httpx.Timeout(10.0, connect=5.0)

# httpx logs every request's full URL at INFO, and a webhook's path is its secret token.
logging.getLogger("httpx").setLevel(logging.WARNING)


def describe(url: str) -> str:
    """The URL's scheme and host only: webhook paths carry tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}"


def post_json(url: str, payload: Any, *, headers: dict[str, str] | None = None, label: str) -> str:
    """POST ``payload`` as JSON to ``url``; returns the response body.

    Raises DeliveryError (permanent for 4xx other than 429), never showing the URL's path.
    """
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    return post_bytes(url, body, headers=headers, label=label)


def post_bytes(url: str, body: bytes, *, headers: dict[str, str] | None = None, label: str) -> str:
    """POST ``body`` (already JSON) to ``url``; see post_json."""
    where = f"{label} ({describe(url)})"
    try:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client:
            response = client.post(
                url, content=body, headers={"Content-Type": "application/json", **(headers or {})}
            )
    except httpx.TimeoutException:
        raise DeliveryError(f"{where} timed out") from None
    except httpx.HTTPError as error:
        raise DeliveryError(f"{where} unreachable: {type(error).__name__}") from None
    text = response.text[:200].strip()
    if response.status_code == 429:
        raise DeliveryError(
            f"{where} is rate limiting (429)",
            retry_after=_seconds(response.headers.get("Retry-After")),
        )
    if response.status_code >= 500:
        raise DeliveryError(f"{where} answered {response.status_code} {text}")
    if response.status_code >= 300:
        raise DeliveryError(f"{where} answered {response.status_code} {text}", permanent=True)
    return response.text


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
