"""Email over SMTP: ``smtp://user:pass@host:587`` (STARTTLS when the server offers it, and
required before a password is sent, except to localhost) or ``smtps://`` (TLS from the start).
Each message is multipart: text first, then HTML with its chart images inline."""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import unquote, urlsplit

from notifications.channels.base import DeliveryError, Notification

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to connect, parsed from SMTP_URL."""

    host: str
    port: int
    implicit_tls: bool
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpServer:
    """Parse SMTP_URL; raises ValueError naming the bad part (never the password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError(f"SMTP_URL has scheme {parts.scheme!r}: use smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("SMTP_URL has no host: write smtp://user:password@host:587")
    try:
        port = parts.port or (465 if parts.scheme == "smtps" else 587)
    except ValueError:
        raise ValueError("SMTP_URL has an invalid port: it must be a number") from None
    return SmtpServer(
        host=parts.hostname,
        port=port,
        implicit_tls=parts.scheme == "smtps",
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


@dataclass(frozen=True)
class EmailChannel:
    """Sends notifications by email."""

    server: SmtpServer
    sender: str
    recipients: tuple[str, ...]
    timeout: float = 30.0
    name: str = "email"

    def send(self, notification: Notification) -> None:
        """Deliver ``notification``; raises DeliveryError (permanent for rejected addresses or
        credentials, transient for connection problems and 4xx answers)."""
        message = self.build(notification)
        where = self.server.describe()
        try:
            self._deliver(message)
        except smtplib.SMTPAuthenticationError as error:
            raise DeliveryError(
                f"{where} rejected the login ({error.smtp_code})", permanent=True
            ) from None
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as error:
            raise DeliveryError(f"{where} refused the addresses: {error}", permanent=True) from None
        except smtplib.SMTPResponseException as error:
            permanent = 500 <= error.smtp_code < 600
            raise DeliveryError(
                f"{where} answered {error.smtp_code}", permanent=permanent
            ) from None
        except (OSError, smtplib.SMTPException) as error:
            raise DeliveryError(f"{where} unreachable: {type(error).__name__}: {error}") from None

    def build(self, notification: Notification) -> EmailMessage:
        """The multipart message: text/plain, then text/html with inline images."""
        message = EmailMessage()
        message["Subject"] = notification.subject
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = make_msgid(domain=socket.getfqdn() or "bakup")
        message.set_content(notification.text)
        message.add_alternative(notification.html, subtype="html")
        _text_part, html_part = message.iter_parts()
        for content_id, png in notification.images.items():
            html_part.add_related(png, "image", "png", cid=f"<{content_id}>")
        return message

    def _deliver(self, message: EmailMessage) -> None:
        server = self.server
        context = ssl.create_default_context()
        if server.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                server.host, server.port, timeout=self.timeout, context=context
            )
        else:
            client = smtplib.SMTP(server.host, server.port, timeout=self.timeout)
        with client:
            client.ehlo()
            secure = server.implicit_tls
            if not secure and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
                secure = True
            if server.user:
                if not secure and server.host not in LOCAL_HOSTS:
                    raise DeliveryError(
                        f"{server.describe()} offers no STARTTLS: refusing to send the password "
                        "unencrypted; use smtps:// or a server with STARTTLS",
                        permanent=True,
                    )
                client.login(server.user, server.password or "")
            client.send_message(message)
