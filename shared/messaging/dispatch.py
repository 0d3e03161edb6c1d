"""Queueing work: a work-queue entry plus one Dramatiq token to run it, and keeping that true.

The entry is stored first and the token sent second. If the sender dies in between, the entry
waits without a token; :func:`top_up` (run periodically by every worker) sends tokens for such
entries. Spare tokens are harmless: a token that finds nothing to claim just returns.

:func:`recover` restores the queue's invariant after a crash: every claim has live work behind it
(its lease is renewed) and every waiting entry has a token that can run. It takes back claims whose
lease ran out, then tops tokens up, not counting tokens held by a dead worker (Dramatiq hands those
back only in its occasional maintenance).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from shared import keys
from shared.clock import now_ms
from shared.messaging import tasks
from shared.messaging.workqueue import AsyncWorkQueue, Entry, WorkQueue

if TYPE_CHECKING:
    import dramatiq
    import redis
    import redis.asyncio as aioredis

log = structlog.get_logger(__name__)

# A sender stores an entry and sends its token within milliseconds; an entry without a token for
# this long has lost its sender.
TOKEN_GRACE_MS = 10_000


def submit(client: redis.Redis, broker: dramatiq.Broker, queue: str, entry: Entry) -> bool:
    """Queue ``entry`` on ``queue`` and send its token (blocking client)."""
    pushed = WorkQueue(client, queue).push(entry)
    tasks.TOKENS[queue].send(broker, tasks.Token())
    return pushed


async def asubmit(client: aioredis.Redis, broker: dramatiq.Broker, queue: str, entry: Entry) -> bool:
    """Queue ``entry`` on ``queue`` and send its token (asyncio client)."""
    pushed = await AsyncWorkQueue(client, queue).push(entry)
    await asyncio.to_thread(tasks.TOKENS[queue].send, broker, tasks.Token())
    return pushed


def tokens_without_claim(client: redis.Redis, queue: str, *, dead_after_ms: int | None = None) -> int:
    """Tokens that exist for ``queue`` and hold no claim yet, so each will claim a waiting entry.

    Dramatiq keeps a queue's messages in its list, in its delay list, and (once fetched) in the
    fetching worker's acknowledgement sets; every claim belongs to exactly one of those tokens.
    With ``dead_after_ms``, tokens fetched by a worker silent that long are not counted: they run
    only once Dramatiq's maintenance hands them back, which may take minutes.
    """
    total = sum(int(client.llen(name)) for name in keys.dramatiq_queues(queue))
    alive: set[str] | None = None
    if dead_after_ms is not None:
        since = now_ms() - dead_after_ms
        workers = client.zrangebyscore(keys.dramatiq_heartbeats(), since, "+inf")
        alive = {keys.text(w) for w in workers if isinstance(w, bytes | str)}
    for pattern in keys.dramatiq_acks(queue):
        for key in client.scan_iter(match=pattern, count=500):
            if alive is None or keys.dramatiq_ack_owner(key) in alive:
                total += int(client.scard(key))
    return total - WorkQueue(client, queue).in_flight()


def top_up(
    client: redis.Redis,
    broker: dramatiq.Broker,
    queue: str,
    *,
    grace_ms: int = TOKEN_GRACE_MS,
    dead_after_ms: int | None = None,
) -> int:
    """Send tokens for waiting entries that have none (their sender died mid-way, or a dead worker
    holds it: see :func:`tokens_without_claim`); returns how many.

    Entries younger than ``grace_ms`` are left out: their senders may be between the two steps.
    """
    tokens = tokens_without_claim(client, queue, dead_after_ms=dead_after_ms)
    missing = WorkQueue(client, queue).waiting(older_than_ms=grace_ms) - tokens
    for _ in range(max(0, missing)):
        tasks.TOKENS[queue].send(broker, tasks.Token())
    if missing > 0:
        log.warning("queue.tokens_restored", queue=queue, tokens=missing)
    return max(0, missing)


def recover(client: redis.Redis, queue: str, *, lease_ms: int) -> list[str]:
    """Take back ``queue``'s claims whose lease ran out (to the front of their level); returns their entries.

    The caller tops tokens up afterwards (:func:`top_up`), so the entries run at once.
    """
    back = WorkQueue(client, queue, lease_ms=lease_ms).reap()
    if back:
        log.warning("queue.work_reclaimed", queue=queue, entries=back)
    return back
