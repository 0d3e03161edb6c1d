"""SEMAFLOW_EMBEDDER_BACKEND and SEMAFLOW_MODEL_CACHE_DIR as the embedder reads them; the cosine that decides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from shared.config import Settings
from shared.index.backend_choice import PROBE_TEXTS, min_cosine


def test_the_backend_is_auto_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEMAFLOW_EMBEDDER_BACKEND", raising=False)
    assert Settings().embedder_backend == "auto"
    for value in ("torch", "openvino", "auto"):
        monkeypatch.setenv("SEMAFLOW_EMBEDDER_BACKEND", value)
        assert Settings().embedder_backend == value


@pytest.mark.parametrize("value", ["onnx", "OpenVINO-int8", "bf16", ""])
def test_an_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SEMAFLOW_EMBEDDER_BACKEND", value)
    with pytest.raises(ValidationError, match="embedder_backend"):
        Settings()


def test_converted_models_live_under_the_data_dir_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEMAFLOW_MODEL_CACHE_DIR", raising=False)
    assert Settings(data_dir=Path("/srv/semaflow")).model_cache == Path("/srv/semaflow/models")
    monkeypatch.setenv("SEMAFLOW_MODEL_CACHE_DIR", "/var/cache/semaflow")
    assert Settings(data_dir=Path("/srv/semaflow")).model_cache == Path("/var/cache/semaflow")


def test_min_cosine_is_the_worst_row() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    b = np.array([[2.0, 0.0], [0.0, 1.0], [0.8, 0.6]], dtype=np.float32)  # length does not count, direction does
    assert min_cosine(a, b) == pytest.approx(0.96)
    assert min_cosine(a, a) == pytest.approx(1.0)
    assert min_cosine(a, -a) == pytest.approx(-1.0)
    assert min_cosine(a, b[:2]) == -1.0  # a missing row never agrees


def test_the_probe_texts_are_fixed_and_of_growing_length() -> None:
    lengths = [len(t) for t in PROBE_TEXTS]
    assert len(PROBE_TEXTS) == 8 and lengths == sorted(lengths) and lengths[0] < 120 < 1300 < lengths[-1]
