"""The embedding backends with the real model: OpenVINO's vectors are torch's, it is converted once, and
``auto`` keeps torch when OpenVINO is absent or disagrees."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.errors import ConfigurationError
from shared.index import batches, openvino_model
from shared.index.backend_choice import MIN_AGREEMENT, PROBE_TEXTS, choose, min_cosine
from shared.index.embedding import Encoder, packaged_model_path

needs_openvino = pytest.mark.skipif(not openvino_model.available(), reason="openvino is not installed")

# Real documents' shapes: a title, an abstract of a few hundred tokens (truncated at 256), a short query.
TEXTS = [
    "Vitamin D and the risk of respiratory tract infection: a randomised trial in 5,110 adults.",
    "ALDH1 is a marker of normal and malignant human mammary stem cells and a predictor of poor clinical outcome. " * 8,
    "Does sleep deprivation impair glucose tolerance?",
    "Microstructural development of human newborn cerebral white matter assessed in vivo by diffusion tensor "
    "magnetic resonance imaging. Alterations of architecture of cerebral white matter in the developing human "
    "brain can affect cortical development and result in functional disabilities.",
    "x",
    "Ünïcödé text, emoji 🧬 and digits 12345 — all tokenised the same way by both backends.",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def openvino_encoder(cache_dir: Path) -> Encoder:
    if not openvino_model.available():
        pytest.skip("openvino is not installed")
    return Encoder.load(backend="openvino", cache_dir=cache_dir, batch_size=4)


@needs_openvino
def test_openvino_vectors_agree_with_torch_on_real_texts(encoder: Encoder, openvino_encoder: Encoder) -> None:
    assert openvino_encoder.backend == "openvino"
    ov = openvino_encoder.encode(TEXTS)
    torch = encoder.encode(TEXTS)
    assert ov.dtype == np.float32 and ov.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(ov, axis=1), 1.0, atol=1e-5)
    assert min_cosine(ov, torch) >= MIN_AGREEMENT
    # One text alone gives its vector from a batch of many (padding does not leak into it).
    np.testing.assert_allclose(openvino_encoder.encode([TEXTS[1]])[0], ov[1], atol=1e-5)


@needs_openvino
def test_batches_in_flight_on_several_streams_come_back_in_document_order(
    encoder: Encoder, openvino_encoder: Encoder
) -> None:
    # Given more model batches (batch size 4) than infer requests, texts of every length interleaved
    texts = [f"{k}: {t}" for k, t in enumerate(TEXTS * 4)]
    texts = texts[::2] + texts[1::2]
    # When they are encoded in one call
    ov = openvino_encoder.encode(texts)
    # Then each row is its own text's vector, as torch gives it and as that text encoded alone gives it
    assert min_cosine(ov, encoder.encode(texts)) >= MIN_AGREEMENT
    for k in (0, 5, len(texts) - 1):
        np.testing.assert_allclose(openvino_encoder.encode([texts[k]])[0], ov[k], atol=1e-5)


@needs_openvino
def test_a_long_call_tokenised_in_two_parts_gives_every_text_its_own_vector(
    encoder: Encoder, openvino_encoder: Encoder, cache_dir: Path
) -> None:
    # Given a call long enough that its longest texts are tokenised first, alone, and the rest after
    model = openvino_model.OpenVINOModel.load(encoder.model, packaged_model_path(), cache_dir)
    count = 2 * model._per_call * openvino_model.HEAD_BATCHES * 4 + len(TEXTS)  # past two heads, on any CPU
    texts = [f"{k}: {TEXTS[k % len(TEXTS)]}" for k in range(count)]
    parts = batches.parts(texts, model._per_call * openvino_model.HEAD_BATCHES * 4)
    assert len(parts) == 2 and sorted(np.concatenate(parts).tolist()) == list(range(len(texts)))
    # When they are encoded in one call, progress noted
    told: list[int] = []
    ov = model.encode(texts, 4, on_progress=told.append)
    # Then each row is its own text's vector, as torch gives it and as that text encoded alone gives it
    assert min_cosine(ov, encoder.encode(texts)) >= MIN_AGREEMENT
    for k in (0, 1, 7, len(texts) - 1):
        np.testing.assert_allclose(openvino_encoder.encode([texts[k]])[0], ov[k], atol=1e-5)
    assert told[-1] == len(texts) and told == sorted(told)


@needs_openvino
def test_calls_from_several_threads_at_once_each_get_their_own_texts_vectors(openvino_encoder: Encoder) -> None:
    # Given four calls of different texts, each more model batches than the model has infer requests
    calls = [[f"call {c}, text {k}: {t}" for k, t in enumerate(TEXTS * 3)] for c in range(4)]
    alone = [openvino_encoder.encode(texts) for texts in calls]
    # When they run at once from four threads, twice over
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(openvino_encoder.encode, calls * 2))
    # Then each call's rows are its own texts' vectors, as when the calls ran one after another
    for k, got in enumerate(together):
        np.testing.assert_allclose(got, alone[k % 4], atol=1e-5)


@needs_openvino
def test_a_lost_infer_request_is_replaced_rather_than_waited_for_forever(
    encoder: Encoder, openvino_encoder: Encoder, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a model whose every idle infer request was lost (as a thread interrupted by a time limit loses one)
    model = openvino_model.OpenVINOModel.load(encoder.model, packaged_model_path(), cache_dir)
    lost = []
    while not model._idle.empty():
        lost.append(model._idle.get_nowait())
    monkeypatch.setattr(openvino_model, "REQUEST_WAIT_S", 0.2)
    # When texts are encoded, then each call still gets its vectors, on requests made anew
    np.testing.assert_allclose(model.encode(TEXTS, 4), openvino_encoder.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(model.encode(TEXTS, 4), openvino_encoder.encode(TEXTS), atol=1e-5)
    assert lost


class Stop(Exception):
    pass


def told_until_stopped_at_8(encoder: Encoder, texts: list[str]) -> list[int]:
    """What ``on_progress`` was told in a call it stopped (by raising) once 8 texts had their vector."""
    told: list[int] = []

    def stop_at_8(done: int) -> None:
        told.append(done)
        if done >= 8:
            raise Stop

    with pytest.raises(Stop):
        encoder.encode(texts, on_progress=stop_at_8)
    return told


@needs_openvino
def test_progress_is_told_after_each_model_batch_and_may_stop_the_call(openvino_encoder: Encoder) -> None:
    texts = [f"{k}: {t}" for k, t in enumerate(TEXTS * 4)]  # 24 texts: 6 model batches of 4
    told: list[int] = []
    whole = openvino_encoder.encode(texts, on_progress=told.append)
    assert told == [4, 8, 12, 16, 20, 24]
    np.testing.assert_array_equal(whole, openvino_encoder.encode(texts))

    assert told_until_stopped_at_8(openvino_encoder, texts) == [4, 8]
    # Every request the stopped call started has finished: the next call gets its own texts' vectors.
    np.testing.assert_allclose(openvino_encoder.encode(texts[:5]), whole[:5], atol=1e-5)


def test_torch_gives_sentence_transformers_vectors_and_reports_progress_after_each_model_batch(
    encoder: Encoder,
) -> None:
    small = Encoder(encoder.model, batch_size=4)
    texts = [f"{k}: {t}" for k, t in enumerate(TEXTS * 12)]  # 72 texts: 18 model batches of 4
    told: list[int] = []
    vectors = small.encode(texts, on_progress=told.append)
    assert told == list(range(4, 73, 4))
    # The vectors are sentence-transformers' own, text by text, whatever batch each text landed in.
    reference = encoder.model.encode(texts, batch_size=4, normalize_embeddings=True)
    np.testing.assert_allclose(vectors, reference, atol=2e-6)

    assert told_until_stopped_at_8(small, texts) == [4, 8]


def test_torch_batches_hold_at_most_their_budget_of_positions(encoder: Encoder) -> None:
    # Given a budget of 120 positions per model batch (texts x the batch's longest text), up to 64 texts each
    small = Encoder(encoder.model, batch_size=64, batch_tokens=120)
    widths: list[tuple[int, int]] = []
    start = small._torch_model._start

    def recording(inputs: dict[str, Any]) -> Any:
        widths.append(inputs["input_ids"].shape)
        return start(inputs)

    small._torch_model._start = recording  # type: ignore[method-assign]
    texts = [f"{k}: {t}" for k, t in enumerate(TEXTS * 8)]
    # When a call's texts are encoded
    vectors = small.encode(texts)
    # Then short texts share batches, every batch keeps to the budget but one text longer than it (it goes
    # alone), and the vectors are sentence-transformers' own
    assert sum(rows for rows, _ in widths) == len(texts)
    assert all(rows * width <= 120 or rows == 1 for rows, width in widths)
    assert max(rows for rows, _ in widths) > 4 and any(width > 120 for _, width in widths)
    reference = encoder.model.encode(texts, batch_size=16, normalize_embeddings=True)
    np.testing.assert_allclose(vectors, reference, atol=2e-6)


def test_a_long_torch_call_is_tokenised_in_bounded_parts(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given parts of at most 10 texts after a head of 8
    monkeypatch.setattr(batches, "MAX_PART", 10)
    texts = [f"{k}: {TEXTS[k % len(TEXTS)]}" for k in range(45)]
    groups = batches.parts(texts, 8)
    assert [len(g) for g in groups] == [8, 10, 10, 10, 7]
    assert sorted(np.concatenate(groups).tolist()) == list(range(45))
    # When they are batched, then each part is ordered by tokens on its own and every text is in one batch
    model_batches = list(batches.token_batches(encoder.model, texts, groups, 4))
    assert sorted(np.concatenate([b.rows for b in model_batches]).tolist()) == list(range(45))
    small = Encoder(encoder.model, batch_size=4)
    np.testing.assert_allclose(
        small.encode(texts), encoder.model.encode(texts, batch_size=4, normalize_embeddings=True), atol=2e-6
    )


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device")
def test_on_cuda_fp16_vectors_agree_with_the_cpus_fp32(encoder: Encoder) -> None:
    gpu = Encoder.load(device="cuda")
    texts = [f"{k}: {t}" for k, t in enumerate(TEXTS * 200)]
    told: list[int] = []
    got = gpu.encode(texts, on_progress=told.append)
    assert got.dtype == np.float32 and told[-1] == len(texts)
    assert min_cosine(got, encoder.encode(texts)) >= 0.999
    # Calls from several threads run at once on the GPU, each getting its own texts' vectors.
    calls = [[f"call {c}: {t}" for t in texts[:300]] for c in range(4)]
    alone = [gpu.encode(c) for c in calls]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(gpu.encode, calls))
    for a, b in zip(alone, together, strict=True):
        assert min_cosine(a, b) >= 0.9999


@needs_openvino
def test_the_model_is_converted_once_and_reused(openvino_encoder: Encoder, cache_dir: Path) -> None:
    converted = list((cache_dir / "openvino").iterdir())
    assert [p.name for p in converted if ".tmp-" in p.name] == []
    assert len(converted) == 1
    xml = converted[0] / "model.xml"
    stamp = xml.stat().st_mtime_ns
    again = Encoder.load(backend="openvino", cache_dir=cache_dir, batch_size=4)
    assert xml.stat().st_mtime_ns == stamp
    assert list((cache_dir / "openvino").iterdir()) == converted
    np.testing.assert_array_equal(again.encode(TEXTS[:2]), openvino_encoder.encode(TEXTS[:2]))


@needs_openvino
def test_auto_times_both_backends_and_runs_the_one_it_keeps(
    cache_dir: Path, encoder: Encoder, openvino_encoder: Encoder
) -> None:
    enc = Encoder.load(backend="auto", cache_dir=cache_dir, batch_size=4)
    choice = enc.choice
    assert enc.backend == choice.backend in ("torch", "openvino")
    assert choice.min_cosine is not None and choice.min_cosine >= MIN_AGREEMENT
    assert choice.torch_cpu_s is not None and choice.candidate_cpu_s is not None
    faster = "openvino" if choice.candidate_cpu_s < choice.torch_cpu_s else "torch"
    assert enc.backend == faster
    # It runs what it says: its vectors are, bit for bit, those of that backend (the two differ in rounding).
    ov, torch = openvino_encoder.encode(TEXTS), Encoder(encoder.model, batch_size=4).encode(TEXTS)
    assert not np.array_equal(ov, torch)
    np.testing.assert_array_equal(enc.encode(TEXTS), ov if enc.backend == "openvino" else torch)


def test_auto_keeps_torch_when_the_candidate_disagrees(encoder: Encoder) -> None:
    """A real encoder that reads only each text's first three words: vectors that are not torch's."""

    def first_words(texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        return encoder.encode([" ".join(t.split()[:3]) for t in texts])

    choice = choose("openvino", first_words, encoder.encode)
    assert choice.backend == "torch"
    assert "disagrees" in choice.reason
    assert choice.min_cosine is not None and choice.min_cosine < MIN_AGREEMENT
    assert choice.torch_cpu_s is None  # not timed: a backend that disagrees never runs


def test_a_candidate_that_agrees_is_timed_against_torch(encoder: Encoder) -> None:
    choice = choose("same", encoder.encode, encoder.encode, texts=PROBE_TEXTS[:3], rounds=1)
    assert choice.min_cosine is not None and choice.min_cosine > 0.999999
    assert choice.torch_cpu_s is not None and choice.candidate_cpu_s is not None
    assert choice.backend in ("torch", "same")


def test_without_openvino_auto_is_torch_and_openvino_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    assert not openvino_model.available()
    enc = Encoder.load(backend="auto", cache_dir=tmp_path, batch_size=4)
    assert enc.backend == "torch"
    assert enc.choice.reason == "openvino is not installed"
    with pytest.raises(ConfigurationError, match="openvino"):
        Encoder.load(backend="openvino", cache_dir=tmp_path, batch_size=4)
    assert list(tmp_path.iterdir()) == []
