"""Lua script calls sent to Redis many per round trip: those made in the same turn of an event loop
(:class:`ScriptBatcher`), or a list of them from a thread (:func:`run_packed`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import hiredis
from redis.exceptions import NoScriptError, ResponseError

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

# Calls sent in one pipeline at most; more start another at once (a bound on one reply's size).
MAX_BATCH: Final = 256

_Call = tuple["AsyncScript", Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


def evalsha(sha: str, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
    """One ``EVALSHA`` call in the Redis protocol, packed by hiredis (a third of redis-py's cost per call)."""
    return bytes(hiredis.pack_command((b"EVALSHA", sha, len(keys), *keys, *args)))


def run_packed(client: redis.Redis, packed: bytes, count: int) -> list[Any]:
    """Send ``count`` packed commands in one write on a connection of ``client``'s pool and read their
    replies; an error reply is returned in its place, not raised.

    Raises:
        redis.RedisError: the connection failed (the connection is dropped: replies may be unread).
    """
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        replies: list[Any] = []
        try:
            connection.send_packed_command([packed])  # type: ignore[no-untyped-call]
            for _ in range(count):
                try:
                    replies.append(connection.read_response())
                except ResponseError as exc:  # this command failed; the replies after it are still to read
                    replies.append(exc)
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]
            raise
        return replies
    finally:
        pool.release(connection)


class ScriptBatcher:
    """Coalesces concurrent calls of registered scripts into one round trip.

    Under load many webhook attempts begin and end in the same turn of the event loop; one pipeline
    for all their calls costs one write and one read where each call would cost its own, and those
    system calls are most of a call's price. A lone call waits for nothing but the end of the turn.
    Each call still runs as its own script (no transaction across them), and each caller gets its
    own result or error.

    The calls are packed by hiredis and their replies read straight off a pooled connection: the
    client's general pipeline costs about three times as much per call, which at thousands of
    calls a second is a good part of a notifier's CPU. A failed connection is not retried (a
    script may have run): every caller of the batch gets the error.
    """

    def __init__(self, client: aioredis.Redis, *, max_batch: int = MAX_BATCH) -> None:
        self.client = client
        self.max_batch = max_batch
        self._pending: list[_Call] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script`` with ``keys`` and ``args`` in the next batch and return its reply.

        Raises:
            redis.RedisError: the script failed, or Redis could not be reached.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, keys, args, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self._sending.add(task)  # held until done: the loop keeps only weak references to tasks
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await self._execute(batch)
        except Exception as exc:  # the connection failed: every caller of the batch gets the error
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (script, keys, args, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, NoScriptError):  # Redis restarted or was flushed: load it and run it alone
                try:
                    reply = await script(keys=keys, args=args)
                except Exception as exc:
                    future.set_exception(exc)
                    continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        """:func:`run_packed` for the event loop: every call of the batch in one write, then the replies."""
        packed = b"".join(evalsha(script.sha, keys, args) for script, keys, args, _ in batch)
        pool = self.client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            replies: list[Any] = []
            try:
                await connection.send_packed_command(packed)
                for _ in batch:
                    try:
                        replies.append(await connection.read_response())
                    except ResponseError as exc:  # this script failed; the replies after it are still to read
                        replies.append(exc)
            except BaseException:
                # Replies may be left unread on the socket: the connection cannot be reused.
                await connection.disconnect(nowait=True)
                raise
            return replies
        finally:
            await pool.release(connection)
