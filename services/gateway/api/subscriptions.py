"""Managing webhooks from the API: endpoints, test events, retries and replays, independent of HTTP.

The gateway only writes records and queues deliveries as due; the notifier's dispatcher sees them
within a fraction of a second and sends them (``SEMAFLOW_WEBHOOK_*`` govern how).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import structlog

from shared.clock import millis, now_ms
from shared.errors import Conflict, NotFound
from shared.messaging.events import CloudEvent, WebhookTest
from shared.records import deadletters
from shared.webhooks import endpoints
from shared.webhooks.deliveries import (
    Deliveries,
    Delivery,
    NewDelivery,
    new_delivery_id,
    read_stored,
    wake_dispatchers,
)
from shared.webhooks.destinations import check_destination
from shared.webhooks.endpoints import Endpoint

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from shared.config import Settings
    from shared.records.deadletters import DeadLetter

log = structlog.get_logger(__name__)
SOURCE: Final = "semaflow/gateway"
# Replays create deliveries in chunks of this many (one script call each).
_CHUNK: Final = 500


class Subscriptions:
    """What a tenant can do with its webhooks."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.deliveries = Deliveries(client, retention_s=settings.webhook_log_retention_s)

    async def endpoint(self, tenant: str, endpoint_id: str) -> Endpoint:
        """A tenant's endpoint.

        Raises:
            NotFound: there is none (or it is another tenant's).
        """
        found = await endpoints.get(self.client, tenant, endpoint_id)
        if found is None:
            raise NotFound(f"webhook {endpoint_id!r} does not exist")
        return found

    async def delivery(self, tenant: str, delivery_id: str) -> Delivery:
        """A tenant's delivery.

        Raises:
            NotFound: there is none (or it is another tenant's).
        """
        found = await self.deliveries.get(tenant, delivery_id)
        if found is None:
            raise NotFound(f"delivery {delivery_id!r} does not exist")
        return found

    async def create(
        self, tenant: str, url: str, event_types: tuple[str, ...], description: str, *, disabled: bool
    ) -> tuple[Endpoint, str]:
        """Create an endpoint after checking its destination; returns it and its secret.

        Raises:
            InvalidInput: the URL is unusable or refused (see :mod:`shared.webhooks.destinations`).
            Conflict: the tenant has too many endpoints.
        """
        await check_destination(url, self.settings.webhook_allow_list)
        endpoint, secret = await endpoints.create(self.client, tenant, url, event_types, description, disabled=disabled)
        log.info("webhook.created", tenant=tenant, endpoint_id=endpoint.id, event_types=list(event_types))
        return endpoint, secret

    async def update(self, endpoint: Endpoint, changes: dict[str, Any]) -> Endpoint:
        """Change an endpoint (a new URL is checked like a new endpoint's).

        Raises:
            InvalidInput: the new URL is unusable or refused.
        """
        if changes.get("url") is not None:
            await check_destination(changes["url"], self.settings.webhook_allow_list)
        return await endpoints.update(self.client, endpoint, **changes)

    async def send_test(self, endpoint: Endpoint) -> tuple[Delivery, str]:
        """Queue a ``webhook.test`` event to this endpoint alone; returns its delivery and the event id.

        Raises:
            Conflict: the endpoint is disabled.
        """
        if endpoint.disabled:
            raise Conflict(f"webhook {endpoint.id} is disabled; enable it first")
        data = WebhookTest(tenant=endpoint.tenant, endpoint_id=endpoint.id, message="A test event from semaflow.")
        event = CloudEvent.wrap(data, source=SOURCE, subject=endpoint.id)
        delivery_id = new_delivery_id()
        now = now_ms()
        new = NewDelivery(delivery_id, endpoint.id, endpoint.tenant, event.id, event.type, trigger="test")
        await self.deliveries.create([new], [(endpoint.tenant, event.id, now, event.encode())], now, announce=False)
        try:
            return await self.delivery(endpoint.tenant, delivery_id), event.id  # as queued: the notifier is told after
        finally:
            await wake_dispatchers(self.client)

    async def retry(self, delivery: Delivery) -> Delivery:
        """Queue a delivery again now, with a fresh set of attempts (its log keeps the earlier ones).

        Raises:
            Conflict: an attempt is under way, or the endpoint is gone or disabled.
        """
        endpoint = await endpoints.get(self.client, delivery.tenant, delivery.endpoint_id)
        if endpoint is None:
            raise Conflict(f"the endpoint of delivery {delivery.id} was deleted")
        if endpoint.disabled:
            raise Conflict(f"webhook {endpoint.id} is disabled; enable it first")
        moved = await self.deliveries.requeue(delivery, now_ms(), announce=False)
        if moved == 0:
            raise NotFound(f"delivery {delivery.id!r} does not exist")
        if moved < 0:
            raise Conflict(f"delivery {delivery.id} is being attempted right now")
        if delivery.dead_letter:
            letter = await deadletters.get(self.client, delivery.tenant, delivery.dead_letter)
            if letter is not None:
                await deadletters.delete(self.client, letter)
        log.info("webhook.delivery_requeued", delivery_id=delivery.id, endpoint_id=endpoint.id)
        try:
            return await self.delivery(delivery.tenant, delivery.id)  # as queued: the notifier is told after
        finally:
            await wake_dispatchers(self.client)

    async def replay_letter(self, letter: DeadLetter) -> dict[str, Any]:
        """Dead-letter replay of an exhausted delivery: the delivery is queued again.

        Raises:
            Conflict: the delivery is gone, under way, or its endpoint is gone or disabled.
        """
        delivery = await self.deliveries.get(letter.tenant, str(letter.arguments.get("delivery_id", "")))
        if delivery is None:
            raise Conflict("the delivery of this dead letter no longer exists (older than the delivery log retention)")
        return (await self.retry(delivery)).public()

    async def replay(self, endpoint: Endpoint, since: datetime, until: datetime | None) -> int:
        """Send this endpoint again every stored event it subscribes to from ``since`` (to ``until``).

        Each becomes a new delivery with the event's own id as ``webhook-id``, so a receiver that
        already handled one can recognise it. Returns how many were queued.

        Raises:
            Conflict: the endpoint is disabled.
        """
        if endpoint.disabled:
            raise Conflict(f"webhook {endpoint.id} is disabled; enable it first")
        found = await self.deliveries.message_ids(
            endpoint.tenant, millis(since), millis(until) if until is not None else None
        )
        queued = 0
        for start in range(0, len(found), _CHUNK):
            chunk = [event_id for event_id, _ in found[start : start + _CHUNK]]
            new = []
            for event_id, body in zip(chunk, await self.deliveries.messages(chunk), strict=True):
                stored = read_stored(body) if body is not None else None
                if stored is None or not endpoint.wants(stored[0]) or endpoints.reports_on(endpoint.id, *stored):
                    continue
                event_type = stored[0]
                new.append(NewDelivery(new_delivery_id(), endpoint.id, endpoint.tenant, event_id, event_type, "replay"))
            queued += await self.deliveries.create(new, [], now_ms()) if new else 0
        log.info("webhook.replayed", endpoint_id=endpoint.id, since=since.isoformat(), deliveries=queued)
        return queued
