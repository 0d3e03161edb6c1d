"""``semaflow ingest FILE --collection C``: send a file's documents in batches, resumably, with live progress."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from semaflow.client import Client
from semaflow.client.base import batches
from semaflow.commands import connection, output, resume, sources
from semaflow.commands.output import UsageError
from shared.records.jobs import FINISHED, Job, JobState

# How often the progress line is redrawn and the jobs' progress read (seconds).
_REFRESH_S = 0.5


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ingest`` to the ``semaflow`` command."""
    p = sub.add_parser(
        "ingest",
        help="send a file's documents (.jsonl .json .csv .parquet, optionally .gz), resumably",
        description="Send every record of FILE as a document. Accepted batches are noted in a progress file, so "
        "running the same command again after an interruption sends only what was not accepted.",
    )
    p.add_argument("file", type=Path)
    p.add_argument("--collection", "-c", required=True, help="collection to ingest into (created if missing)")
    p.add_argument("--format", choices=sources.FORMATS, default=None, help="the file's format (default: its suffix)")
    p.add_argument("--id-field", default="id", help="field holding the document id (default id)")
    p.add_argument("--text-field", default="text", help="field holding the text (default text)")
    p.add_argument("--metadata-fields", default=None, help="comma-separated metadata fields (default: every other)")
    p.add_argument("--batch-size", type=int, default=500, help="documents per request, 1-1000 (default 500)")
    p.add_argument("--priority", choices=["critical", "high", "normal", "low", "bulk"], default=None)
    p.add_argument("--state", type=Path, default=None, help="progress file (default FILE.semaflow-progress)")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                   help="wait until every document is indexed (default) or return once all are accepted")  # fmt: skip
    p.add_argument("--wait-timeout", type=float, default=None, help="give up waiting after this many seconds")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="draw the progress line (default: when stderr is a terminal)")  # fmt: skip
    connection.add_arguments(p)


@dataclass
class _Tally:
    """What the progress line shows; the sender and the job watcher update it."""

    total: int
    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    skipped: int = 0
    embedded: int = 0
    indexed: int = 0
    jobs: dict[str, Job | None] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def line(self, waiting: bool) -> str:
        with self.lock:
            done = self.indexed if waiting else self.sent
            fresh = done - self.skipped
        elapsed = max(1e-6, time.monotonic() - self.started)
        rate = max(0, fresh) / elapsed
        left = self.total - done
        eta = f"{left / rate:.0f}s" if rate > 0 and left > 0 else "-"
        width = 24
        filled = int(width * done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        return (
            f"[{bar}] sent {self.sent}/{self.total}  embedded {self.embedded}  indexed {self.indexed}  "
            f"{rate:.1f} docs/s  ETA {eta}"
        )


class _Display:
    """The progress line on stderr, redrawn in place; the jobs' progress read alongside."""

    def __init__(self, tally: _Tally, client: Client, *, draw: bool, watch: bool, err: TextIO) -> None:
        self.tally, self.client, self.draw, self.watch, self.err = tally, client, draw, watch, err
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-progress", daemon=True)

    def __enter__(self) -> _Display:
        if self.draw or self.watch:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.draw:
            self.err.write("\r" + self.tally.line(self.watch) + "\n")
            self.err.flush()

    def _run(self) -> None:
        while not self._stop.wait(_REFRESH_S):
            if self.watch:
                self._poll()
            if self.draw:
                self.err.write("\r" + self.tally.line(self.watch))
                self.err.flush()

    def _poll(self) -> None:
        """Read every unfinished job once; embedded and indexed are their sums."""
        with self.tally.lock:
            pending = [j for j, job in self.tally.jobs.items() if job is None or job.state not in FINISHED]
        for job_id in pending:
            if self._stop.is_set():
                return
            try:
                job = self.client.get_job(job_id)
            except Exception:
                continue
            with self.tally.lock:
                self.tally.jobs[job_id] = job
        with self.tally.lock:
            known = [j for j in self.tally.jobs.values() if j is not None]
            self.tally.embedded = sum(j.embedded for j in known)
            self.tally.indexed = sum(j.indexed for j in known)


def _identity(args: argparse.Namespace, created_at: str, digest: str, fields: sources.FieldMap) -> dict[str, Any]:
    return {
        "collection": args.collection,
        "collection_created_at": created_at,
        "file_sha256": digest,
        "batch_size": args.batch_size,
        "priority": args.priority,
        "id_field": fields.id_field,
        "text_field": fields.text_field,
        "metadata_fields": list(fields.metadata_fields) if fields.metadata_fields is not None else None,
    }


def _send_and_wait(
    args: argparse.Namespace,
    client: Client,
    path: Path,
    fmt: str,
    fields: sources.FieldMap,
    progress: resume.Progress,
    tally: _Tally,
    draw: bool,
    err: TextIO,
) -> tuple[list[Job], list[str]]:
    """Send each batch not accepted yet, noting it once accepted; then wait for every job unless told not to."""
    with _Display(tally, client, draw=draw, watch=args.wait, err=err):
        for index, batch in enumerate(batches(sources.documents(path, fmt, fields), args.batch_size)):
            if index in progress.accepted:
                continue
            key = resume.batch_key(progress.run, index)
            accepted = client.ingest_batch(args.collection, batch, priority=args.priority, idempotency_key=key)
            progress.record(resume.Accepted(index, len(batch), accepted.job_id, key))
            with tally.lock:
                tally.sent += len(batch)
                tally.jobs[accepted.job_id] = None
        job_ids = [b.job_id for b in sorted(progress.accepted.values(), key=lambda b: b.index)]
        finals = client.wait_all(job_ids, args.wait_timeout) if args.wait else []
        if finals:
            with tally.lock:
                tally.jobs.update({j.id: j for j in finals})
                tally.embedded = sum(j.embedded for j in finals)
                tally.indexed = sum(j.indexed for j in finals)
    return finals, job_ids


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Send the file, batch after batch (skipping those already accepted), then wait for the jobs unless told not to."""
    path: Path = args.file
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if not 1 <= args.batch_size <= 1000:
        raise UsageError("--batch-size must be between 1 and 1000")
    fmt = sources.file_format(path, args.format)
    meta = [f.strip() for f in args.metadata_fields.split(",") if f.strip()] if args.metadata_fields else None
    fields = sources.FieldMap(args.id_field, args.text_field, meta)
    total = sources.count(path, fmt)
    with connection.client(args) as client:
        info = client.create_collection(args.collection)
        identity = _identity(args, info.created_at, sources.fingerprint(path), fields)
        run_id = resume.run_id(identity)
        state_path = args.state or path.with_name(path.name + resume.SUFFIX)
        progress = resume.Progress.open(state_path, run_id, identity)
        tally = _Tally(total)
        for earlier in progress.accepted.values():
            tally.sent += earlier.documents
            tally.skipped += earlier.documents
            tally.jobs[earlier.job_id] = None
        if progress.accepted:
            print(f"resuming: {len(progress.accepted)} batches ({tally.skipped} documents) already accepted",
                  file=err)  # fmt: skip
        draw = args.progress if args.progress is not None else err.isatty()
        try:
            finals, job_ids = _send_and_wait(args, client, path, fmt, fields, progress, tally, draw, err)
        except KeyboardInterrupt:
            print(f"\nsemaflow: interrupted; run the same command again to resume ({state_path})", file=err)
            raise
        progress.done()
    failed = [j for j in finals if j.state is not JobState.SUCCEEDED]
    summary = {
        "collection": args.collection,
        "documents": tally.sent,
        "resumed_documents": tally.skipped,
        "batches": len(job_ids),
        "jobs": job_ids,
        "waited": bool(args.wait),
        "failed_jobs": [{"id": j.id, "state": j.state.value, "error": j.error} for j in failed],
        "seconds": round(time.monotonic() - tally.started, 3),
    }
    if args.json:
        output.print_json(summary, out)
    else:
        state = "indexed" if args.wait else "accepted"
        print(f"{tally.sent} documents {state} in {args.collection} ({len(job_ids)} batches, "
              f"{summary['seconds']:.1f}s)", file=out)  # fmt: skip
        for j in failed:
            print(f"job {j.id} {j.state.value}: {j.error or ''}", file=err)
    return output.API_ERROR if failed else output.OK
