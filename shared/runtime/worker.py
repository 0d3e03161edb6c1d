"""Running a Dramatiq worker service: broker, actors, heartbeat, and a graceful stop on SIGTERM."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import Empty, PriorityQueue
from typing import TYPE_CHECKING, Any

import dramatiq
import redis
import structlog

from shared.messaging import dispatch, tasks
from shared.runtime.broker import build_broker
from shared.runtime.heartbeat import Heartbeat
from shared.runtime.metrics import MetricsServer, WorkerMetrics, beat_info, serve_metrics
from shared.runtime.outage import quiet_dramatiq_consumers, redis_outage
from shared.runtime.outcomes import WorkOutcomes
from shared.runtime.schedule_runs import ScheduleRuns
from shared.runtime.task_telemetry import TaskMetrics

if TYPE_CHECKING:
    from shared.config import Settings

log = structlog.get_logger(__name__)


class _WorkQueue(PriorityQueue[Any]):
    """Dramatiq's work queue (messages its consumers fetched, for its threads), whose waiting takers
    :meth:`interrupt` sends away empty-handed at once: a stopping worker's idle threads leave without
    waiting out their timeout."""

    def __init__(self) -> None:
        super().__init__()
        self._interrupted = False

    def interrupt(self) -> None:
        """Every wait for an item, now or later, ends at once (items still queued are still handed out)."""
        with self.not_empty:
            self._interrupted = True
            self.not_empty.notify_all()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        with self.not_empty:
            if block:
                deadline = None if timeout is None else time.monotonic() + timeout
                while not self._qsize() and not self._interrupted:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    self.not_empty.wait(left)
            if not self._qsize():
                raise Empty
            item = self._get()
            self.not_full.notify()
            return item


class Worker(dramatiq.Worker):
    """Dramatiq's worker whose idle threads wait for a message up to ``idle_wait_ms``, not ``worker_timeout``.

    Dramatiq's threads wake every ``worker_timeout`` (the consumers' poll, 100 ms here) only to see
    whether they should stop: ten wake-ups a second per thread, most of an idle service's CPU. Here a
    message wakes a thread as before, and :meth:`stop` interrupts the waits, so a stop is as quick.
    """

    def __init__(
        self, broker: dramatiq.Broker, *, queues: set[str], worker_threads: int, worker_timeout: int, idle_wait_ms: int
    ) -> None:
        super().__init__(broker, queues=queues, worker_threads=worker_threads, worker_timeout=worker_timeout)
        self.work_queue: _WorkQueue = _WorkQueue()
        self.idle_wait_ms = idle_wait_ms

    def start(self) -> None:
        super().start()
        for thread in self.workers:
            thread.timeout = self.idle_wait_ms / 1000  # read at each wait: the first one may still be the short one

    def stop(self, timeout: int = 600_000) -> None:
        for thread in self.workers:
            thread.stop()  # a thread ends when it next finds no message...
        self.work_queue.interrupt()  # ...which an idle one does now
        super().stop(timeout)


@dataclass
class WorkerService:
    """A built worker: its broker, the queues it consumes, and its Redis client."""

    name: str
    settings: Settings
    redis_url: str
    broker: dramatiq.Broker
    client: redis.Redis
    queues: set[str]
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    # Queues consumed by a worker of their own (queue -> threads), so slow work there never delays the rest.
    dedicated: dict[str, int] = field(default_factory=dict)

    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)

    _stop_recovery: threading.Event = field(default_factory=threading.Event)
    _recovery: threading.Thread | None = None
    _side_workers: list[Worker] = field(default_factory=list)
    _metrics_server: MetricsServer | None = None
    _booted: bool = False

    def _recover_forever(self) -> None:
        """Keep every work queue's invariant (see :mod:`shared.messaging.dispatch`), whichever service died.

        Every third of a lease: take back claims whose lease ran out. Then, for a queue where that
        happened and every ``queue_top_up_interval_s`` for all: send tokens for waiting entries
        that have none (their sender died, or a dead worker holds them).
        """
        lease_ms = int(self.settings.worker_dead_after_s * 1000)
        last_top_up = float("-inf")
        while True:
            due = time.monotonic() - last_top_up >= self.settings.queue_top_up_interval_s
            if due:
                last_top_up = time.monotonic()
            for queue in tasks.TOKENS:
                try:
                    reclaimed = dispatch.recover(self.client, queue, lease_ms=lease_ms)
                    if due or reclaimed:
                        dispatch.top_up(self.client, self.broker, queue, dead_after_ms=lease_ms)
                except Exception as exc:
                    if not redis_outage.failed(exc, loop="queue_recovery"):
                        log.warning("queue.recovery_failed", queue=queue, error=str(exc))
            if self._stop_recovery.wait(lease_ms / 3000):
                return

    def boot(self) -> None:
        """Tell the broker's middleware that the process has booted, as Dramatiq's own CLI does before any worker.

        Middleware starts its machinery here: ``TimeLimit`` its timer thread, without which no task
        time limit is enforced. Done once per service, however often it is called. (Dramatiq's CLI
        emits no matching event on shutdown: the stop is ``worker_shutdown``, which each worker emits.)
        """
        if self._booted:
            return
        self._booted = True
        self.broker.emit_after("process_boot")

    def start(self) -> tuple[Worker, Heartbeat]:
        """Boot (see :meth:`boot`), then start consuming and beating; returns what :meth:`stop` needs."""
        self.boot()
        quiet_dramatiq_consumers(self.queues)
        idle_wait_ms = self.settings.worker_idle_wait_ms
        worker = Worker(
            self.broker,
            queues=self.queues - set(self.dedicated),
            worker_threads=self.settings.worker_threads,
            worker_timeout=self.settings.worker_poll_ms,
            idle_wait_ms=idle_wait_ms,
        )
        worker.start()
        for queue, threads in self.dedicated.items():
            maintenance = queue == tasks.MAINTENANCE_QUEUE
            poll_ms = self.settings.maintenance_poll_ms if maintenance else self.settings.worker_poll_ms
            side = Worker(
                self.broker, queues={queue}, worker_threads=threads, worker_timeout=poll_ms, idle_wait_ms=idle_wait_ms
            )
            side.start()
            self._side_workers.append(side)
        self._metrics_server = serve_metrics(self.settings, self.metrics.registry)
        heartbeat = Heartbeat(self.client, self.name, info=beat_info(self._metrics_server))
        heartbeat.start()
        self._recovery = threading.Thread(target=self._recover_forever, name="queue-recovery", daemon=True)
        self._recovery.start()
        log.info("worker.started", queues=sorted(self.queues), threads=self.settings.worker_threads)
        return worker, heartbeat

    def stop(self, worker: dramatiq.Worker, heartbeat: Heartbeat) -> None:
        """Let in-flight messages finish (up to the shutdown timeout); unfinished ones go back to the queue."""
        self.stop_consuming(worker, heartbeat)
        self.close()

    def stop_consuming(self, worker: dramatiq.Worker, heartbeat: Heartbeat) -> None:
        """Stop taking messages and let those in flight finish; the broker stays usable for sending."""
        self._stop_recovery.set()
        if self._recovery is not None:
            self._recovery.join(timeout=10)  # it ends after its current pass: none runs on a closed client
        heartbeat.stop()
        worker.stop(timeout=int(self.settings.shutdown_timeout_s * 1000))
        for side in self._side_workers:
            side.stop(timeout=int(self.settings.shutdown_timeout_s * 1000))

    def close(self) -> None:
        """Run the stop hooks and close the broker and the Redis client."""
        for hook in self.on_stop:
            hook()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        self.broker.close()
        self.client.close()
        log.info("worker.stopped")

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT."""
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        worker, heartbeat = self.start()
        done.wait()
        log.info("worker.stopping")
        self.stop(worker, heartbeat)


def new_worker_service(
    name: str,
    settings: Settings,
    redis_url: str,
    queues: set[str],
    *,
    dedicated: dict[str, int] | None = None,
) -> WorkerService:
    """Broker and Redis client for a worker service (actors are declared by the caller).

    ``dedicated``: queues (of ``queues``) consumed by a worker of their own, with that many threads.
    """
    client = redis.Redis.from_url(redis_url, health_check_interval=30)
    outcomes = WorkOutcomes(
        client,
        source=f"semaflow/{name}",
        stream_maxlen=settings.stream_maxlen,
        dead_letter_retention_s=settings.dead_letter_retention_s,
        max_retries=settings.max_retries,
        min_backoff_ms=settings.min_backoff_ms,
        max_backoff_ms=settings.max_backoff_ms,
        lease_ms=int(settings.worker_dead_after_s * 1000),
        outage_patience_ms=int(settings.outage_patience_s * 1000),
    )
    metrics = WorkerMetrics()
    broker = build_broker(settings, redis_url, extra=[outcomes, ScheduleRuns(client), TaskMetrics(metrics)])
    for queue in queues:
        broker.declare_queue(queue)
    return WorkerService(
        name, settings, redis_url, broker, client, queues, dedicated=dict(dedicated or {}), metrics=metrics
    )
