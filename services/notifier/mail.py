"""Notification mail: templates rendered to plain text and HTML, sent over SMTP (STARTTLS, TLS, auth)."""

from __future__ import annotations

import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import jinja2
import structlog

from shared import keys
from shared.errors import ConfigurationError, PermanentError, TransientError
from shared.records import tenants

if TYPE_CHECKING:
    import redis

    from services.notifier.metrics import NotifierMetrics
    from shared.config import Settings

log = structlog.get_logger(__name__)

TEMPLATES: Final = Path(__file__).parent / "templates"
SUBJECTS: Final[dict[str, str]] = {
    "job_failed": "[semaflow] Job {{ job_id }} failed in {{ collection }}",
    "delivery_exhausted": "[semaflow] A webhook delivery to {{ url }} gave up",
    "endpoint_disabled": "[semaflow] Webhook endpoint {{ url }} was disabled",
    "digest": "[semaflow] Your week {{ week }}: {{ documents_ingested }} documents ingested",
}


class Renderer:
    """Turns a mail kind and its context into a subject, a plain-text body and an HTML body."""

    def __init__(self, directory: Path = TEMPLATES) -> None:
        self.text = jinja2.Environment(
            loader=jinja2.FileSystemLoader(directory), autoescape=False, undefined=jinja2.StrictUndefined
        )
        self.html = jinja2.Environment(
            loader=jinja2.FileSystemLoader(directory), autoescape=True, undefined=jinja2.StrictUndefined
        )

    def render(self, kind: str, context: dict[str, Any]) -> tuple[str, str, str]:
        """``(subject, text, html)`` of a mail.

        Raises:
            PermanentError: there is no such kind, or the context lacks what its templates need.
        """
        if kind not in SUBJECTS:
            raise PermanentError(f"no mail template {kind!r}")
        try:
            subject = self.text.from_string(SUBJECTS[kind]).render(context)
            text = self.text.get_template(f"{kind}.txt").render(context)
            html = self.html.get_template(f"{kind}.html").render(context)
        except jinja2.TemplateError as exc:
            raise PermanentError(f"cannot render mail {kind!r}: {exc}") from exc
        return " ".join(subject.split()), text, html


class Mailer:
    """Sends mail through the configured SMTP server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def enabled(self) -> bool:
        """Whether an SMTP server is configured."""
        return self.settings.smtp_host is not None

    def _tls(self) -> ssl.SSLContext:
        ca = self.settings.smtp_ca_file
        if ca is not None and not ca.is_file():
            raise ConfigurationError(f"SEMAFLOW_SMTP_CA_FILE {ca} does not exist")
        return ssl.create_default_context(cafile=str(ca) if ca else None)

    def send(self, to: str, subject: str, text: str, html: str) -> None:
        """Send one multipart (text and HTML) mail.

        Raises:
            TransientError: the server could not be reached, refused our login (settings can be
                fixed, and the dead letter replayed), or refused the mail for now.
            PermanentError: the server rejected the recipient.
        """
        s = self.settings
        assert s.smtp_host is not None
        message = EmailMessage()
        message["From"] = s.email_from
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain="semaflow")
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        smtp_class = smtplib.SMTP_SSL if s.smtp_security == "tls" else smtplib.SMTP
        kwargs: dict[str, Any] = {"context": self._tls()} if s.smtp_security == "tls" else {}
        try:
            with smtp_class(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s, **kwargs) as server:
                if s.smtp_security == "starttls":
                    server.starttls(context=self._tls())
                if s.smtp_username:
                    password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                    server.login(s.smtp_username, password)
                server.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentError(f"the SMTP server refused {to}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientError(f"cannot send mail via {s.smtp_host}:{s.smtp_port}: {exc}") from exc
        log.info("mail.sent", subject=subject)


class Notifications:
    """Mail to a tenant's contact: rendered, rate-limited per tenant, and skipped without an address."""

    def __init__(
        self,
        client: redis.Redis,
        mailer: Mailer,
        renderer: Renderer,
        *,
        max_per_hour: int,
        metrics: NotifierMetrics | None = None,
    ) -> None:
        self.client = client
        self.mailer = mailer
        self.renderer = renderer
        self.max_per_hour = max_per_hour
        self.metrics = metrics

    def _count(self, kind: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.emails.labels(kind=kind, outcome=outcome).inc()

    def contact(self, tenant: str) -> str | None:
        """Where the tenant's mail goes, or None (mail is off, or the tenant set no address)."""
        if not self.mailer.enabled:
            log.info("mail.disabled", tenant=tenant)
            return None
        address = tenants.contact(self.client, tenant)
        if address is None:
            log.info("mail.no_contact", tenant=tenant)
        return address

    def _within_quota(self, tenant: str) -> bool:
        key = keys.email_quota(tenant, int(time.time() // 3600))
        with self.client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 7200)
            sent, _ = pipe.execute()
        return int(sent) <= self.max_per_hour

    def notify(self, tenant: str, kind: str, context: dict[str, Any]) -> bool:
        """Mail the tenant about an event; False when nothing was sent (no address, or over the hourly quota).

        Raises:
            TransientError: the SMTP server is unavailable (the caller retries).
            PermanentError: the mail cannot be rendered or is refused for good.
        """
        address = self.contact(tenant)
        if address is None:
            self._count(kind, "skipped")
            return False
        subject, text, html = self.renderer.render(kind, {**context, "tenant": tenant})
        if not self._within_quota(tenant):
            log.warning("mail.over_quota", tenant=tenant, kind=kind, max_per_hour=self.max_per_hour)
            self._count(kind, "skipped")
            return False
        self.send(kind, address, subject, text, html)
        return True

    def send(self, kind: str, to: str, subject: str, text: str, html: str) -> None:
        """Send one mail of ``kind``, counting how it went.

        Raises:
            TransientError: as :meth:`Mailer.send`.
            PermanentError: as :meth:`Mailer.send`.
        """
        try:
            self.mailer.send(to, subject, text, html)
        except Exception:
            self._count(kind, "failed")
            raise
        self._count(kind, "sent")
