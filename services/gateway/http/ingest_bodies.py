"""Ingest bodies parsed, validated and encoded as batch files in worker processes, away from the gateway's GIL.

A 1,000-vector body costs the gateway 60-70 ms of CPU to parse, validate and encode. On a thread of the
gateway's own process that work still holds the interpreter lock for long stretches (one orjson or pydantic
call holds it from start to end), and every search waiting for the event loop or its FAISS thread waits with
it. In a worker process the gateway pays only for handing the body over and taking the batch file back, and
the operating system shares the cores among processes by time slice. A body the workers refuse is decoded
again on the gateway's body thread, which raises the very error (400 or 422) the API answers with.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, NamedTuple

import structlog
from aiohttp import web
from pydantic import ValidationError

from services.gateway.http.bodies import OFF_LOOP_BYTES, decode_body
from shared.api.schemas import IngestRequest
from shared.index.documents import EncodedBatch, encode_batch
from shared.priority import lower_priority

if TYPE_CHECKING:
    from shared.messaging.workqueue import Priority

log = structlog.get_logger(__name__)


class PreparedIngest(NamedTuple):
    """An ingest body decoded and its batch file encoded: all the write path needs of it."""

    documents: int
    priority: Priority
    batch: EncodedBatch | None  # None: more documents than a request may hold (nothing was encoded)


def prepare_ingest(raw: bytes, max_depth: int, max_documents: int) -> PreparedIngest:
    """``raw`` decoded as an :class:`IngestRequest` and its documents encoded as a batch file.

    Raises:
        web.HTTPBadRequest: it is not strict JSON, nests too deep, or is not an object (a 400).
        pydantic.ValidationError: its fields are invalid (a 422).
    """
    body = decode_body(raw, IngestRequest, max_depth)
    count = len(body.documents)
    if count > max_documents:
        return PreparedIngest(count, body.priority, None)
    return PreparedIngest(count, body.priority, encode_batch(body.documents))


def _prepare_or_none(raw: bytes, max_depth: int, max_documents: int) -> PreparedIngest | None:
    """:func:`prepare_ingest` in a worker process: None for a body the API refuses (the gateway says why)."""
    try:
        return prepare_ingest(raw, max_depth, max_documents)
    except (web.HTTPException, ValidationError):
        return None


def _started() -> None:
    """Nothing: run once per worker at start; the pool serves bodies once every worker has run it."""


class IngestBodies:
    """Prepares ingest bodies: large ones in ``processes`` worker processes, small ones (and all of them with
    ``processes`` 0) on ``threads``, the gateway's body thread.

    The workers start with the first large body (a gateway that only searches never starts them), and until
    they have imported what they need (about a second) bodies are prepared on the thread, so no request
    waits for them. A worker that dies (killed for memory, say) costs no request either: the pool is
    replaced and the body decoded on the thread meanwhile. The workers run at niceness ``nice`` (see
    :mod:`shared.priority`): parsing a batch is background work next to the searches of the gateway itself.
    """

    def __init__(
        self, processes: int, threads: Executor | None, *, max_depth: int, max_documents: int, nice: int = 0
    ) -> None:
        self.processes = processes
        self.nice = nice
        self.threads = threads
        self.max_depth = max_depth
        self.max_documents = max_documents
        self._pool: ProcessPoolExecutor | None = None
        self._warming: list[Future[None]] = []

    def start(self) -> None:
        """Start the worker processes now, if they are not started (each takes about a second to import what it
        needs, in the background)."""
        if self.processes > 0 and self._pool is None:
            # spawn: the gateway runs threads, and a forked child would inherit their locks mid-use.
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=lower_priority,
                initargs=(self.nice,),
            )
            self._warming = [self._pool.submit(_started) for _ in range(self.processes)]

    async def warm(self) -> None:
        """Start the workers and wait until each has started."""
        self.start()
        await asyncio.gather(*(asyncio.wrap_future(f) for f in self._warming))

    def _ready_pool(self) -> ProcessPoolExecutor | None:
        self.start()
        if not all(f.done() for f in self._warming):
            return None
        failed = next((f.exception() for f in self._warming if f.exception() is not None), None)
        if failed is not None:  # the workers cannot start here: the thread serves every body from now on
            log.error("ingest.body_workers_failed", error=repr(failed))
            self.processes = 0
            self.close()
            return None
        return self._pool

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    async def prepare(self, raw: bytes) -> PreparedIngest:
        """``raw`` decoded and encoded (see :func:`prepare_ingest`), off the event loop.

        Raises:
            web.HTTPBadRequest: bad JSON (400).
            pydantic.ValidationError: bad fields (422).
        """
        loop = asyncio.get_running_loop()
        pool = self._ready_pool() if self.processes > 0 and len(raw) >= OFF_LOOP_BYTES else None
        if pool is not None:
            try:
                prepared = await loop.run_in_executor(pool, _prepare_or_none, raw, self.max_depth, self.max_documents)
            except BrokenProcessPool:
                log.warning("ingest.body_workers_restarted", processes=self.processes)
                if self._pool is pool:
                    self._pool = None
                    pool.shutdown(wait=False, cancel_futures=True)
                    self.start()
            else:
                if prepared is not None:
                    return prepared
        return await loop.run_in_executor(self.threads, prepare_ingest, raw, self.max_depth, self.max_documents)
