"""Removing secrets from text meant for people: one helper for every message bakup writes.

The first defence is that secrets never reach a message: passwords travel only in a child's
environment or a private service file, never in argv or a connection string that a program
could echo. This is the second: it hides credentials where they have a shape (``:password@``
in a URL, ``password=...`` in a connection string), and a known secret wherever it stands as
a whole. A short secret is not searched for as such: replacing every "p" of a message for a
one-letter password would garble the message and, by showing where the letter was, still
give it away.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

MASK = "***"

# Shorter secrets are not searched for inside free text (see the module's docstring).
MIN_SECRET_LENGTH = 4

# scheme://user:PASSWORD@ (the password ends at the first "@"; one with an unencoded "@" or
# "/" is refused when the URL is read, so it cannot reach a message).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@]*(?=@)")

# password=..., sslpassword='...' in a libpq connection string.
_CONNINFO_SECRET = re.compile(
    r"(?P<head>\b(?:password|sslpassword|oauth_client_secret)\s*=\s*)"
    r"(?:'(?:[^'\\]|\\.)*'|[^\s']+)",
    re.IGNORECASE,
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` without credentials.

    Given the text and the secrets it may hold (None and empty ones are skipped); returns it
    with every URL password, every connection-string password and every whole occurrence of
    a secret at least MIN_SECRET_LENGTH long (as typed or percent-encoded) replaced by
    ``***``. A whole occurrence is one not glued to letters or digits, so other words that
    merely contain the secret are left as they are. Raises nothing.
    """
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}", text)
    text = _CONNINFO_SECRET.sub(rf"\g<head>{MASK}", text)
    forms = {
        form
        for secret in secrets
        if secret and len(secret) >= MIN_SECRET_LENGTH
        for form in (secret, quote(secret, safe=""))
    }
    for form in sorted(forms, key=len, reverse=True):
        text = re.sub(rf"(?<![^\W_]){re.escape(form)}(?![^\W_])", MASK, text)
    return text
