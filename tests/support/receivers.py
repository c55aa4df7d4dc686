"""Real local servers that receive what bakup sends: an SMTP server (aiosmtpd) and an HTTP
server standing in for Slack, webhooks and healthchecks, answering from a script."""

from __future__ import annotations

import email
import email.policy
import threading
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.postgres_server import free_port


class _Collect:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.raw: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.raw.append(envelope.content)
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[arg-type]
        )
        return "250 OK"


@dataclass
class SmtpReceiver:
    """An SMTP server on localhost collecting every message."""

    port: int
    handler: _Collect
    controller: Controller

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[EmailMessage]:
        return self.handler.messages

    def stop(self) -> None:
        self.controller.stop()


def start_smtp(port: int | None = None) -> SmtpReceiver:
    """Start an SMTP server on ``port`` (a free one by default) that keeps what it receives."""
    handler = _Collect()
    port = port or free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    return SmtpReceiver(port, handler, controller)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    """An HTTP server recording requests and answering (status, headers, body) from a script;
    when the script is empty it answers 200 "ok"."""

    server: ThreadingHTTPServer
    requests: list[Request] = field(default_factory=list)
    script: deque[tuple[int, dict[str, str], bytes]] = field(default_factory=deque)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, *responses: tuple[int, dict[str, str], bytes]) -> None:
        self.script.extend(responses)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_http() -> HttpReceiver:
    receiver: HttpReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            receiver.requests.append(Request(self.path, dict(self.headers.items()), body))
            status, headers, reply = (
                receiver.script.popleft() if receiver.script else (200, {}, b"ok")
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    receiver = HttpReceiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver
