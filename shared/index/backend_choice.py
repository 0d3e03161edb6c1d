"""Choosing the embedding backend at start-up: agreement with torch first, then a short timing, alternating."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

EncodeFn = Callable[[list[str]], np.ndarray[Any, np.dtype[np.float32]]]

# A candidate's vectors must match torch's this closely on every probe text (float rounding gives
# > 0.999999; a wrong precision, pooling or truncation gives far less).
MIN_AGREEMENT: Final = 0.9999
# Timed rounds per backend, alternating, after one untimed round each (warm-up and agreement).
ROUNDS: Final = 2

_SENTENCES: Final = (
    "Vitamin D deficiency is associated with an increased risk of respiratory infections in adults.",
    "The gateway accepts a batch of documents and answers with the identifier of the job that indexes it.",
    "Mitochondrial dysfunction contributes to the progression of neurodegenerative disease.",
    "A search returns the ten nearest documents to the query's vector, with their scores.",
    "Tumour growth was reduced by forty percent in mice treated with the inhibitor for six weeks.",
    "Retries back off exponentially, so a dependency that is briefly down is not flooded with requests.",
    "Sleep deprivation impairs glucose tolerance in healthy young men after only one week.",
    "Snapshots of the index are written to the object store and swapped in without downtime.",
)


def _probe_texts() -> list[str]:
    """Eight fixed texts of 1 to 15 sentences (17 to over 256 tokens, the model's limit: the longest is truncated)."""
    return [" ".join(_SENTENCES[(k + j) % len(_SENTENCES)] for j in range(1 + 2 * k)) for k in range(8)]


PROBE_TEXTS: Final = tuple(_probe_texts())


def min_cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    """The smallest cosine similarity between rows of ``a`` and the same rows of ``b``."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    if a64.shape != b64.shape:
        return -1.0
    dots = (a64 * b64).sum(axis=1)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return float(np.min(dots / np.maximum(norms, 1e-30))) if len(dots) else 1.0


@dataclass(frozen=True)
class Choice:
    """The backend chosen, why, and the figures that decided it (seconds per probe round: best round, wall and CPU)."""

    backend: str
    reason: str
    min_cosine: float | None = None
    torch_s: float | None = None
    candidate_s: float | None = None
    torch_cpu_s: float | None = None
    candidate_cpu_s: float | None = None

    def figures(self) -> dict[str, Any]:
        """The reason and figures as log fields (all but the backend's name)."""
        fields = {k: v for k, v in self.__dict__.items() if v is not None and k != "backend"}
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in fields.items()}


def _timed(fn: EncodeFn, texts: list[str]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(texts)
    return time.perf_counter() - wall, time.process_time() - cpu


def choose(
    name: str,
    candidate: EncodeFn,
    reference: EncodeFn,
    *,
    texts: Sequence[str] = PROBE_TEXTS,
    rounds: int = ROUNDS,
    min_agreement: float = MIN_AGREEMENT,
) -> Choice:
    """``name`` (the candidate) when its vectors agree with ``reference`` (torch's) and it is faster; else torch.

    Timing alternates reference and candidate for ``rounds`` rounds after one untimed call each, and
    compares the process CPU time of the best round of each: both backends run on every core, so on an
    idle machine their wall times are in the ratio of their CPU times, and CPU time is what other work
    on a shared machine does not disturb (wall times are reported beside it).
    """
    probe = list(texts)
    cos = min_cosine(candidate(probe), reference(probe))
    if cos < min_agreement:
        return Choice("torch", f"{name} disagrees with torch (min cosine {cos:.6f} < {min_agreement})", cos)
    ref_runs, cand_runs = [], []
    for _ in range(rounds):
        ref_runs.append(_timed(reference, probe))
        cand_runs.append(_timed(candidate, probe))
    ref_s, cand_s = min(w for w, _ in ref_runs), min(w for w, _ in cand_runs)
    ref_cpu, cand_cpu = min(c for _, c in ref_runs), min(c for _, c in cand_runs)
    figures = {"torch_s": ref_s, "candidate_s": cand_s, "torch_cpu_s": ref_cpu, "candidate_cpu_s": cand_cpu}
    if cand_cpu < ref_cpu:
        return Choice(name, f"{name} faster ({ref_cpu / cand_cpu:.2f}x torch in CPU time)", cos, **figures)
    return Choice("torch", f"torch faster ({cand_cpu / max(ref_cpu, 1e-9):.2f}x {name} in CPU time)", cos, **figures)
