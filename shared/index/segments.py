"""Segment files: a FAISS index, a sidecar of ids and metadata, and the rows' texts; verified by SHA-256.

The texts file (:mod:`shared.index.texts`) is not part of what :func:`load` reads: a gateway fetches it
into its local cache when a text is first asked for, and reads each text from it by offset. Segments
written before texts were kept have none (their manifest entry lists no such file).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import structlog

from shared.errors import CorruptObject
from shared.index import approximate, doctable
from shared.index import texts as textfile
from shared.index.approximate import Calibration, HnswParams, RecallTarget, Vectors
from shared.index.columns import PIECE_BYTES, Column, Rows
from shared.index.manifests import Quantization, SegmentKind, SegmentRef, sha256, sha256_file

if TYPE_CHECKING:
    import faiss

    from shared.index.layout import CollectionRef
    from shared.index.segcache import SegmentCache
    from shared.index.storage import ObjectStore

INDEX_FILE: Final = "index.faiss"
DOCS_FILE: Final = "docs.jsonl.gz"
TEXTS_FILE: Final = "texts.bin"
# The sidecar's rows as a document table (:mod:`shared.index.doctable`), read in place. Segments written
# before it existed lack it: a gateway makes it in its segment cache from the sidecar, once per host.
DOCS_TABLE_FILE: Final = "docs.table"
# An int8 segment's rows as they were given to it, float32 little-endian, row after row in the index's order,
# no header. Merges read them, so a row is quantised once, from the vector sent, however many merges it goes
# through (decoded codes re-quantised on each merge's own ranges drift further at every level). Gateways never
# fetch it: they search the codes.
ORIGINALS_FILE: Final = "vectors.f32"
# Rows of originals written at once.
_ORIGINALS_CHUNK: Final = 16_384

log = structlog.get_logger(__name__)

__all__ = [
    "DOCS_FILE",
    "INDEX_FILE",
    "ORIGINALS_FILE",
    "TEXTS_FILE",
    "HnswParams",
    "LoadedSegment",
    "RecallTarget",
    "build",
    "load",
    "open_originals",
    "read_text_entries",
    "read_texts",
    "open_cached",
    "upload",
    "upload_files",
    "write",
]


def _flat(vectors: Vectors) -> faiss.Index:
    """A flat index over ``vectors``: its rows allocated once at their final size, then filled chunk by chunk
    (adding chunks would grow them by doubling, two buffers alive at the last step)."""
    import faiss

    n, dim = vectors.shape
    index = faiss.IndexFlatIP(dim)
    index.codes.resize(n * index.code_size)
    index.ntotal = n
    rows = faiss.rev_swig_ptr(index.get_xb(), n * dim).reshape(n, dim) if n else np.zeros((0, dim), np.float32)
    for start in range(0, n, approximate.ADD_CHUNK):
        stop = min(n, start + approximate.ADD_CHUNK)
        rows[start:stop] = vectors[np.arange(start, stop)]
    return index


def _checked(
    segment_id: str,
    vectors: Vectors,
    kind: approximate.CheckedKind,
    hnsw: HnswParams | None,
    target: RecallTarget,
    *,
    quantized: bool,
) -> tuple[faiss.Index, Calibration, np.ndarray[Any, Any]] | None:
    """An index whose recall was measured against exact search, its calibration and its rows' order; None when
    no search parameter reached ``target`` (logged as a warning)."""
    checked = approximate.build_checked(kind, vectors, hnsw, target, quantized=quantized)
    chosen = checked.chosen
    quantization = "int8" if quantized else "none"
    log.info(
        "segment.checked",
        segment=segment_id,
        kind=kind,
        quantization=quantization,
        vectors=len(vectors),
        tries=[(t.search_param, t.recall) for t in checked.tries],
        chosen=chosen.search_param if chosen else None,
        min_recall=target.min_recall,
    )
    if chosen is None:
        best = max((t.recall for t in checked.tries), default=None)
        log.warning(
            "segment.recall_short",
            segment=segment_id,
            kind=kind,
            quantization=quantization,
            best=best,
            min_recall=target.min_recall,
            instead="float32 " + (kind if quantized and kind != "flat" else "flat"),
        )
        return None
    # Stored in the index too, so a reader that ignores the manifest's value still searches with it.
    index: Any = checked.index
    if kind == "hnsw":
        index.hnsw.efSearch = chosen.search_param
    elif kind == "ivf":
        index.nprobe = chosen.search_param
    return index, chosen, checked.order


def _index(
    segment_id: str,
    vectors: Vectors,
    kind: SegmentKind,
    hnsw: HnswParams | None,
    target: RecallTarget | None,
    quantization: Quantization,
) -> tuple[faiss.Index, SegmentKind, Calibration | None, np.ndarray[Any, Any] | None, bool]:
    """A segment's index, the kind it was built as, its calibration, its rows' order (None: as given) and
    whether it holds int8 codes.

    An int8 index is tried first when asked for; one that falls short of ``target`` is built as if
    unquantised: the approximate kind checked again, or flat (exact)."""
    import faiss

    if kind != "flat" and len(vectors) and hnsw is None:
        raise ValueError("an approximate segment needs HnswParams")
    target = target or RecallTarget()
    built = None
    # A recall needs one held-out query and one row to find: a single vector is kept as float32.
    quantized = quantization == "int8" and len(vectors) >= 2
    if quantized:
        built = _checked(segment_id, vectors, kind, hnsw, target, quantized=True)
        quantized = built is not None
    if built is None and kind != "flat" and len(vectors):
        built = _checked(segment_id, vectors, kind, hnsw, target, quantized=False)
    if built is None:
        index = _flat(vectors) if len(vectors) else faiss.IndexFlatIP(vectors.shape[1])
        return index, "flat", None, None, False
    index, calibration, order = built
    return index, kind, calibration, order, quantized


def _entry(
    segment_id: str,
    kind: SegmentKind,
    vectors: int,
    digests: dict[str, str],
    calibration: Calibration | None,
    quantized: bool,
) -> SegmentRef:
    return SegmentRef(
        id=segment_id,
        kind=kind,
        vectors=vectors,
        files=digests,
        search_param=calibration.search_param if calibration and kind != "flat" else None,
        recall=calibration.recall if calibration else None,
        quantization="int8" if quantized else None,
    )


def _sidecar_lines(rows: Rows) -> Iterator[bytes]:
    """The sidecar's lines, newline-separated, in pieces: each row's ``{"id":...,"metadata":...}``, compact JSON
    with non-ASCII escaped."""
    metadata = rows.metadata
    piece = bytearray()
    for r in range(len(rows)):
        if r:
            piece += b"\n"
        meta = metadata[r]
        if not meta.isascii():  # the table keeps non-ASCII as UTF-8; the sidecar escapes it
            meta = json.dumps(json.loads(meta), separators=(",", ":")).encode()
        piece += b'{"id":%s,"metadata":%s}' % (json.dumps(rows.id(r)).encode(), meta)
        if len(piece) >= PIECE_BYTES:
            yield bytes(piece)
            piece.clear()
    if piece:
        yield bytes(piece)


def _gzip(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """``gzip.compress(b"".join(pieces), 1, mtime=0)``, byte for byte, in pieces."""
    deflate = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: a gzip header and trailer, mtime 0
    for piece in pieces:
        if out := deflate.compress(piece):
            yield out
    yield deflate.flush()


def _laid_out(
    segment_id: str,
    vectors: Vectors,
    rows: Rows,
    kind: SegmentKind,
    hnsw: HnswParams | None,
    target: RecallTarget | None,
    quantization: Quantization,
) -> tuple[faiss.Index, SegmentRef, dict[str, Iterable[bytes]]]:
    """What :func:`build` and :func:`write` share: the index, the manifest entry without digests, and every
    file but the index (the sidecar, the document table and the texts) as pieces, its rows in the index's
    order."""
    if len(rows) != len(vectors):
        raise ValueError("ids, vectors, metadata and texts differ in length")
    index, kind, calibration, order, quantized = _index(segment_id, vectors, kind, hnsw, target, quantization)
    if order is not None:
        rows = rows.taken(order)
    files: dict[str, Iterable[bytes]] = {
        DOCS_FILE: _gzip(_sidecar_lines(rows)),
        DOCS_TABLE_FILE: doctable.pieces(rows.ids, rows.metadata),
    }
    if rows.texts is not None:
        files[TEXTS_FILE] = textfile.pieces(rows.texts)
    if quantized:
        files[ORIGINALS_FILE] = _originals(vectors, order)
    return index, _entry(segment_id, kind, len(rows), {}, calibration, quantized), files


def _originals(vectors: Vectors, order: np.ndarray[Any, Any] | None) -> Iterator[bytes]:
    """The originals file of ``vectors`` (rows in ``order``, or as they are), in pieces of a chunk of rows."""
    rows = np.arange(len(vectors)) if order is None else np.asarray(order, dtype=np.int64)
    for start in range(0, len(rows), _ORIGINALS_CHUNK):
        yield np.ascontiguousarray(vectors[rows[start : start + _ORIGINALS_CHUNK]], dtype="<f4").tobytes()


def open_originals(
    cache: SegmentCache, ref: CollectionRef, segment: SegmentRef, dim: int
) -> tuple[np.ndarray[Any, np.dtype[np.float32]], Path] | None:
    """An int8 segment's originals (see :data:`ORIGINALS_FILE`), memory-mapped from ``cache``, and the file's path;
    None for a segment without them (float32, or int8 written before they were kept: its rows are decoded).

    Raises:
        CorruptObject: the file fails its SHA-256 check or its size is not the segment's rows.
    """
    if ORIGINALS_FILE not in segment.files:
        return None
    path = cache.path(ref, segment, ORIGINALS_FILE)
    if path.stat().st_size != segment.vectors * dim * 4:
        raise CorruptObject(f"segment {segment.id}/{ORIGINALS_FILE} is not {segment.vectors} rows of {dim}")
    if not segment.vectors:
        return np.zeros((0, dim), dtype=np.float32), path
    return np.memmap(path, dtype="<f4", mode="r", shape=(segment.vectors, dim)), path


def build(
    segment_id: str,
    vectors: np.ndarray[Any, Any],
    ids: list[str],
    metadata: list[dict[str, Any]],
    *,
    texts: Sequence[str | None] | None = None,
    kind: SegmentKind = "flat",
    hnsw: HnswParams | None = None,
    target: RecallTarget | None = None,
    quantization: Quantization = "none",
) -> tuple[SegmentRef, dict[str, bytes]]:
    """Build an inner-product segment; returns its manifest entry and files.

    ``flat`` is exact; ``hnsw`` and ``ivf`` are approximate: the index is checked against exact
    search over the segment's own vectors (:func:`shared.index.approximate.build_checked`) and stored
    with the search parameter that reaches ``target`` -- or built flat when none does. (A checked
    segment's rows may come in another order than ``ids``: the sidecar and the texts follow the index.)
    ``quantization`` ``int8`` stores 8-bit codes instead of float32 rows, checked the same way against
    exact float32 search (a flat one too); when it falls short of ``target`` the segment is built as if
    unquantised (a warning says so). ``texts`` (one per row, None for a row without) adds a texts file;
    without it the segment has none. :func:`write` builds the same files on disk, for segments too
    large to hold twice.
    """
    import faiss

    rows = Rows.of(ids, metadata, texts)
    index, entry, others = _laid_out(segment_id, vectors, rows, kind, hnsw, target, quantization)
    files = {INDEX_FILE: faiss.serialize_index(index).tobytes()}
    del index
    files.update({name: b"".join(pieces) for name, pieces in others.items()})
    return entry.model_copy(update={"files": {n: sha256(b) for n, b in files.items()}}), files


def write(
    folder: Path,
    segment_id: str,
    vectors: Vectors,
    rows: Rows,
    *,
    kind: SegmentKind = "flat",
    hnsw: HnswParams | None = None,
    target: RecallTarget | None = None,
    quantization: Quantization = "none",
) -> tuple[SegmentRef, dict[str, Path]]:
    """Build the segment :func:`build` builds, its files written under ``folder`` (what merges do).

    ``vectors`` may be a merge's sources read in chunks (:class:`shared.index.sources.Stacked`), and
    ``rows`` their rows' ids, metadata and texts as columns copied from the sources' files: the index is
    the only full copy of the rows in memory, it is written to its file by FAISS, not serialized into
    bytes first, and the other files are written piece by piece. The files' bytes and digests are those
    :func:`build` returns for the same rows.
    """
    import faiss

    index, entry, others = _laid_out(segment_id, vectors, rows, kind, hnsw, target, quantization)
    paths = {INDEX_FILE: folder / INDEX_FILE}
    faiss.write_index(index, str(paths[INDEX_FILE]))
    del index
    for name, pieces in others.items():
        paths[name] = folder / name
        with paths[name].open("wb") as fh:
            for piece in pieces:
                fh.write(piece)
    return entry.model_copy(update={"files": {n: sha256_file(p) for n, p in paths.items()}}), paths


def upload(store: ObjectStore, ref: CollectionRef, segment: SegmentRef, files: dict[str, bytes]) -> None:
    """Write a segment's files (idempotent: the same segment always has the same bytes)."""
    for name, data in files.items():
        store.put(ref.segment_key(segment.id, name), data)


def upload_files(store: ObjectStore, ref: CollectionRef, segment: SegmentRef, files: dict[str, Path]) -> None:
    """Write a segment's files from disk, each streamed (idempotent, like :func:`upload`)."""
    for name, path in files.items():
        store.put_file(ref.segment_key(segment.id, name), path)


@dataclass(eq=False)
class LoadedSegment:
    """A segment ready to search: its vectors (one row per document) and its rows' ids and metadata.

    ``vectors`` is a view of the rows of ``owner``, the segment's FAISS index (memory-mapped when
    opened from the segment cache); ``owner`` keeps them alive as long as the view is. An IVF
    segment's, and a ``quantized`` (int8) segment's, are empty unless loaded with ``ivf_vectors`` (see
    :func:`load`); :meth:`vector` reads one row of any kind. ``texts_sha256`` is the SHA-256 of the
    segment's texts file (None: it has none).

    ``ids`` and ``metadata`` are lists when the segment was read into memory, or columns of its
    memory-mapped document table (:mod:`shared.index.doctable`) when opened from the segment cache:
    then nothing is parsed until a row is read, and every row's metadata only when a filter scans it.
    """

    id: str
    vectors: np.ndarray[Any, np.dtype[np.float32]]
    ids: Sequence[str]
    metadata: Sequence[dict[str, Any]]
    owner: object = None
    kind: SegmentKind = "flat"
    nbytes: int = 0  # size of the serialized index (mapped or in memory), near enough
    search_param: int | None = None  # approximate segments: the efSearch / nprobe its manifest entry chose
    texts_sha256: str | None = None
    quantized: bool = False  # int8 codes (searched through ``owner``; rows read back dequantised)
    # Lists only: document id -> row and the rows in id order, each computed on first use.
    _rows: dict[str, int] | None = None
    _id_order: list[np.ndarray[Any, np.dtype[np.int64]]] = field(default_factory=list)

    def vector(self, row: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Row ``row``'s vector as stored (unit length, float32), whatever the kind of segment.

        A quantised segment's is decoded from its int8 code: near the vector sent, not equal to it.
        """
        if len(self.vectors):
            return np.array(self.vectors[row], dtype=np.float32)
        import faiss

        # An IVF index (with a direct map, see ``load``) or a quantised one: both decode a row by number.
        index: Any = faiss.downcast_index(self.owner)  # type: ignore[arg-type]
        return np.asarray(index.reconstruct(row), dtype=np.float32)

    def row_of(self, doc_id: str) -> int | None:
        """The row holding ``doc_id`` (None: none does): a binary search of a document table, else a dict lookup."""
        if isinstance(self.ids, doctable.IdColumn):
            return self.ids.table.row_of(doc_id)
        if self._rows is None:
            self._rows = {d: row for row, d in enumerate(self.ids)}
        return self._rows.get(doc_id)

    def id_order(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Row numbers sorted by document id: stored in a document table, else computed once (O(n log n))."""
        if isinstance(self.ids, doctable.IdColumn):
            return self.ids.table.order()
        if not self._id_order:
            ids = self.ids
            self._id_order.append(np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64))
        return self._id_order[0]

    @property
    def approximate(self) -> bool:
        """Whether ``owner`` is an approximate index (HNSW or IVF), searched with its ``search_param``."""
        return self.kind != "flat"


def _fetch(store: ObjectStore, ref: CollectionRef, segment: SegmentRef, name: str) -> bytes:
    data = store.get(ref.segment_key(segment.id, name))
    if sha256(data) != segment.files.get(name):
        raise CorruptObject(f"segment {segment.id}/{name} fails its SHA-256 check")
    return data


def _rows(segment: SegmentRef, blob: bytes) -> list[dict[str, Any]]:
    try:
        # One parse for the whole sidecar: ~5x faster than a json.loads per line.
        lines = [line for line in gzip.decompress(blob).split(b"\n") if line]
        rows: list[dict[str, Any]] = json.loads(b"[" + b",".join(lines) + b"]")
    except (OSError, ValueError) as exc:
        raise CorruptObject(f"segment {segment.id} cannot be opened: {exc}") from exc
    return rows


def read_ids(store: ObjectStore, ref: CollectionRef, segment: SegmentRef) -> list[str]:
    """The document id of each row of a segment, from its verified document table or sidecar (no index loaded).

    Raises:
        CorruptObject: the file fails its SHA-256 check or does not parse.
        ObjectNotFound: it is missing.
    """
    if DOCS_TABLE_FILE in segment.files:
        return list(doctable.IdColumn(doctable.DocTable(_fetch(store, ref, segment, DOCS_TABLE_FILE))))
    return [r["id"] for r in _rows(segment, _fetch(store, ref, segment, DOCS_FILE))]


def _read_docs(store: ObjectStore, ref: CollectionRef, segment: SegmentRef) -> tuple[list[str], list[dict[str, Any]]]:
    """A segment's ids and metadata, from its document table where it has one (no per-row parse), else its sidecar."""
    if DOCS_TABLE_FILE in segment.files:
        table = doctable.DocTable(_fetch(store, ref, segment, DOCS_TABLE_FILE))
        return list(doctable.IdColumn(table)), table.all_metadata()
    rows = _rows(segment, _fetch(store, ref, segment, DOCS_FILE))
    return [r["id"] for r in rows], [r["metadata"] for r in rows]


def read_texts(store: ObjectStore, ref: CollectionRef, segment: SegmentRef) -> list[str | None]:
    """Every row's text, from the verified texts file (all None for a segment written without one).

    Raises:
        CorruptObject: the file fails its SHA-256 check or does not parse.
        ObjectNotFound: it is missing.
    """
    return textfile.texts_of(read_text_entries(store, ref, segment))


def read_text_entries(store: ObjectStore, ref: CollectionRef, segment: SegmentRef) -> Column:
    """Every row's entry of the verified texts file, undecoded (what a merge copies); all empty (no text) for a
    segment written without one.

    Raises:
        CorruptObject: the file fails its SHA-256 check or is not well-formed.
        ObjectNotFound: it is missing.
    """
    if TEXTS_FILE not in segment.files:
        return Column.empty(segment.vectors)
    found = textfile.entries(_fetch(store, ref, segment, TEXTS_FILE))
    if len(found) != segment.vectors:
        raise CorruptObject(f"segment {segment.id} has {segment.vectors} vectors and {len(found)} texts")
    return found


def load(store: ObjectStore, ref: CollectionRef, segment: SegmentRef, *, ivf_vectors: bool = False) -> LoadedSegment:
    """Fetch, verify and open a segment in memory (what the indexer's merges read).

    An IVF segment keeps its rows in its inverted lists, not in one array: its ``vectors`` are an
    empty ``(0, dim)`` array unless ``ivf_vectors`` asks for a copy (what a merge reads); it gets a
    direct map (8 bytes a row) so one row can be read. So does a quantised segment, whose copy is its
    rows decoded to float32. The texts file is not fetched (see
    :func:`read_texts` and the gateway's text cache).

    Raises:
        CorruptObject: a file's SHA-256 differs from the manifest's, or it fails to parse.
        ObjectNotFound: a file is missing.
    """
    import faiss

    if INDEX_FILE not in segment.files or DOCS_FILE not in segment.files:
        raise CorruptObject(f"segment {segment.id} lacks {INDEX_FILE} or {DOCS_FILE}")
    blob = _fetch(store, ref, segment, INDEX_FILE)
    ids, metadata = _read_docs(store, ref, segment)
    try:
        owner = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
    except RuntimeError as exc:
        raise CorruptObject(f"segment {segment.id} cannot be opened: {exc}") from exc
    return _opened(segment, owner, ids, metadata, len(blob), ivf_vectors=ivf_vectors)


def open_cached(cache: SegmentCache, ref: CollectionRef, segment: SegmentRef) -> LoadedSegment:
    """Open a segment from the local segment cache, its index memory-mapped: no copy of its rows.

    Each file is downloaded and verified once (:class:`shared.index.segcache.SegmentCache`); the
    index is then mapped with FAISS's ``IO_FLAG_MMAP_IFC``, so a flat segment's rows, an IVF
    segment's inverted lists and an HNSW graph's rows stay in the page cache, shared by every
    process on the host that maps the same file. A cached file that no longer opens (damaged since
    it was verified) is discarded and downloaded again, once. The ids and metadata are read from the
    segment's document table, made from the sidecar the first time the host opens the segment and
    mapped after that: a restart parses nothing.

    Raises:
        CorruptObject: a file fails its SHA-256 check or does not open even freshly downloaded.
        ObjectNotFound: a file is missing from the store.
    """
    try:
        return _open_mapped(cache, ref, segment)
    except CorruptObject as exc:
        log.warning("segment.cache_damaged", segment=segment.id, error=str(exc))
        cache.discard(ref, segment.id)
        return _open_mapped(cache, ref, segment)


def _open_mapped(cache: SegmentCache, ref: CollectionRef, segment: SegmentRef) -> LoadedSegment:
    import faiss

    if INDEX_FILE not in segment.files or DOCS_FILE not in segment.files:
        raise CorruptObject(f"segment {segment.id} lacks {INDEX_FILE} or {DOCS_FILE}")
    index_path = cache.path(ref, segment, INDEX_FILE)
    if DOCS_TABLE_FILE in segment.files:
        table_path = cache.path(ref, segment, DOCS_TABLE_FILE)
    else:
        table_path = cache.derived(ref, segment, DOCS_FILE, DOCS_TABLE_FILE, _table_of(segment))
    table = doctable.DocTable.open(table_path)
    try:
        owner = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as exc:
        raise CorruptObject(f"segment {segment.id} cannot be opened: {exc}") from exc
    ids, metadata = doctable.IdColumn(table), doctable.MetaColumn(table)
    return _opened(segment, owner, ids, metadata, index_path.stat().st_size, ivf_vectors=False)


def _table_of(segment: SegmentRef) -> Callable[[Path], bytes]:
    """What makes a segment's document table from its verified sidecar (parsed once per host)."""

    def make(sidecar: Path) -> bytes:
        rows = _rows(segment, sidecar.read_bytes())
        return doctable.encode([r["id"] for r in rows], [r["metadata"] for r in rows])

    return make


# The FAISS index class each segment kind is stored as, float32 or int8.
_FLOAT32: Final = {"flat": "IndexFlatIP", "hnsw": "IndexHNSWFlat", "ivf": "IndexIVFFlat"}
_QUANTIZED: Final = {"flat": "IndexScalarQuantizer", "hnsw": "IndexHNSWSQ", "ivf": "IndexIVFScalarQuantizer"}


def _opened(
    segment: SegmentRef,
    owner: faiss.Index,
    ids: Sequence[str],
    metadata: Sequence[dict[str, Any]],
    nbytes: int,
    *,
    ivf_vectors: bool,
) -> LoadedSegment:
    """A :class:`LoadedSegment` over an opened index, checked against its manifest entry and sidecar."""
    import faiss

    if owner.ntotal != len(ids) or owner.ntotal != segment.vectors:
        raise CorruptObject(f"segment {segment.id} has {owner.ntotal} vectors and {len(ids)} rows")
    index: Any = faiss.downcast_index(owner)  # a typed proxy; ``owner`` still owns the C++ object
    quantized = segment.quantization == "int8"
    expected = (_QUANTIZED if quantized else _FLOAT32)[segment.kind]
    if type(index).__name__ != expected:
        raise CorruptObject(f"segment {segment.id} is not the {expected} its manifest says")
    if segment.kind == "hnsw":
        index = faiss.downcast_index(index.storage)  # the graph's own rows (flat, or int8 codes)
    elif segment.kind == "ivf":
        index.make_direct_map()  # rows by id: what reconstruction reads
    if not index.ntotal or ((segment.kind == "ivf" or quantized) and not ivf_vectors):
        vectors = np.zeros((0, index.d), dtype=np.float32)
    elif isinstance(index, faiss.IndexFlat):  # a view of the index's own rows: no copy
        vectors = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    else:
        vectors = index.reconstruct_n(0, index.ntotal)
    return LoadedSegment(
        segment.id,
        vectors,
        ids,
        metadata,
        owner,
        kind=segment.kind,
        nbytes=nbytes,
        search_param=segment.search_param,
        texts_sha256=segment.files.get(TEXTS_FILE),
        quantized=quantized,
    )
