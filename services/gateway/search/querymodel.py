"""The gateway's query encoder, loaded in the background so start-up never waits for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from shared.errors import ModelUnavailable

if TYPE_CHECKING:
    from shared.index.embedding import Encoder

log = structlog.get_logger(__name__)


class QueryModel:
    """Loads the model once in a thread; ``encode`` waits for it (up to a timeout)."""

    def __init__(self, loader: Callable[[], Encoder], *, timeout_s: float) -> None:
        self._loader = loader
        self._timeout_s = timeout_s
        self._task: asyncio.Task[Encoder] | None = None

    def start(self) -> None:
        """Begin loading (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(asyncio.to_thread(self._loader), name="load-query-model")

    @property
    def ready(self) -> bool:
        """Whether the model is loaded."""
        return self._task is not None and self._task.done() and self._task.exception() is None

    async def encode(self, text: str) -> np.ndarray[Any, Any]:
        """One unit vector for ``text``.

        Raises:
            ModelUnavailable: the model failed to load or is not loaded within the timeout.
        """
        self.start()
        assert self._task is not None
        try:
            encoder = await asyncio.wait_for(asyncio.shield(self._task), self._timeout_s)
        except TimeoutError as exc:
            raise ModelUnavailable("the embedding model is still loading; retry shortly") from exc
        except Exception as exc:
            raise ModelUnavailable(f"the embedding model failed to load: {exc}") from exc
        vectors = await asyncio.to_thread(encoder.encode, [text])
        first: np.ndarray[Any, Any] = vectors[0]
        return first

    async def close(self) -> None:
        """Wait for a load in progress, so no thread outlives the app."""
        if self._task is not None and not self._task.done():
            try:
                await self._task
            except Exception as exc:
                log.warning("model.load_failed", error=str(exc))
