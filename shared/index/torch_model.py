"""The sentence model run by torch, on the CPU or a CUDA GPU, fed batches cut by token count.

sentence-transformers' own ``encode`` orders a call's texts by characters and tokenises each batch as it
comes; here a call is tokenised once, in parts (:mod:`shared.index.batches`), and cut into batches by token
count, so the model computes little padding. The forward pass is the sentence-transformers model's own (its
transformer, pooling and normalisation), so the vectors are its vectors to float rounding.

On a GPU each batch also has a budget of positions (texts x its longest text): short texts go in large
batches, long ones in small, so every batch keeps the GPU about as busy and none runs out of memory. Its
inputs are copied from pinned memory and its vectors back into pinned memory without waiting: while the
GPU runs a batch, this thread tokenises and queues the next ones (up to :data:`IN_FLIGHT` under way).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from shared.index import batches

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

# Batches queued on a GPU before this thread waits for the oldest one's vectors: enough that the GPU never
# waits for the next batch's inputs while this thread pools a finished one.
IN_FLIGHT: Final = 3
# Texts tokenised first, alone, in a long call, in batches: the GPU has work while the rest is tokenised.
HEAD_BATCHES: Final = 4


class TorchModel:
    """Encodes texts with a sentence-transformers model on its own device. Calls from several threads may run at
    once (each keeps its own batches in flight); on a CPU, :class:`~shared.index.embedding.Encoder` has them take
    turns, as torch runs each over every core."""

    def __init__(self, model: SentenceTransformer, dim: int) -> None:
        self._st = model
        self.dim = dim
        self.device = model.device
        self._gpu = model.device.type == "cuda"

    def encode(
        self,
        texts: list[str],
        batch_size: int,
        max_tokens: int = 0,
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Unit vectors of ``texts``, in order: batches of at most ``batch_size`` texts and (when set)
        ``max_tokens`` positions; ``on_progress`` is told after each batch how many texts have their vector so
        far (if it raises, the call stops there and the exception propagates)."""
        import torch

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        running: deque[tuple[torch.Tensor, Any, np.ndarray[Any, Any]]] = deque()
        done = 0

        def pool_oldest() -> None:
            nonlocal done
            vectors, ready, rows = running.popleft()
            if ready is not None:
                ready.synchronize()
            out[rows] = vectors.float().numpy()
            done += len(rows)
            if on_progress is not None:
                on_progress(done)

        groups = batches.parts(texts, HEAD_BATCHES * batch_size if self._gpu else 0)
        depth = IN_FLIGHT if self._gpu else 1
        try:
            with torch.inference_mode():
                for batch in batches.token_batches(self._st, texts, groups, batch_size, max_tokens=max_tokens):
                    vectors, ready = self._start(batch.inputs)
                    running.append((vectors, ready, batch.rows))
                    while len(running) >= depth:
                        pool_oldest()
                while running:
                    pool_oldest()
        finally:
            for _, ready, _ in running:  # stopped early: nothing may still be writing into its buffers
                if ready is not None:
                    ready.synchronize()
        return out

    def _start(self, inputs: dict[str, np.ndarray[Any, Any]]) -> tuple[torch.Tensor, Any]:
        """Run one batch: its vectors on the CPU and, on a GPU, the event after which they are there."""
        import torch

        if not self._gpu:
            features = {k: torch.from_numpy(v) for k, v in inputs.items()}
            return self._st(features)["sentence_embedding"], None
        features = {k: torch.from_numpy(v).pin_memory().to(self.device, non_blocking=True) for k, v in inputs.items()}
        vectors = self._st(features)["sentence_embedding"]
        host = torch.empty(vectors.shape, dtype=vectors.dtype, pin_memory=True)
        host.copy_(vectors, non_blocking=True)
        ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
        ready.record()
        return host, ready
