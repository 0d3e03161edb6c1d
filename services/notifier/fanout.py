"""From events to deliveries: match each event against its tenant's endpoints, queue one delivery per
match, start what may start now, and trigger the mail and the weekly counts an event calls for.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import structlog
from opentelemetry.trace import SpanKind

from shared import keys, scripts
from shared.clock import now_ms
from shared.messaging import tasks, tracing
from shared.messaging.events import (
    BatchAccepted,
    JobFailed,
    JobSucceeded,
    WebhookDeliveryExhausted,
    WebhookEndpointDisabled,
)
from shared.webhooks import endpoints
from shared.webhooks.deliveries import NewDelivery, event_delivery_id
from shared.webhooks.endpoints import Endpoint

if TYPE_CHECKING:
    import dramatiq
    import redis.asyncio as aioredis

    from services.notifier.delivery import Deliverer
    from shared.messaging.bus import Received
    from shared.messaging.events import CloudEvent

log = structlog.get_logger(__name__)

# Events that mail the tenant's contact, and the template each uses.
MAILED: Final[dict[str, str]] = {
    JobFailed.TYPE: "job_failed",
    WebhookDeliveryExhausted.TYPE: "delivery_exhausted",
    WebhookEndpointDisabled.TYPE: "endpoint_disabled",
}
# Events the weekly digest counts: the counter each adds to, and by how much.
COUNTED: Final = frozenset({BatchAccepted.TYPE, JobSucceeded.TYPE, JobFailed.TYPE, WebhookDeliveryExhausted.TYPE})
# An event's mail and counts happen once; the marker outlives any redelivery of the event.
_SEEN_TTL_S: Final = 8 * 24 * 3600
# A week's counts are kept past the digest that reports them, for a late or repeated digest.
_COUNTS_TTL_S: Final = 40 * 24 * 3600

# Marks events seen; answers 1 for each seen for the first time, 0 for each seen before.
_FIRST_SEEN: Final = scripts.get("events_first_seen")


def iso_week(at: datetime) -> str:
    """The ISO week of a moment (UTC), as ``2026-W47``."""
    year, week, _ = at.astimezone(UTC).isocalendar()
    return f"{year}-W{week:02d}"


def targets(found: list[Endpoint], received: Received) -> list[Endpoint]:
    """The endpoints an event goes to: enabled, subscribed, and created before the event was published."""
    event = received.event
    return [
        e
        for e in found
        if not e.disabled
        and e.existed_at(received.entry_id)
        and e.wants(event.type)
        and not endpoints.reports_on(e.id, event.type, event.data)
    ]


def _fan_out_trace(event: CloudEvent, endpoints: int) -> str | None:
    """A span marking the event's fan-out, in the event's trace; its deliveries' attempts hang off it."""
    if event.traceparent is None:
        return None
    attributes = {"semaflow.event_type": event.type, "semaflow.event_id": event.id, "semaflow.endpoints": endpoints}
    with tracing.span("webhook.fan_out", parent=event.traceparent, kind=SpanKind.CONSUMER, attributes=attributes):
        return tracing.current_traceparent()


def _counts(event: CloudEvent) -> dict[str, int]:
    if event.type == BatchAccepted.TYPE:
        return {"documents_ingested": int(event.data.get("documents", 0))}
    if event.type == JobSucceeded.TYPE:
        return {"jobs_succeeded": 1}
    if event.type == JobFailed.TYPE:
        return {"jobs_failed": 1}
    if event.type == WebhookDeliveryExhausted.TYPE:
        return {"deliveries_exhausted": 1}
    return {}


class FanOut:
    """The notifier's stream handler."""

    def __init__(self, client: aioredis.Redis, deliverer: Deliverer, broker: dramatiq.Broker, *, group: str) -> None:
        self.client = client
        self.deliverer = deliverer
        self.broker = broker
        self.group = group
        self._first_seen = _FIRST_SEEN.bind(client)

    async def handle(self, batch: list[Received]) -> None:
        """Queue the deliveries of a batch of events, start them, then mail and count (once per event)."""
        await self.deliver(batch)
        await self.mail_and_count(batch)

    async def deliver(self, batch: list[Received]) -> int:
        """Create the deliveries of a batch of events and start those that may start; returns how many were new."""
        found: dict[str, list[Endpoint]] = {}
        new: list[NewDelivery] = []
        messages: list[tuple[str, str, int, bytes]] = []
        for received in batch:
            event = received.event
            tenant = event.data.get("tenant")
            if not isinstance(tenant, str):
                continue  # not a tenant's event (e.g. a schedule firing)
            if tenant not in found:
                found[tenant] = await endpoints.list_for(self.client, tenant)
            chosen = targets(found[tenant], received)
            if not chosen:
                continue
            messages.append((tenant, event.id, received.ms, event.encode()))
            trace = _fan_out_trace(event, len(chosen))
            for endpoint in chosen:
                delivery_id = event_delivery_id(event.id, endpoint.id)
                new.append(NewDelivery(delivery_id, endpoint.id, tenant, event.id, event.type, traceparent=trace))
        if not new:
            return 0
        now = now_ms()
        created = await self.deliverer.store.create(new, messages, now, announce=False)  # dispatched here
        await self.deliverer.dispatch(sorted({d.endpoint_id for d in new}), now)
        return created

    async def mail_and_count(self, batch: list[Received]) -> None:
        """Mail the tenant and add to its weekly counts, for the events of the batch seen for the first time."""
        relevant = [
            r
            for r in batch
            if (r.event.type in MAILED or r.event.type in COUNTED) and isinstance(r.event.data.get("tenant"), str)
        ]
        if not relevant:
            return
        args = [keys.event_seen(self.group, ""), _SEEN_TTL_S, *(r.event.id for r in relevant)]
        firsts = await self.deliverer.batcher.call(self._first_seen, (), args)
        fresh = [r for r, first in zip(relevant, firsts, strict=True) if first]
        mails: list[tasks.SendEmail] = []
        # The batch's counts are summed per (tenant, week) first: one HINCRBY per counter, not per event.
        sums: dict[str, Counter[str]] = defaultdict(Counter)
        for r in fresh:
            tenant = str(r.event.data["tenant"])
            counts = _counts(r.event)
            if counts:
                sums[keys.digest_counts(tenant, iso_week(datetime.fromtimestamp(r.ms / 1000, UTC)))].update(counts)
            kind = MAILED.get(r.event.type)
            if kind is not None:
                context = {**r.event.data, "event_id": r.event.id, "time": r.event.time.isoformat()}
                mails.append(tasks.SendEmail(kind=kind, tenant=tenant, context=context))
        if sums:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, counter in sums.items():
                    for name, n in counter.items():
                        pipe.hincrby(key, name, n)
                    pipe.expire(key, _COUNTS_TTL_S)
                await pipe.execute()
        if mails:
            await asyncio.to_thread(_send_mails, self.broker, mails)


def _send_mails(broker: dramatiq.Broker, mails: list[tasks.SendEmail]) -> None:
    """Queue the mails for the notifiers' Dramatiq workers (few: only some events mail anyone)."""
    for mail in mails:
        tasks.SEND_EMAIL.send(broker, mail)
