"""semaflow's dead-letter store: work that exhausted its retries, kept to be inspected and replayed.

Dramatiq's own dead-letter set on Redis drops messages after a week and cannot be listed per
tenant. Each dead letter here is a hash holding the work-queue entry (enough to queue the work
again), the error, and the attempts made; it is indexed per tenant and per queue. It is kept for
the configured retention (default 30 days) and only ever removed by a replay, an explicit delete,
or that retention running out.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from shared import clock, keys
from shared.messaging.workqueue import Entry, Priority
from shared.records import paging

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis


class DeadLetter(BaseModel):
    """One piece of work that gave up: an ingest or delete stage (``job_id``), a webhook delivery, or a mail."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant: str
    queue: str
    op: str
    job_id: str | None
    collection: str | None
    priority: Priority
    error: str
    attempts: int
    failed_at: datetime
    arguments: dict[str, Any]

    def public(self) -> dict[str, Any]:
        """What the API answers (the payload's references included, no document content)."""
        return self.model_dump(mode="json")

    def entry(self, enqueued_ms: int) -> Entry:
        """The work-queue entry that queues this work again (for a job's letter)."""
        assert self.job_id is not None, "only a job's dead letter has a work-queue entry"
        return Entry(self.job_id, self.tenant, self.priority, self.arguments, enqueued_ms)


def new_letter(
    tenant: str,
    queue: str,
    op: str,
    *,
    error: str,
    attempts: int,
    arguments: dict[str, Any],
    job_id: str | None = None,
    collection: str | None = None,
    priority: Priority = Priority.NORMAL,
) -> DeadLetter:
    """A dead letter for work that gave up just now."""
    return DeadLetter(
        id="dl_" + uuid.uuid4().hex,
        tenant=tenant,
        queue=queue,
        op=op,
        job_id=job_id,
        collection=collection,
        priority=priority,
        error=error[:2000],
        attempts=attempts,
        failed_at=clock.now(),
        arguments=arguments,
    )


def _store(pipe: Any, letter: DeadLetter, retention_s: int) -> None:
    stamp = clock.millis(letter.failed_at)
    cutoff = stamp - retention_s * 1000
    pipe.set(keys.dead_letter(letter.id), letter.model_dump_json(), ex=retention_s)
    pipe.zadd(keys.dead_letters(letter.tenant), {letter.id: stamp})
    pipe.zadd(keys.dead_letters_by_queue(letter.queue), {letter.id: stamp})
    pipe.zremrangebyscore(keys.dead_letters(letter.tenant), "-inf", cutoff)
    pipe.zremrangebyscore(keys.dead_letters_by_queue(letter.queue), "-inf", cutoff)


def store(client: redis.Redis, letter: DeadLetter, *, retention_s: int) -> DeadLetter:
    """Keep a dead letter for ``retention_s`` (blocking client)."""
    with client.pipeline(transaction=True) as pipe:
        _store(pipe, letter, retention_s)
        pipe.execute()
    return letter


def store_many(client: redis.Redis, letters: Iterable[DeadLetter], *, retention_s: int, chunk: int = 5000) -> int:
    """Keep dead letters as :func:`store` does, pipelined ``chunk`` at a time (imports and load tests); returns
    how many."""
    count = 0
    pipe = client.pipeline(transaction=False)
    for letter in letters:
        _store(pipe, letter, retention_s)
        count += 1
        if count % chunk == 0:
            pipe.execute()
    pipe.execute()
    return count


async def astore(client: aioredis.Redis, letter: DeadLetter, *, retention_s: int) -> DeadLetter:
    """Async twin of :func:`store`."""
    async with client.pipeline(transaction=True) as pipe:
        _store(pipe, letter, retention_s)
        await pipe.execute()
    return letter


def record(client: redis.Redis, queue: str, entry: Entry, *, error: str, attempts: int, retention_s: int) -> DeadLetter:
    """Store a dead letter for a work-queue ``entry`` (blocking client; called by the worker that gave up)."""
    letter = new_letter(
        entry.tenant,
        queue,
        str(entry.kwargs.get("op", "")),
        error=error,
        attempts=attempts,
        arguments=entry.kwargs,
        job_id=entry.id,
        collection=entry.kwargs.get("collection"),
        priority=entry.priority,
    )
    return store(client, letter, retention_s=retention_s)


def _decode(raw: bytes | str | None) -> DeadLetter | None:
    return DeadLetter.model_validate_json(raw) if raw is not None else None


async def get(client: aioredis.Redis, tenant: str, letter_id: str) -> DeadLetter | None:
    """A tenant's dead letter, or None."""
    letter = _decode(await client.get(keys.dead_letter(letter_id)))
    return letter if letter is not None and letter.tenant == tenant else None


async def delete(client: aioredis.Redis, letter: DeadLetter) -> bool:
    """Remove a dead letter; False if it was already gone (e.g. a concurrent replay took it)."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(keys.dead_letter(letter.id))
        pipe.zrem(keys.dead_letters(letter.tenant), letter.id)
        pipe.zrem(keys.dead_letters_by_queue(letter.queue), letter.id)
        removed, _, _ = await pipe.execute()
    return bool(removed)


class LetterFilter(BaseModel):
    """Which dead letters a listing or a bulk replay covers (all optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    queue: str | None = None
    collection: str | None = None
    job_id: str | None = None
    failed_after: datetime | None = None
    failed_before: datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (self.queue is None or letter.queue == self.queue)
            and (self.collection is None or letter.collection == self.collection)
            and (self.job_id is None or letter.job_id == self.job_id)
            and (self.failed_after is None or letter.failed_at > self.failed_after)
            and (self.failed_before is None or letter.failed_at < self.failed_before)
        )


async def scan(
    client: aioredis.Redis,
    tenant: str,
    flt: LetterFilter,
    *,
    limit: int,
    cursor: str | None = None,
    budget: int | None = None,
) -> tuple[list[DeadLetter], str | None]:
    """A tenant's dead letters matching ``flt``, newest first, and the cursor after them.

    With ``budget``, at most that many letters are read (a short page and a cursor to go on, as jobs').

    Raises:
        InvalidInput: the cursor is malformed.
    """
    out: list[DeadLetter] = []
    read = 0
    pages = paging.newest_first(client, keys.dead_letters(tenant), cursor=cursor)
    async for rows in pages:
        raws = await client.mget([keys.dead_letter(letter_id) for letter_id, _ in rows]) if rows else []
        for (letter_id, score), raw in zip(rows, raws, strict=True):
            read += 1
            letter = _decode(raw)
            if letter is not None and flt.matches(letter):
                out.append(letter)
            if len(out) == limit or (budget is not None and read >= budget):
                await pages.aclose()
                return out, paging.cursor_of(score, letter_id)
    return out, None


async def count_by_queue(client: aioredis.Redis, queues: list[str]) -> Mapping[str, int]:
    """Dead letters held per queue."""
    async with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.zcard(keys.dead_letters_by_queue(queue))
        counts = await pipe.execute()
    return {q: int(n) for q, n in zip(queues, counts, strict=True)}
