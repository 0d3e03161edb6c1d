"""Files read by ``semaflow ingest``: every format (gzipped too), field mapping, and the resumable run's keys."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semaflow.commands import resume, sources
from semaflow.commands.output import UsageError

RECORDS: list[dict[str, Any]] = [
    {"id": f"d{i}", "text": f"text number {i}", "lang": "en" if i % 2 else "fr", "n": str(i)} for i in range(5)
]


def _write(path: Path, fmt: str, records: list[dict[str, Any]]) -> None:
    gz = path.suffix == ".gz"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
        return
    if fmt == "jsonl":
        data = "".join(json.dumps(r) + "\n" for r in records) + "\n"
    elif fmt == "json":
        data = json.dumps(records)
    else:
        lines: list[str] = []
        writer = csv.DictWriter(_Lines(lines), fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
        data = "".join(lines)
    path.write_bytes(gzip.compress(data.encode()) if gz else data.encode())


class _Lines:
    def __init__(self, out: list[str]) -> None:
        self.out = out

    def write(self, text: str) -> None:
        self.out.append(text)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("docs.jsonl", "jsonl"),
        ("docs.jsonl.gz", "jsonl"),
        ("docs.json", "json"),
        ("docs.csv", "csv"),
        ("docs.csv.gz", "csv"),
        ("docs.parquet", "parquet"),
    ],
)
def test_every_format_reads_the_same_documents(tmp_path: Path, name: str, fmt: str) -> None:
    path = tmp_path / name
    _write(path, fmt, RECORDS)
    assert sources.file_format(path, None) == fmt
    assert sources.count(path, fmt) == len(RECORDS)
    docs = list(sources.documents(path, fmt, sources.FieldMap()))
    assert docs == [{"id": r["id"], "text": r["text"], "metadata": {"lang": r["lang"], "n": r["n"]}} for r in RECORDS]


def test_fields_are_chosen_by_name_and_the_api_shape_passes_through(tmp_path: Path) -> None:
    fields = sources.FieldMap(id_field="n", text_field="lang", metadata_fields=["id"])
    assert fields.document(RECORDS[1], "x") == {"id": "1", "text": "en", "metadata": {"id": "d1"}}
    api_shape = {"id": "a", "text": "t", "metadata": {"k": 1}, "vector": [0.5] * 3}
    assert sources.FieldMap().document(api_shape, "x") == {"id": "a", "text": "t", "vector": [0.5] * 3,
                                                           "metadata": {"k": 1}}  # fmt: skip


def test_a_record_without_an_id_or_an_unknown_format_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"file\.jsonl:3"):
        sources.FieldMap().document({"text": "no id"}, "file.jsonl:3")
    with pytest.raises(UsageError, match="unknown format"):
        sources.file_format(tmp_path / "docs.txt", None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n{oops\n')
    with pytest.raises(UsageError, match=r"bad\.jsonl:2"):
        list(sources.documents(bad, "jsonl", sources.FieldMap()))


def test_batch_keys_are_the_same_for_the_same_run_and_differ_otherwise() -> None:
    identity = {"collection": "c", "file_sha256": "ab", "batch_size": 10}
    run = resume.run_id(identity)
    assert run == resume.run_id(dict(reversed(identity.items())))
    assert resume.batch_key(run, 3) == resume.batch_key(run, 3)
    assert resume.batch_key(run, 3) != resume.batch_key(run, 4)
    assert resume.run_id({**identity, "collection": "d"}) != run
    assert resume.run_id({**identity, "batch_size": 11}) != run
    assert 1 <= len(resume.batch_key(run, 0)) <= 255


def test_progress_survives_a_torn_last_line_and_restarts_for_another_run(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl.semaflow-progress"
    identity = {"collection": "c"}
    run = resume.run_id(identity)
    progress = resume.Progress.open(path, run, identity)
    progress.record(resume.Accepted(0, 10, "job_a", resume.batch_key(run, 0)))
    progress.record(resume.Accepted(1, 10, "job_b", resume.batch_key(run, 1)))
    with path.open("a") as fh:
        fh.write('{"batch": 2, "documents"')  # killed mid-write
    again = resume.Progress.open(path, run, identity)
    assert sorted(again.accepted) == [0, 1]
    assert again.accepted[1].job_id == "job_b"
    again.record(resume.Accepted(2, 10, "job_c", resume.batch_key(run, 2)))
    assert sorted(resume.Progress.open(path, run, identity).accepted) == [0, 1, 2]
    other = resume.Progress.open(path, resume.run_id({"collection": "d"}), {"collection": "d"})
    assert other.accepted == {}
    assert resume.Progress.open(path, run, identity).accepted == {}
    other.done()
    assert not path.exists()
