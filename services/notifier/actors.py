"""The notifier's Dramatiq actors: thin entry points into mail, the digest and the delivery sweep.

Webhook attempts are not among them: they run on the notifier's event loop (see
:mod:`services.notifier.delivery`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from services.notifier import digest
from shared import keys
from shared.errors import PermanentError, TransientError
from shared.messaging import tasks
from shared.runtime.outcomes import PERMANENT

if TYPE_CHECKING:
    import dramatiq

    from services.notifier.main import Notifier

# The sweep runs on the event loop; an actor waits this long for it.
_SWEEP_TIMEOUT_S = 120.0


def declare(broker: dramatiq.Broker, notifier: Notifier) -> None:
    """Declare the notifier's actors on ``broker``."""

    def send_email(**kwargs: Any) -> None:
        p = tasks.SEND_EMAIL.parse(kwargs)
        notifier.notifications.notify(p.tenant, p.kind, p.context)

    def send_digest(**kwargs: Any) -> str:
        p = tasks.SEND_DIGEST.parse(kwargs)
        week = p.week or digest.last_week()
        try:
            digest.week_bounds(week)
        except ValueError as exc:
            raise PermanentError(f"invalid week {week!r}") from exc
        if p.tenant is None:
            tenants = sorted(keys.text(t) for t in notifier.service.client.smembers(keys.tenants()))
            for tenant in tenants:
                tasks.SEND_DIGEST.send(broker, tasks.SendDigest(tenant=tenant, week=week))
            return f"digests of {week} queued for {len(tenants)} tenants"
        digest.send(notifier.service.client, notifier.notifications, p.tenant, week)
        return f"digest of {week} for {p.tenant}"

    def sweep_deliveries(**kwargs: Any) -> str:
        tasks.SWEEP_DELIVERIES.parse(kwargs)
        loop = notifier.loop
        if loop is None:
            raise TransientError("the notifier is not running")
        started = asyncio.run_coroutine_threadsafe(notifier.deliverer().sweep(), loop).result(_SWEEP_TIMEOUT_S)
        return f"deliveries started: {started}"

    tasks.SEND_EMAIL.declare(broker, send_email, throws=PERMANENT)
    tasks.SEND_DIGEST.declare(broker, send_digest, throws=PERMANENT)
    tasks.SWEEP_DELIVERIES.declare(broker, sweep_deliveries)
