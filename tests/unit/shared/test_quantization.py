"""int8 (scalar-quantised) segments: their ranges, their recall check against exact float32 search, their size,
and the float32 fallback, with real FAISS indexes over small vector sets."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import pytest
from structlog.testing import capture_logs

from shared.index import approximate, segments
from shared.index.approximate import CheckedKind, HnswParams, RecallTarget
from shared.index.documents import normalize
from shared.index.manifests import SegmentRef

HNSW = HnswParams(16, 40, 256)


def _clustered(n: int = 2000, seed: int = 3) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, 384))
    return normalize(centres[rng.integers(0, 20, n)] + rng.normal(scale=0.9, size=(n, 384)))


def _random(n: int = 2000, seed: int = 5) -> np.ndarray[Any, Any]:
    return normalize(np.random.default_rng(seed).normal(size=(n, 384)))


def _build(
    vectors: np.ndarray[Any, Any], kind: str = "flat", target: RecallTarget | None = None
) -> tuple[SegmentRef, dict[str, bytes]]:
    ids = [f"d{i}" for i in range(len(vectors))]
    return segments.build(
        f"s-{kind}",
        vectors,
        ids,
        [{"n": i} for i in range(len(vectors))],
        kind=kind,  # type: ignore[arg-type]
        hnsw=HNSW,
        target=target,
        quantization="int8",
    )


def test_the_ranges_are_what_faiss_trains_on_the_same_rows() -> None:
    vectors = _clustered(3000)
    own = faiss.IndexScalarQuantizer(384, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    approximate.train_ranges(own, vectors)
    reference = faiss.IndexScalarQuantizer(384, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    reference.train(vectors)
    assert own.is_trained
    assert np.allclose(faiss.vector_to_array(own.sq.trained), faiss.vector_to_array(reference.sq.trained))


def test_an_int8_flat_segment_is_a_quarter_of_the_float32_one_and_records_its_recall() -> None:
    vectors = _clustered()
    ref, files = _build(vectors)
    plain, plain_files = segments.build("p", vectors, [f"d{i}" for i in range(2000)], [{}] * 2000)
    assert (ref.kind, ref.quantization, ref.search_param) == ("flat", "int8", None)
    assert ref.recall is not None and ref.recall >= RecallTarget().min_recall
    assert plain.quantization is None and plain.recall is None
    ratio = len(files[segments.INDEX_FILE]) / len(plain_files[segments.INDEX_FILE])
    assert 0.24 < ratio < 0.26, ratio
    index = faiss.deserialize_index(np.frombuffer(files[segments.INDEX_FILE], dtype=np.uint8))
    assert type(faiss.downcast_index(index)).__name__ == "IndexScalarQuantizer"


@pytest.mark.parametrize(("kind", "stored"), [("ivf", "IndexIVFScalarQuantizer"), ("hnsw", "IndexHNSWSQ")])
def test_an_int8_approximate_segment_is_checked_with_its_search_parameter(kind: str, stored: str) -> None:
    ref, files = _build(_clustered(), kind)
    assert ref.kind == kind and ref.quantization == "int8"
    assert ref.recall is not None and ref.recall >= 0.95 and ref.search_param is not None
    index = faiss.deserialize_index(np.frombuffer(files[segments.INDEX_FILE], dtype=np.uint8))
    assert type(faiss.downcast_index(index)).__name__ == stored


def test_the_check_compares_int8_codes_with_exact_float32_search() -> None:
    # The recall measured is that of the codes: below 1 on data whose neighbours are close together.
    vectors = _random()
    checked = approximate.build_checked("flat", vectors, None, RecallTarget(min_recall=0.5), quantized=True)
    assert checked.chosen is not None and [t.search_param for t in checked.tries] == [0]
    assert 0.9 < checked.chosen.recall < 1.0
    assert sorted(checked.order.tolist()) == list(range(len(vectors)))


def test_a_segment_short_of_the_target_is_written_float32_and_says_so() -> None:
    # A target of 1.0 cannot be met by int8 codes of uniformly random vectors (near ties everywhere).
    vectors = _random()
    with capture_logs() as logs:
        ref, files = _build(vectors, target=RecallTarget(min_recall=1.0))
    assert (ref.kind, ref.quantization, ref.recall) == ("flat", None, None)
    assert len(files[segments.INDEX_FILE]) > len(vectors) * 384 * 4
    short = [e for e in logs if e["event"] == "segment.recall_short"]
    assert len(short) == 1 and short[0]["log_level"] == "warning" and short[0]["quantization"] == "int8"
    assert short[0]["instead"] == "float32 flat" and short[0]["best"] < 1.0


def test_an_int8_approximate_segment_short_of_the_target_falls_back_to_float32_of_its_kind() -> None:
    # IVF probes at most a quarter of its lists: int8 codes of random vectors cannot reach 0.999 that way,
    # float32 cannot either, so the segment ends flat; both shortfalls are logged.
    with capture_logs() as logs:
        ref, _ = _build(_random(), "ivf", RecallTarget(min_recall=0.999))
    assert (ref.kind, ref.quantization) == ("flat", None)
    short = [(e["quantization"], e["instead"]) for e in logs if e["event"] == "segment.recall_short"]
    assert short == [("int8", "float32 ivf"), ("none", "float32 flat")]


def test_a_single_vector_stays_float32() -> None:
    ref, _ = _build(_random(1))
    assert (ref.kind, ref.quantization, ref.recall) == ("flat", None, None)


def test_a_segment_entry_without_quantization_serializes_as_before() -> None:
    plain = SegmentRef(id="s", vectors=3, files={"index.faiss": "x"})
    assert "quantization" not in plain.model_dump(mode="json")
    int8 = plain.model_copy(update={"quantization": "int8", "recall": 0.98})
    assert int8.model_dump(mode="json")["quantization"] == "int8"
    assert SegmentRef.model_validate_json(int8.model_dump_json()) == int8


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_only_a_quantised_index_may_be_flat_and_checked(kind: CheckedKind) -> None:
    vectors = _clustered(400)
    if kind == "flat":
        with pytest.raises(ValueError, match="quantised"):
            approximate.build_checked(kind, vectors, HNSW, RecallTarget())
    else:
        assert approximate.build_checked(kind, vectors, HNSW, RecallTarget()).tries
