"""The weekly digest: per tenant, what its week amounted to, mailed once per tenant and week."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Final

import structlog

from shared import clock, keys

if TYPE_CHECKING:
    import redis

    from services.notifier.mail import Notifications

log = structlog.get_logger(__name__)

FIGURES: Final = ("documents_ingested", "jobs_succeeded", "jobs_failed", "deliveries_exhausted")
# A digest is sent once per tenant and week; the marker outlives the week's counts.
_SENT_TTL_S: Final = 60 * 24 * 3600


def last_week(today: date | None = None) -> str:
    """The ISO week before the one ``today`` is in (a digest fired on Monday reports the week just ended)."""
    year, week, _ = ((today or clock.now().date()) - timedelta(days=7)).isocalendar()
    return f"{year}-W{week:02d}"


def week_bounds(week: str) -> tuple[date, date]:
    """Monday and Sunday of an ISO week like ``2026-W47``.

    Raises:
        ValueError: the week is malformed.
    """
    year, _, number = week.partition("-W")
    monday = date.fromisocalendar(int(year), int(number), 1)
    return monday, monday + timedelta(days=6)


def figures(client: redis.Redis, tenant: str, week: str) -> dict[str, int]:
    """A tenant's counts for a week (zeros where nothing happened)."""
    raw = client.hgetall(keys.digest_counts(tenant, week))
    found = {keys.text(k): int(v) for k, v in raw.items()}
    return {name: found.get(name, 0) for name in FIGURES}


def send(client: redis.Redis, notifications: Notifications, tenant: str, week: str) -> bool:
    """Mail a tenant's digest for ``week`` unless it went out already; returns whether it was sent.

    Raises:
        TransientError: the mail could not be sent now (the marker is removed, so a retry sends it).
    """
    start, end = week_bounds(week)
    if notifications.contact(tenant) is None:
        return False
    marker = keys.digest_sent(tenant, week)
    if not client.set(marker, "1", nx=True, ex=_SENT_TTL_S):
        log.info("digest.already_sent", tenant=tenant, week=week)
        return False
    context = {"week": week, "start": start.isoformat(), "end": end.isoformat(), **figures(client, tenant, week)}
    try:
        subject, text, html = notifications.renderer.render("digest", {**context, "tenant": tenant})
        address = notifications.contact(tenant)
        assert address is not None
        notifications.send("digest", address, subject, text, html)
    except BaseException:
        client.delete(marker)
        raise
    log.info("digest.sent", tenant=tenant, week=week, **context)
    return True
