"""The progress file of a resumable ``semaflow ingest``: which batches of which file the gateway accepted.

The first line names the run (the collection, when it was created, the file's SHA-256, how documents are batched
and mapped); each further line is one accepted batch: its index, its job, and its ``Idempotency-Key``. Keys derive
from the run and the batch's index alone, so a run started again sends a batch whose answer it never saw with the
same key and the same bytes, and the gateway answers with the job it already made instead of making a second.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from semaflow.commands.output import UsageError

SUFFIX: Final = ".semaflow-progress"
_VERSION: Final = 1


def run_id(identity: Mapping[str, Any]) -> str:
    """The run's id: a digest of everything that decides which documents go in which batch, and where."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def batch_key(run: str, index: int) -> str:
    """The ``Idempotency-Key`` of batch ``index`` of the run (the same every time the run is started)."""
    return f"ingest-{hashlib.sha256(f'{run}:{index}'.encode()).hexdigest()[:48]}"


@dataclass
class Accepted:
    """One batch the gateway accepted."""

    index: int
    documents: int
    job_id: str
    idempotency_key: str


@dataclass
class Progress:
    """The progress file of one run, loaded and appended to as batches are accepted."""

    path: Path
    run: str
    accepted: dict[int, Accepted] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path, run: str, identity: Mapping[str, Any]) -> Progress:
        """The run's progress so far (none if the file is missing or belongs to another run, which it replaces).

        Raises:
            UsageError: the file cannot be written.
        """
        progress = cls(path, run)
        if path.exists():
            text = path.read_text()
            lines = text.splitlines()
            head = _line(lines[0]) if lines else None
            if head is not None and head.get("run") == run and head.get("version") == _VERSION:
                for line in lines[1:]:
                    item = _line(line)
                    if item is not None:  # a line cut short by a crash is just not there
                        progress.accepted[item["batch"]] = Accepted(
                            item["batch"], item["documents"], item["job_id"], item["idempotency_key"]
                        )
                if not text.endswith("\n"):
                    progress._write("\n", mode="a")  # the next line starts on a line of its own
                return progress
        try:
            progress._write(json.dumps({"version": _VERSION, "run": run, **identity}) + "\n", mode="w")
        except OSError as exc:
            raise UsageError(f"cannot write the progress file {path}: {exc} (choose another with --state)") from exc
        return progress

    def record(self, batch: Accepted) -> None:
        """Note an accepted batch, on disk before this returns (a crash right after it keeps it)."""
        line = {"batch": batch.index, "documents": batch.documents, "job_id": batch.job_id,
                "idempotency_key": batch.idempotency_key}  # fmt: skip
        self._write(json.dumps(line) + "\n", mode="a")
        self.accepted[batch.index] = batch

    def done(self) -> None:
        """The run finished: its progress file goes."""
        self.path.unlink(missing_ok=True)

    def _write(self, text: str, mode: str) -> None:
        with self.path.open(mode) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def _line(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
