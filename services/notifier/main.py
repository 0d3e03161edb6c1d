"""Notifier service: webhook deliveries and mail, driven by the event stream and the ``notify`` queue."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

import redis.asyncio as aioredis
import structlog

from services.notifier import actors
from services.notifier.delivery import Deliverer
from services.notifier.fanout import FanOut
from services.notifier.http import open_session
from services.notifier.mail import Mailer, Notifications, Renderer
from services.notifier.metrics import NotifierMetrics
from shared.config import Settings
from shared.errors import TransientError
from shared.messaging import tasks
from shared.messaging.bus import GroupConsumer
from shared.priority import lower_priority
from shared.runtime import telemetry
from shared.runtime.heartbeat import instance_id
from shared.runtime.outage import redis_outage
from shared.runtime.service import pause, run_until_signalled
from shared.runtime.worker import WorkerService, new_worker_service

log = structlog.get_logger(__name__)
NAME: Final = "notifier"
GROUP: Final = "notifier"


class Notifier:
    """A notifier process: its Dramatiq worker, and while it runs, its event-loop side.

    The loop side follows the stream in the ``notifier`` consumer group (events become deliveries),
    claims deliveries as they fall due and makes their attempts as tasks of its own. Mail, the digest
    and the delivery sweep run in the Dramatiq worker's threads.
    """

    def __init__(
        self, settings: Settings, service: WorkerService, notifications: Notifications, metrics: NotifierMetrics
    ) -> None:
        self.settings = settings
        self.service = service
        self.notifications = notifications
        self.metrics = metrics
        self.loop: asyncio.AbstractEventLoop | None = None
        self._deliverer: Deliverer | None = None

    def deliverer(self) -> Deliverer:
        """The running process's deliverer.

        Raises:
            TransientError: the notifier is not running (yet, or any more).
        """
        if self._deliverer is None:
            raise TransientError("the notifier is not running")
        return self._deliverer

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop``; then stop consuming, finish the attempts under way, and close."""
        s = self.settings
        client = aioredis.Redis.from_url(
            s.require_redis_url(), health_check_interval=30, socket_timeout=15, socket_connect_timeout=5
        )
        session = open_session(
            s.webhook_allow_list, timeout_s=s.webhook_timeout_s, max_connections=s.webhook_max_in_flight
        )
        deliverer = Deliverer(client, session, s, self.metrics)
        fanout = FanOut(client, deliverer, self.service.broker, group=GROUP)
        consumer = GroupConsumer(client, GROUP, instance_id(), fanout.handle, block_ms=1_000, count=100)
        self.loop, self._deliverer = asyncio.get_running_loop(), deliverer
        worker, heartbeat = self.service.start()
        try:
            await asyncio.gather(
                _forever("stream", consumer.run, stop),
                _forever("dispatcher", deliverer.run_due, stop),
                _forever("wakes", deliverer.listen, stop),
            )
        finally:
            await asyncio.to_thread(self.service.stop_consuming, worker, heartbeat)
            await deliverer.drain(s.shutdown_timeout_s)
            self._deliverer = None
            await session.close()
            await client.aclose()
            await asyncio.to_thread(self.service.close)


async def _forever(name: str, body: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run ``body`` until ``stop``, starting it again after a failure (Redis restarting, say)."""
    while not stop.is_set():
        try:
            await body(stop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not redis_outage.failed(exc, loop=name):
                log.warning("notifier.loop_failed", loop=name, error=str(exc))
            await pause(stop, 1.0)


def build(settings: Settings, *, mailer: Mailer | None = None) -> Notifier:
    """Wire settings to Redis, the broker, mail and the actors."""
    threads = settings.model_copy(update={"worker_threads": settings.notifier_threads})
    service = new_worker_service(NAME, threads, settings.require_redis_url(), {tasks.NOTIFY_QUEUE})
    metrics = NotifierMetrics(service.metrics.registry)
    notifications = Notifications(
        service.client,
        mailer or Mailer(settings),
        Renderer(),
        max_per_hour=settings.email_max_per_hour,
        metrics=metrics,
    )
    notifier = Notifier(settings, service, notifications, metrics)
    actors.declare(service.broker, notifier)
    return notifier


def main() -> None:
    """Run the notifier until SIGTERM."""
    settings = Settings()
    telemetry.configure(NAME, settings)
    lower_priority(settings.background_nice)  # every thread so far; those started later inherit it
    notifier = build(settings)
    grace = 2 * settings.shutdown_timeout_s + 10  # the worker's in-flight messages, then the attempts
    asyncio.run(run_until_signalled(NAME, settings.require_redis_url(), notifier.run, heartbeat=False, grace_s=grace))
