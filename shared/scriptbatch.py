"""Lua script calls made in the same turn of an event loop, sent to Redis in one round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

# Calls sent in one pipeline at most; more start another at once (a bound on one reply's size).
MAX_BATCH: Final = 256

_Call = tuple["AsyncScript", Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    """Coalesces concurrent calls of registered scripts into one round trip.

    Under load many webhook attempts begin and end in the same turn of the event loop; one pipeline
    for all their calls costs one write and one read where each call would cost its own, and those
    system calls are most of a call's price. A lone call waits for nothing but the end of the turn.
    Each call still runs as its own script (no transaction across them), and each caller gets its
    own result or error. A failed connection is not retried (a script may have run): every caller
    of the batch gets the error.
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
            async with self.client.pipeline(transaction=False) as pipe:
                for script, keys, args, _ in batch:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
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
