"""Concurrent query texts embedded together: each caller gets its own vector, and one bad text fails only itself."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from services.gateway.search.querymodel import QueryModel
from shared.index.embedding import Encoder, Progress

WORDS = ["cats", "dogs", "rivers", "stars", "bread", "music", "law", "ice"]
TEXTS = [f"query number {i}: {word}" for i, word in enumerate(WORDS)]


class Recording(Encoder):
    """The real model, recording each call's texts; a text holding "\x00boom" fails its whole call."""

    def __init__(self, real: Encoder) -> None:
        super().__init__(real.model, batch_size=real.batch_size)
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str], on_progress: Progress | None = None) -> np.ndarray[Any, np.dtype[np.float32]]:
        self.calls.append(list(texts))
        if any("\x00boom" in t for t in texts):
            raise RuntimeError("the model cannot take this text")
        return super().encode(texts, on_progress)


@pytest.fixture
def recording(encoder: Encoder) -> Recording:
    return Recording(encoder)


async def _loaded(model: QueryModel) -> QueryModel:
    model.start()
    await model.encode("warm up")
    return model


async def test_concurrent_callers_share_one_model_call_and_each_gets_its_own_vector(
    recording: Recording, encoder: Encoder
) -> None:
    model = await _loaded(QueryModel(lambda: recording, timeout_s=30, max_batch=32, batch_wait_s=0.002))
    recording.calls.clear()

    vectors = await asyncio.gather(*(model.encode(t) for t in TEXTS))

    assert recording.calls == [TEXTS]  # one call, in the callers' order
    alone = [encoder.encode([t])[0] for t in TEXTS]
    for text, got, expected in zip(TEXTS, vectors, alone, strict=True):
        assert got.shape == (encoder.dim,)
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=text)
    # Different texts, different vectors: no caller got a neighbour's row.
    assert len({v.tobytes() for v in vectors}) == len(TEXTS)
    await model.close()


async def test_a_batch_holds_at_most_max_batch_texts(recording: Recording) -> None:
    model = await _loaded(QueryModel(lambda: recording, timeout_s=30, max_batch=3, batch_wait_s=0.0))
    recording.calls.clear()

    await asyncio.gather(*(model.encode(t) for t in TEXTS))

    assert [len(c) for c in recording.calls] == [3, 3, 2]
    assert [t for call in recording.calls for t in call] == TEXTS
    await model.close()


async def test_a_text_the_model_refuses_fails_only_its_caller(recording: Recording, encoder: Encoder) -> None:
    model = await _loaded(QueryModel(lambda: recording, timeout_s=30, max_batch=32, batch_wait_s=0.002))
    texts = [*TEXTS[:3], "bad\x00boom", *TEXTS[3:]]

    results = await asyncio.gather(*(model.encode(t) for t in texts), return_exceptions=True)

    failed = [t for t, r in zip(texts, results, strict=True) if isinstance(r, BaseException)]
    assert failed == ["bad\x00boom"]
    assert isinstance(results[3], RuntimeError)
    for text, got in zip(texts, results, strict=True):
        if not isinstance(got, BaseException):
            np.testing.assert_allclose(got, encoder.encode([text])[0], atol=1e-5)
    # The batcher goes on after the failure.
    again = await asyncio.gather(model.encode(TEXTS[0]), model.encode(TEXTS[1]))
    np.testing.assert_allclose(again[1], encoder.encode([TEXTS[1]])[0], atol=1e-5)
    await model.close()


async def test_a_caller_that_gives_up_does_not_stop_the_others(recording: Recording) -> None:
    model = await _loaded(QueryModel(lambda: recording, timeout_s=30, max_batch=32, batch_wait_s=0.05))
    recording.calls.clear()
    gone = asyncio.create_task(model.encode("never mind"))
    kept = asyncio.create_task(model.encode(TEXTS[0]))
    await asyncio.sleep(0.01)  # both queued, the batch still gathering for 50 ms
    gone.cancel()

    vector = await kept

    assert gone.cancelled()
    assert recording.calls == [[TEXTS[0]]]
    assert vector.shape == (384,)
    await model.close()
