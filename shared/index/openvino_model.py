"""The sentence model run by OpenVINO on the CPU, in fp32: converted once from the local weights, cached on disk.

Only the transformer runs in OpenVINO; tokenisation is sentence-transformers' own (same ids, same
truncation) and mean pooling and normalisation are done here as its ``Pooling`` and ``Normalize``
modules do them, so the vectors are those of the torch model to float rounding.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import shutil
import uuid
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import structlog

from shared.errors import ConfigurationError
from shared.index import batches

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = structlog.get_logger(__name__)

# fp32 inference, asked for explicitly: on CPUs with bf16 units OpenVINO's default is bf16, whose
# vectors drift from torch's by far more than float rounding.
PRECISION: Final = "f32"
# Streams, not one inference over every core: OpenVINO then runs as many model batches at once as it has
# streams (one per core or pair of cores), each on its own threads. Within one inference the threads meet
# at every layer, so on cores shared with other processes (the indexer, the gateway) one preempted thread
# stalls the rest; separate streams do not wait for each other, and tokenising the next batch overlaps the
# model. "LATENCY" is one stream over every core.
PERFORMANCE_HINT: Final = "THROUGHPUT"
# Longest wait for an infer request another call holds before taking it for lost and making a new one.
REQUEST_WAIT_S: Final = 30.0
# Model batches per infer request that a long call tokenises first, alone, so that the streams have work
# while the rest of its texts is tokenised (two calls starting together would otherwise leave them idle).
HEAD_BATCHES: Final = 4
# Files whose bytes decide the converted graph (with the library versions): the cache key.
WEIGHT_FILES: Final = ("config.json", "model.safetensors", "pytorch_model.bin")


def available() -> bool:
    """Whether the ``openvino`` package can be imported (the ``semaflow[openvino]`` extra)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _check_pipeline(model: SentenceTransformer) -> None:
    """The model must be transformer -> mean pooling -> normalize: what ``encode`` below reproduces."""
    names = [type(m).__name__ for m in model]
    second: Any = model[1] if len(names) > 1 else None
    pooling = second.get_config_dict() if second is not None else {}
    mean = pooling.get("pooling_mode") == "mean" or pooling.get("pooling_mode_mean_tokens") is True
    if names != ["Transformer", "Pooling", "Normalize"] or not mean:
        raise ConfigurationError(f"the openvino backend runs mean-pooled, normalised models only, not {names}")


def cache_key(model_dir: Path) -> str:
    """Digest of the model's weights and the versions that convert them: a new one means a new conversion."""
    import openvino
    import torch
    import transformers

    h = hashlib.sha256()
    for name in WEIGHT_FILES:
        path = model_dir / name
        if path.is_file():
            h.update(name.encode())
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    versions = f"openvino {openvino.__version__} torch {torch.__version__} transformers {transformers.__version__}"
    h.update(versions.encode())
    return h.hexdigest()[:24]


def converted(model: SentenceTransformer, model_dir: Path, cache_dir: Path) -> Path:
    """Path of the OpenVINO IR of ``model``, converting it into ``cache_dir`` first if not there yet.

    The conversion is written to a directory of its own and renamed into place, so processes converting
    at once never read a half-written file.
    """
    import openvino as ov
    import torch

    final = cache_dir / "openvino" / cache_key(model_dir)
    xml = final / "model.xml"
    if xml.is_file():
        return xml
    log.info("model.converting", backend="openvino", into=str(final))
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        example = {
            k: v for k, v in model.preprocess(["An example sentence.", "Another one."]).items() if k in batches.INPUTS
        }
        # Tracing warns (torch.jit.trace is deprecated, transformers' shape checks become constants): the
        # agreement check with torch, not the warnings, tells whether the graph is right.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ir = ov.convert_model(model[0].auto_model, example_input=example)
        # compress_to_fp16=False: the weights stay fp32 (the default would halve them).
        ov.save_model(ir, tmp / "model.xml", compress_to_fp16=False)
        try:
            tmp.rename(final)
        except OSError:
            if not xml.is_file():  # not another process's conversion in place: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml


class OpenVINOModel:
    """Encodes texts with the OpenVINO IR of a sentence-transformers model; thread-safe.

    Several calls may run at once: they share the compiled model's infer requests, each call running up
    to one batch per stream. While one call tokenises its texts, pools a finished batch or has returned
    to its caller (who stores the vectors and reads the next job), the other call's batches keep the
    streams busy, and at the end of a call its last batches run beside the next call's first.
    """

    def __init__(self, model: SentenceTransformer, xml: Path, *, hint: str = PERFORMANCE_HINT) -> None:
        import openvino as ov

        _check_pipeline(model)
        self._st = model
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": PRECISION, "PERFORMANCE_HINT": hint}
        self._compiled = core.compile_model(str(xml), "CPU", config)
        got = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        if got != ov.Type.f32:
            raise ConfigurationError(f"OpenVINO compiled the model for {got}, not fp32")
        self.streams = int(self._compiled.get_property("NUM_STREAMS"))
        # A call keeps up to one batch per optimal request under way; twice as many requests let two calls
        # do so at once, the streams taking the queued batches in turn.
        self._per_call = max(1, int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(2 * self._per_call):
            self._idle.put(self._compiled.create_infer_request())
        self._hidden = next(o for o in self._compiled.outputs if "last_hidden_state" in o.get_names())
        self.dim = self._hidden.get_partial_shape()[2].get_length()
        names = {p.get_any_name() for p in self._compiled.inputs}
        self._inputs = [k for k in batches.INPUTS if k in names]
        self.threads = int(self._compiled.get_property("INFERENCE_NUM_THREADS"))

    @classmethod
    def load(cls, model: SentenceTransformer, model_dir: Path, cache_dir: Path) -> OpenVINOModel:
        """Convert (once, cached under ``cache_dir``) and compile ``model`` for the CPU."""
        _check_pipeline(model)
        return cls(model, converted(model, model_dir, cache_dir))

    def encode(
        self, texts: list[str], batch_size: int, on_progress: Callable[[int], None] | None = None
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Unit vectors of ``texts``, in order; ``on_progress`` is told after each model batch how many texts have
        their vector so far (if it raises, the batches under way finish and the exception propagates).

        The texts are tokenised once and cut into batches by token count (:mod:`shared.index.batches`): a long
        call's longest texts (by characters) first, a few batches per infer request, which start at once while
        the rest is tokenised (two calls starting together would otherwise leave every stream idle while both
        tokenise). Up to one batch per optimal infer request (one per stream) is under way at once, and each is
        pooled once its request is done, while the others run: every stream is kept fed until the last batch.
        """
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        running: deque[tuple[Any, np.ndarray[Any, Any], np.ndarray[Any, Any]]] = deque()
        done = 0

        def pool_oldest() -> None:
            nonlocal done
            request, idx, mask = running.popleft()
            try:
                self._pool(request, idx, mask, out)
            finally:
                self._idle.put(request)
            done += len(idx)
            if on_progress is not None:
                on_progress(done)

        groups = batches.parts(texts, self._per_call * HEAD_BATCHES * batch_size)
        try:
            for batch in batches.token_batches(self._st, texts, groups, batch_size, inputs=self._inputs):
                request = self._acquire(running, pool_oldest)
                try:
                    request.start_async(batch.inputs)
                except BaseException:
                    self._idle.put(request)
                    raise
                running.append((request, batch.rows, batch.attention))
            while running:
                pool_oldest()
        finally:
            for request, _, _ in running:  # stopped early: no request may still be running when it is reused
                request.wait()
                self._idle.put(request)
        return out

    def _acquire(self, running: deque[Any], pool_oldest: Callable[[], None]) -> Any:
        """An idle infer request for a call with ``running`` batches under way.

        A call holding requests never blocks for another: it pools its own oldest batch (``pool_oldest``), which
        returns that request, so calls running at once cannot wait on each other forever. A call holding none
        waits for one; if none comes back within :data:`REQUEST_WAIT_S` (a model batch takes milliseconds), one
        was lost (a task's time limit interrupts its thread with an exception that can land between taking a
        request and recording it) and a new one is made, so a lost request never stalls every later call.
        """
        while running:
            if len(running) < self._per_call:
                with contextlib.suppress(queue.Empty):
                    return self._idle.get_nowait()
            pool_oldest()
        try:
            return self._idle.get(timeout=REQUEST_WAIT_S)  # others hold every request
        except queue.Empty:
            log.warning("openvino.request_replaced", waited_s=REQUEST_WAIT_S)
            return self._compiled.create_infer_request()

    def _pool(
        self, request: Any, idx: np.ndarray[Any, Any], attention: np.ndarray[Any, Any], out: np.ndarray[Any, Any]
    ) -> None:
        """Wait for ``request``, then write the mean-pooled, normalised vectors of its batch into ``out[idx]``."""
        request.wait()
        hidden = request.get_tensor(self._hidden).data
        mask = attention.astype(np.float32)[:, :, None]
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        out[idx] = pooled / norms
