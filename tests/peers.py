"""Real network peers for the notifier's tests (every tier): an HTTP receiver of webhooks and an SMTP server.

Not fixtures themselves (see ``tests/integration/conftest.py``): plain classes, so a test can start more than one.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from semaflow.redis_server import free_port

#: A scripted answer: a status, a status with headers, or ``HANG`` (never answer until released).
HANG = "hang"
Script = int | tuple[int, dict[str, str]] | str


@dataclass
class Hit:
    """One request the receiver got."""

    path: str
    at: float
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An aiohttp server on 127.0.0.1 that records every request and answers each path as scripted.

    A path answers its scripted answers in order, then repeats the last one (default: 200).
    """

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.scripts: dict[str, list[Script]] = {}
        self.served: dict[str, int] = {}
        self.release = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str = "/hook") -> str:
        """The URL of ``path`` on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *answers: Script) -> None:
        """Answer ``path`` with these, in order (the last repeats)."""
        self.scripts[path] = list(answers)

    def at(self, path: str) -> list[Hit]:
        """The requests ``path`` got, in arrival order."""
        return [h for h in self.hits if h.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with self._arrived:
            self.hits.append(Hit(request.path, time.monotonic(), dict(request.headers), body))
            self._arrived.notify_all()
        answers = self.scripts.get(request.path, [200])
        n = self.served.get(request.path, 0)
        self.served[request.path] = n + 1
        answer = answers[min(n, len(answers) - 1)]
        if answer == HANG:
            await self.release.wait()
            return web.Response(status=503)
        if isinstance(answer, tuple):
            status, headers = answer
            return web.Response(status=status, headers=headers, text=f"answer {status}")
        assert isinstance(answer, int)
        if 300 <= answer < 400:
            return web.Response(status=answer, headers={"Location": self.url("/redirected")})
        return web.Response(status=answer, text=f"answer {answer} " + "x" * 2000)

    async def wait_for(self, path: str, count: int, timeout_s: float = 30.0) -> list[Hit]:
        """Wait until ``path`` got at least ``count`` requests; fails after ``timeout_s``."""

        def enough() -> bool:
            return len(self.at(path)) >= count

        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(enough), timeout_s)
            except TimeoutError:
                raise AssertionError(f"{path} got {len(self.at(path))} requests, expected {count}") from None
        return self.at(path)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Mail:
    """A message the SMTP server accepted, and how the client talked to it."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    tls: bool
    login: str | None

    def part(self, subtype: str) -> str:
        """The text of the ``text/plain`` or ``text/html`` part."""
        for part in self.message.walk():
            if part.get_content_type() == f"text/{subtype}":
                content: str = part.get_content()
                return content
        raise AssertionError(f"no text/{subtype} part in {self.message['Subject']!r}")


class _ClosingController(Controller):
    """aiosmtpd's threaded controller that closes every client connection it accepted when it stops.

    Left to the garbage collector, a connection still open when the loop ends (a STARTTLS session
    whose TLS shutdown had not finished) reports an unclosed transport in a later test.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: list[SMTP] = []

    def factory(self) -> SMTP:
        session: SMTP = super().factory()  # type: ignore[no-untyped-call]
        self.sessions.append(session)
        return session

    async def _close_sessions(self) -> None:
        for session in self.sessions:
            for transport in (session.transport, session._original_transport):
                if transport is not None and not transport.is_closing():
                    transport.close()
        await asyncio.sleep(0.05)  # let the transports' connection_lost callbacks run

    def stop(self, no_assert: bool = False) -> None:
        if self._thread is not None and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._close_sessions(), self.loop).result(5)
        super().stop(no_assert)


@dataclass
class SmtpServer:
    """An aiosmtpd server on 127.0.0.1, optionally requiring STARTTLS and a login."""

    tls: ssl.SSLContext | None = None
    users: dict[str, str] = field(default_factory=dict)
    mails: list[Mail] = field(default_factory=list)
    port: int = 0
    _controller: _ClosingController | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd calls this name
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.mails.append(
            Mail(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                message_from_bytes(envelope.content, policy=policy.default),
                session.ssl is not None,
                login,
            )
        )
        return "250 OK"

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.users.get(data.login.decode()) == data.password.decode()
        return AuthResult(success=ok, auth_data=data)

    def start(self, port: int | None = None) -> None:
        self.port = port or free_port()
        extra: dict[str, Any] = {}
        if self.tls is not None:
            extra = {"tls_context": self.tls, "require_starttls": True}
        if self.users:
            extra |= {"authenticator": self._authenticate, "auth_require_tls": self.tls is not None}
        self._controller = _ClosingController(self, hostname="127.0.0.1", port=self.port, **extra)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    async def wait_for(self, count: int, timeout_s: float = 30.0) -> list[Mail]:
        """Wait until at least ``count`` mails arrived."""
        deadline = time.monotonic() + timeout_s
        while len(self.mails) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.mails)} mails arrived, expected {count}")
            await asyncio.sleep(0.05)
        return self.mails


async def eventually(check: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.05) -> Any:
    """Poll an async or plain ``check`` until it returns something truthy; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if asyncio.iscoroutine(found):
            found = await found
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s} s: {check}")
        await asyncio.sleep(interval_s)
