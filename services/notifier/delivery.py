"""Webhook attempts: sign, POST, judge the answer, record it, and settle what follows.

Attempts run as tasks on the notifier's event loop, so one waiting on a slow receiver costs a socket,
not a thread. The dispatcher claims due deliveries in Redis, each under a lease, and starts one task
per claim at once; it never claims more than the process has free slots for. The lease, not any
message, is what guarantees the attempt is made: if this process dies, the lease runs out and the
delivery is claimed again (by any notifier), so delivery is at least once and spreads over processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import structlog
from opentelemetry.trace import SpanKind
from redis.exceptions import RedisError

from services.notifier.http import Answer, post, refusal
from services.notifier.signing import headers as signed_headers
from shared import clock, keys
from shared.messaging import bus, tasks, tracing
from shared.messaging.events import CloudEvent, WebhookDeliveryExhausted, WebhookEndpointDisabled
from shared.records import activity, deadletters
from shared.records.activity import Activity
from shared.scriptbatch import ScriptBatcher
from shared.webhooks.deliveries import Attempt, Deliveries, Delivery, Outcome, Target, wake_dispatchers
from shared.webhooks.retries import RetrySchedule, retry_after_s

if TYPE_CHECKING:
    import aiohttp
    import redis.asyncio as aioredis

    from services.notifier.metrics import NotifierMetrics
    from shared.config import Settings

log = structlog.get_logger(__name__)
SOURCE: Final = "semaflow/notifier"
GONE: Final = 410
HONOURS_RETRY_AFTER: Final = frozenset({429, 503})
# The dispatcher reads the schedule when something on it falls due, when told on keys.WEBHOOK_WAKE
# (deliveries queued by other processes: a test event, a retry asked for over the API), and at least
# this often, for what nobody announced (another notifier's retries, should it die before making them).
DUE_POLL_S: Final = 2.0
# A lease covers the attempt itself (up to the request timeout) and recording it, with room for a
# busy event loop; a killed notifier's attempts are made again once it runs out.
_LEASE_MARGIN_S: Final = 15.0


@dataclass(frozen=True)
class Verdict:
    """What an attempt's answer means for its delivery."""

    outcome: Outcome
    next_ms: int = 0
    disable_reason: str = ""


def judge(answer: Answer, delivery: Delivery, schedule: RetrySchedule, now: int, rng: random.Random) -> Verdict:
    """Success on 2xx; 410 Gone gives up and disables the endpoint; anything else is retried until
    the attempts run out, after the receiver's ``Retry-After`` on 429 and 503, else after the schedule's delay.
    """
    status = answer.status
    if status is not None and 200 <= status < 300:
        return Verdict(Outcome.SUCCEEDED)
    if status == GONE:
        return Verdict(Outcome.FAILED, disable_reason="the endpoint answered 410 Gone")
    made = delivery.round_attempts + 1
    if made >= schedule.max_attempts:
        return Verdict(Outcome.EXHAUSTED)
    wait_s = retry_after_s(answer.retry_after) if status in HONOURS_RETRY_AFTER else None
    if wait_s is None:
        wait_s = schedule.delay(made, rng)
    return Verdict(Outcome.RETRY, next_ms=now + int(wait_s * 1000))


def _describe(answer: Answer) -> str:
    if answer.error is not None:
        return answer.error
    return f"HTTP {answer.status}"


class Deliverer:
    """Claims due deliveries and makes their attempts, as tasks on the event loop it was started on."""

    def __init__(
        self,
        client: aioredis.Redis,
        session: aiohttp.ClientSession,
        settings: Settings,
        metrics: NotifierMetrics,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.session = session
        self.settings = settings
        # One batcher for the store's scripts: what a turn of the loop asks of Redis goes in one round trip.
        self.batcher = ScriptBatcher(client)
        self.store = Deliveries(client, retention_s=settings.webhook_log_retention_s, batcher=self.batcher)
        self.schedule = RetrySchedule.from_settings(settings)
        allow = settings.webhook_allow_list
        self._refusal = functools.lru_cache(maxsize=4096)(lambda url: refusal(url, allow))
        self.lease_ms = int((settings.webhook_timeout_s + _LEASE_MARGIN_S) * 1000)
        self.disable_after_ms = int(settings.webhook_disable_after_s * 1000)
        self.stale_reason = f"no successful delivery for {_duration(settings.webhook_disable_after_s)}"
        self.rng = rng or random.Random()
        # The process's attempt slots: a task per attempt under way. Free slots bound every claim.
        self.capacity = settings.webhook_max_in_flight
        self._running: set[asyncio.Task[None]] = set()
        self._closing = False
        # Endpoints whose attempts just finished (a slot is free), or that a pass could not serve for
        # want of slots. The dispatcher claims for all of them in one pass, so a busy endpoint costs
        # one claim per pass, not one per attempt.
        self._freed: set[str] = set()
        self._wake = asyncio.Event()
        self._scan_at = 0  # when the dispatcher next reads the global schedule (ms)
        self._rescan = False  # read it at the next pass whatever _scan_at says (another process queued work)

    # --- dispatching ---------------------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        """Attempts this process may still start (none once it is stopping)."""
        return 0 if self._closing else max(0, self.capacity - len(self._running))

    async def dispatch(self, endpoint_ids: list[str], now: int | None = None) -> int:
        """Claim what these endpoints may start now, within the free slots, and start an attempt per claim.

        Endpoints left out for want of slots are kept for the dispatcher's next pass.
        """
        at = clock.now_ms() if now is None else now
        s = self.settings
        free = self.free_slots
        limits: list[tuple[str, int]] = []
        for endpoint_id in endpoint_ids:
            if free <= 0:
                self._freed.add(endpoint_id)  # no slot for it now: the next freed slot wakes the dispatcher
                continue
            limit = min(s.webhook_endpoint_concurrency, free)
            limits.append((endpoint_id, limit))
            free -= limit
        found = await asyncio.gather(
            *(
                self.store.claim(
                    endpoint_id,
                    at,
                    concurrency=s.webhook_endpoint_concurrency,
                    lease_ms=self.lease_ms,
                    limit=limit,
                    failing_concurrency=s.webhook_failing_endpoint_concurrency,
                )
                for endpoint_id, limit in limits
            )
        )  # one round trip for them all: the claims share the store's script batches
        started = 0
        for (endpoint_id, limit), claims in zip(limits, found, strict=True):
            for delivery_id, lease in claims:
                self._start(delivery_id, lease)
            started += len(claims)
            if len(claims) == limit < s.webhook_endpoint_concurrency:
                self._freed.add(endpoint_id)  # cut short by the free slots: it may have more waiting
        if self._freed and self.free_slots:
            self._wake.set()
        return started

    def freed(self, endpoint_id: str, *, retry_at_ms: int | None = None) -> None:
        """An attempt on ``endpoint_id`` finished: its next waiting delivery may start (and, if it
        failed, it is due again at ``retry_at_ms``).
        """
        self._freed.add(endpoint_id)
        if retry_at_ms is not None:
            self._scan_at = min(self._scan_at, retry_at_ms)
        self._wake.set()

    async def run_due(self, stop: asyncio.Event) -> None:
        """Start deliveries as they fall due (retries, leases that ran out, freed slots) until ``stop``.

        Freed slots are claimed at once; the global schedule is read when something on it falls
        due, when :meth:`listen` hears of deliveries queued by other processes, and at least every
        :data:`DUE_POLL_S`.
        """
        self._scan_at = 0
        while not stop.is_set():
            self._wake.clear()
            now = clock.now_ms()
            endpoints, self._freed = self._freed, set()
            scanned = now >= self._scan_at or self._rescan
            self._rescan = False  # a wake from here on asks for another pass
            if scanned:
                endpoints |= set(await self.store.due_endpoints(now))
            started = await self.dispatch(sorted(endpoints), now) if endpoints else 0
            if scanned:
                wake = await self.store.next_wake_ms()
                poll = clock.now_ms() + int(DUE_POLL_S * 1000)
                self._scan_at = poll if wake is None else min(poll, wake)
                if endpoints and not started:
                    self._scan_at = max(self._scan_at, clock.now_ms() + 50)  # nothing could start: do not spin
            if not self._wake.is_set():
                await _first(stop, self._wake, max(0.0, (self._scan_at - clock.now_ms()) / 1000))

    async def listen(self, stop: asyncio.Event) -> None:
        """Until ``stop``, have the dispatcher read the schedule as soon as another process announces deliveries
        on :data:`shared.keys.WEBHOOK_WAKE` (and once subscribed, for any announced while it was not)."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.WEBHOOK_WAKE)
            self.wake_scan()
            while not stop.is_set():
                if await pubsub.get_message(timeout=1.0) is not None:
                    self.wake_scan()
        finally:
            await pubsub.aclose()

    def wake_scan(self) -> None:
        """Have the dispatcher read the global schedule now (again, if it is reading it)."""
        self._rescan = True
        self._wake.set()

    async def sweep(self) -> int:
        """Dispatch every endpoint with waiting or leased deliveries (also those the schedule lost track of)."""
        endpoint_ids: set[str] = set()
        for pattern in (keys.webhook_due("*"), keys.webhook_in_flight("*")):
            async for key in self.client.scan_iter(match=pattern, count=500):
                endpoint_ids.add(keys.text(key).split(":")[-2])  # semaflow:wh:{endpoint}:due
        started = await self.dispatch(sorted(endpoint_ids))
        log.info("webhooks.swept", endpoints=len(endpoint_ids), started=started)
        return started

    # --- attempts ------------------------------------------------------------------------------

    def _start(self, delivery_id: str, lease: str) -> None:
        """Run the attempt ``lease`` allows as a task of its own, holding one of the process's slots."""
        task = asyncio.ensure_future(self._tracked(delivery_id, lease))
        self._running.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(self._running.discard)

    async def _tracked(self, delivery_id: str, lease: str) -> None:
        try:
            await self.attempt(delivery_id, lease)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Redis went away mid-way: the lease runs out and the delivery is claimed again.
            log.exception("webhook.attempt_failed", delivery_id=delivery_id)

    async def attempt(self, delivery_id: str, lease: str) -> None:
        """Make the attempt ``lease`` allows (nothing if the lease is stale or its attempt began already)."""
        started = await self.store.begin(delivery_id, lease)
        if started is None:
            return
        delivery, endpoint, body = started.delivery, started.endpoint, started.body
        if endpoint is not None and endpoint.disabled:
            await self.store.release(delivery, lease, clock.now_ms())  # waits, paused, until the endpoint is enabled
            return
        if endpoint is None or body is None:
            why = "the endpoint was deleted" if endpoint is None else "the event is no longer stored"
            attempt = Attempt(n=delivery.attempts + 1, at=clock.now(), status=None, latency_ms=0.0, error=why)
            await self.store.finish(
                delivery, lease, attempt, Outcome.FAILED, now=clock.now_ms(), disable_after_ms=self.disable_after_ms
            )
            self.freed(delivery.endpoint_id)
            return
        structlog.contextvars.bind_contextvars(tenant=delivery.tenant, delivery_id=delivery.id)
        attributes = {
            "semaflow.tenant": delivery.tenant,
            "semaflow.endpoint_id": endpoint.id,
            "semaflow.event_type": delivery.event_type,
            "semaflow.attempt": delivery.attempts + 1,
            "url.full": endpoint.url,
        }
        with tracing.span(
            "webhook.deliver", parent=delivery.traceparent, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                answer = await self._post(delivery, endpoint, body)
            except asyncio.CancelledError:
                # Stopping: nothing was recorded, so hand the delivery back for another process to take.
                await asyncio.shield(self.store.release(delivery, lease, clock.now_ms()))
                raise
            if answer.status is not None:
                span.set_attribute("http.response.status_code", answer.status)
            verdict = await self._settle(delivery, endpoint, lease, answer)
            if verdict.outcome is not Outcome.SUCCEEDED:
                tracing.fail(span, _describe(answer))
        self.freed(endpoint.id, retry_at_ms=verdict.next_ms if verdict.outcome is Outcome.RETRY else None)

    async def _post(self, delivery: Delivery, endpoint: Target, body: bytes) -> Answer:
        refused = self._refusal(endpoint.url)
        if refused is not None:
            return Answer(status=None, latency_ms=0.0, error=refused)
        stamp = clock.now_ms()
        headers = signed_headers(endpoint.signing_secrets(stamp), delivery.event_id, stamp // 1000, body)
        traceparent = tracing.current_traceparent()
        if traceparent is not None:
            headers[tracing.TRACEPARENT] = traceparent  # the receiver may continue the trace
        answer = await post(self.session, endpoint.url, body, headers, self.settings.webhook_timeout_s)
        self.metrics.attempt_seconds.observe(answer.latency_ms / 1000)
        return answer

    async def _settle(self, delivery: Delivery, endpoint: Target, lease: str, answer: Answer) -> Verdict:
        now = clock.now_ms()
        verdict = judge(answer, delivery, self.schedule, now, self.rng)
        attempt = Attempt(
            n=delivery.attempts + 1,
            at=datetime.fromtimestamp(now / 1000, UTC),
            status=answer.status,
            latency_ms=answer.latency_ms,
            response=answer.body,
            error=answer.error,
        )
        recorded, disabled, reason = await self.store.finish(
            delivery,
            lease,
            attempt,
            verdict.outcome,
            now=now,
            next_ms=verdict.next_ms,
            disable_after_ms=self.disable_after_ms,
            disable_reason=verdict.disable_reason,
            stale_reason=self.stale_reason,
        )
        if not recorded:
            log.info("webhook.lease_lost", delivery_id=delivery.id)
            return verdict
        self.metrics.deliveries.labels(outcome=verdict.outcome.value).inc()
        await activity.arecord(self.client, Activity.DELIVERIES, 1, at_s=now / 1000)
        # Successes are what metrics count; the log keeps what someone may have to look into.
        emit = log.debug if verdict.outcome is Outcome.SUCCEEDED else log.info
        emit(
            "webhook.attempted",
            delivery_id=delivery.id,
            endpoint_id=endpoint.id,
            event_type=delivery.event_type,
            attempt=attempt.n,
            status=answer.status,
            error=answer.error,
            outcome=verdict.outcome.value,
            latency_ms=answer.latency_ms,
        )
        if verdict.outcome is Outcome.EXHAUSTED:
            await self._exhausted(delivery, endpoint, attempt.n, answer)
        if disabled:
            log.warning("webhook.endpoint_disabled", endpoint_id=endpoint.id, reason=reason)
            event = WebhookEndpointDisabled(
                tenant=endpoint.tenant, endpoint_id=endpoint.id, url=endpoint.url, reason=reason
            )
            await self._publish(event, endpoint.id)
        return verdict

    async def _exhausted(self, delivery: Delivery, endpoint: Target, attempts: int, answer: Answer) -> None:
        error = _describe(answer)
        letter = deadletters.new_letter(
            delivery.tenant,
            tasks.NOTIFY_QUEUE,
            tasks.DELIVER_WEBHOOK_OP,
            error=f"{attempts} attempts failed; the last: {error}",
            attempts=attempts,
            arguments={
                "delivery_id": delivery.id,
                "endpoint_id": endpoint.id,
                "event_id": delivery.event_id,
                "event_type": delivery.event_type,
            },
        )
        await deadletters.astore(self.client, letter, retention_s=self.settings.dead_letter_retention_s)
        await self.store.set_dead_letter(delivery.id, letter.id)
        log.warning("webhook.exhausted", delivery_id=delivery.id, endpoint_id=endpoint.id, dead_letter=letter.id)
        if delivery.event_type == WebhookDeliveryExhausted.TYPE:
            return  # never announce the loss of an announcement: two dead endpoints would echo forever
        event = WebhookDeliveryExhausted(
            tenant=delivery.tenant,
            endpoint_id=endpoint.id,
            url=endpoint.url,
            delivery_id=delivery.id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            attempts=attempts,
            last_status=answer.status,
            error=error,
            dead_letter=letter.id,
        )
        await self._publish(event, delivery.id)

    async def _publish(self, data: WebhookDeliveryExhausted | WebhookEndpointDisabled, subject: str) -> None:
        event = CloudEvent.wrap(data, source=SOURCE, subject=subject)
        await bus.apublish(self.client, event, maxlen=self.settings.stream_maxlen)

    async def drain(self, timeout_s: float) -> None:
        """Stop taking attempts, let those under way finish for ``timeout_s``, then hand the rest back."""
        self._closing = True
        running = set(self._running)
        if not running:
            return
        _done, pending = await asyncio.wait(running, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
            log.warning("webhooks.handed_back", attempts=len(pending))
            with contextlib.suppress(RedisError, OSError):  # unannounced, they wait for another's fallback read
                await wake_dispatchers(self.client)  # another notifier takes them at once


async def _first(stop: asyncio.Event, wake: asyncio.Event, timeout_s: float) -> None:
    """Wait until either event is set, or ``timeout_s`` passes."""
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _duration(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)} days"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} hours"
    return f"{seconds:g} s"
