"""A merge's sources read in chunks: the rows of the stacked array, from mapped files whose pages are given back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.index import segments
from shared.index.approximate import HnswParams, RecallTarget
from shared.index.columns import Rows
from shared.index.documents import normalize
from shared.index.layout import CollectionRef
from shared.index.manifests import SegmentKind, SegmentRef
from shared.index.segcache import SegmentCache
from shared.index.sources import Source, Stacked, mapped_regions
from shared.index.storage import LocalStore

REF = CollectionRef("t", "c", "col1")
HNSW = HnswParams(16, 40, 128)


def _vectors(n: int, seed: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, 384))
    return normalize(centres[rng.integers(0, 8, size=n)] + rng.normal(scale=0.8, size=(n, 384)))


def _stored(store: LocalStore, segment_id: str, vectors: np.ndarray[Any, Any], kind: SegmentKind) -> SegmentRef:
    ids = [f"{segment_id}-{i}" for i in range(len(vectors))]
    ref, files = segments.build(
        segment_id, vectors, ids, [{"n": i} for i in range(len(ids))], kind=kind, hnsw=HNSW, target=RecallTarget(0.5)
    )
    segments.upload(store, REF, ref, files)
    return ref


def _rows_by_id(store: LocalStore, seg: SegmentRef) -> dict[str, np.ndarray[Any, Any]]:
    loaded = segments.load(store, REF, seg, ivf_vectors=True)
    return {doc: np.array(loaded.vectors[row]) for row, doc in enumerate(loaded.ids)}


@pytest.fixture
def sources(tmp_path: Path) -> tuple[Stacked, np.ndarray[Any, Any]]:
    """Three segments (flat, IVF, HNSW) opened mapped, keeping some rows each; and those rows stacked in memory."""
    store = LocalStore(tmp_path / "objects")
    cache = SegmentCache(store, tmp_path / "cache")
    made, expected = [], []
    for number, kind in enumerate(("flat", "ivf", "hnsw")):
        seg = _stored(store, f"s{number}", _vectors(600, seed=number), kind)  # type: ignore[arg-type]
        opened = segments.open_cached(cache, REF, seg)
        keep = np.arange(number, len(opened.ids), 3, dtype=np.int64)  # every third row
        made.append(Source.of(opened, keep, mapped_regions(cache.path(REF, seg, segments.INDEX_FILE))))
        by_id = _rows_by_id(store, seg)
        expected.append(np.stack([by_id[opened.ids[int(row)]] for row in keep]))
    return Stacked(made, 384), np.concatenate(expected)


def test_rows_read_in_any_order_are_the_rows_of_the_stacked_array(
    sources: tuple[Stacked, np.ndarray[Any, Any]],
) -> None:
    stacked, expected = sources
    assert stacked.shape == expected.shape and len(stacked) == len(expected)
    everything = stacked[np.arange(len(stacked))]
    assert everything.dtype == np.float32 and np.array_equal(everything, expected)
    shuffled = np.random.default_rng(5).permutation(len(stacked))[:250]
    assert np.array_equal(stacked[shuffled], expected[shuffled])
    assert stacked[np.zeros(0, dtype=np.int64)].shape == (0, 384)


def test_a_read_gives_back_the_pages_of_the_mapped_files(sources: tuple[Stacked, np.ndarray[Any, Any]]) -> None:
    # Given the sources' index files mapped read-only (FAISS maps them shared), none of their pages
    # resident once opened (an IVF segment's direct map read its lists' ids),
    stacked, _ = sources
    regions = [region for source in stacked.sources for region in source.regions]
    assert len(regions) == 3
    assert _resident_kib(regions) == 0
    # When every row is read,
    stacked[np.arange(len(stacked))]
    # Then none of their pages is left in the process's resident set.
    assert _resident_kib(regions) == 0


def test_a_merged_segment_written_from_its_sources_is_the_one_built_in_memory(
    sources: tuple[Stacked, np.ndarray[Any, Any]], tmp_path: Path
) -> None:
    stacked, expected = sources
    ids = [f"d{i}" for i in range(len(expected))]
    metadata: list[dict[str, Any]] = [{"i": i} for i in range(len(ids))]
    metadata[3] = {"name": "Zoë ✓", "tags": ["α", 1.5, None]}  # non-ASCII: the sidecar escapes it, the table not
    texts = [f"text {i}" if i % 5 else None for i in range(len(ids))]
    for kind in ("flat", "ivf"):
        folder = tmp_path / kind
        folder.mkdir()
        options: dict[str, Any] = {"kind": kind, "hnsw": HNSW, "target": RecallTarget(0.8)}

        written, paths = segments.write(folder, "m", stacked, Rows.of(ids, metadata, texts), **options)
        built, files = segments.build("m", expected, ids, metadata, texts=texts, **options)

        assert written == built and written.kind == kind
        assert {name: path.read_bytes() for name, path in paths.items()} == files


def _resident_kib(regions: list[tuple[int, int]]) -> int:
    """Resident kB of the mappings starting at the regions' addresses (``/proc/self/smaps``)."""
    starts = {start for start, _ in regions}
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=1)[0]
        if "-" in head and not head.endswith(":"):
            inside = int(head.split("-")[0], 16) in starts
        elif inside and head == "Rss:":
            total += int(line.split()[1])
    return total
