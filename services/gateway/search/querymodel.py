"""The gateway's query encoder: loaded in the background so start-up never waits for it, and batched.

Concurrent text searches are embedded together: a request joins a queue, and one runner task takes up
to ``max_batch`` queued texts at a time (waiting up to ``batch_wait_s`` for more to arrive), encodes
them in one model call in a worker thread, and hands each caller its own row. One call for 32 texts
costs a fraction of 32 calls for one, so under load the model answers several times more queries per
second; with a single caller the batch is that one text, after at most ``batch_wait_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from shared.errors import ModelUnavailable

if TYPE_CHECKING:
    from shared.index.embedding import Encoder

log = structlog.get_logger(__name__)

Vector = np.ndarray[Any, Any]


class QueryModel:
    """Loads the model once in a thread; ``encode`` waits for it (up to a timeout), then batches with its peers."""

    def __init__(
        self,
        loader: Callable[[], Encoder],
        *,
        timeout_s: float,
        max_batch: int = 32,
        batch_wait_s: float = 0.002,
    ) -> None:
        self._loader = loader
        self._timeout_s = timeout_s
        self._max_batch = max(1, max_batch)
        self._batch_wait_s = max(0.0, batch_wait_s)
        self._task: asyncio.Task[Encoder] | None = None
        self._queue: list[tuple[str, asyncio.Future[Vector]]] = []
        self._full = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin loading (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(asyncio.to_thread(self._loader), name="load-query-model")

    @property
    def ready(self) -> bool:
        """Whether the model is loaded."""
        return self._task is not None and self._task.done() and self._task.exception() is None

    async def _encoder(self) -> Encoder:
        self.start()
        assert self._task is not None
        if self.ready:
            return self._task.result()
        try:
            return await asyncio.wait_for(asyncio.shield(self._task), self._timeout_s)
        except TimeoutError as exc:
            raise ModelUnavailable("the embedding model is still loading; retry shortly") from exc
        except Exception as exc:
            raise ModelUnavailable(f"the embedding model failed to load: {exc}") from exc

    async def encode(self, text: str) -> Vector:
        """One unit vector for ``text``, computed in a batch with the texts of concurrent callers.

        Raises:
            ModelUnavailable: the model failed to load or is not loaded within the timeout.
            Exception: what the model raised for this text.
        """
        encoder = await self._encoder()
        future: asyncio.Future[Vector] = asyncio.get_running_loop().create_future()
        self._queue.append((text, future))
        if len(self._queue) >= self._max_batch:
            self._full.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(encoder), name="query-batches")
        return await future

    async def _run(self, encoder: Encoder) -> None:
        """Encode queued texts, a batch at a time, until the queue is empty."""
        batch: list[tuple[str, asyncio.Future[Vector]]] = []
        try:
            while self._queue:
                if len(self._queue) < self._max_batch and self._batch_wait_s > 0:
                    self._full.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self._batch_wait_s)
                batch = [(text, f) for text, f in self._queue[: self._max_batch] if not f.done()]  # done: cancelled
                del self._queue[: self._max_batch]
                if batch:
                    await self._encode_batch(encoder, batch)
        finally:
            # Cancelled (the app is stopping): no caller is left waiting for a batch that will not run.
            for _, future in [*batch, *self._queue]:
                future.cancel()
            self._queue.clear()

    async def _encode_batch(self, encoder: Encoder, batch: list[tuple[str, asyncio.Future[Vector]]]) -> None:
        try:
            vectors = await asyncio.to_thread(encoder.encode, [text for text, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
                return
            # One text may be what the model cannot take: each on its own, so only its caller fails.
            log.warning("query_batch.failed", size=len(batch), error=str(exc))
            for item in batch:
                await self._encode_batch(encoder, [item])
            return
        for (_, future), vector in zip(batch, vectors, strict=True):
            _settle(future, vector=vector)

    async def close(self) -> None:
        """Wait for a load and the batches in progress, so no thread outlives the app."""
        if self._task is not None and not self._task.done():
            try:
                await self._task
            except Exception as exc:
                log.warning("model.load_failed", error=str(exc))
        if self._runner is not None and not self._runner.done():
            with contextlib.suppress(Exception):
                await self._runner


def _settle(future: asyncio.Future[Vector], *, vector: Vector | None = None, error: Exception | None = None) -> None:
    """Give ``future`` its vector or error, unless its caller has gone (cancelled)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    elif vector is not None:
        future.set_result(vector)
