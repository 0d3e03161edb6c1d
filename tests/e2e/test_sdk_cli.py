"""The Python SDK and the ``semaflow`` API commands against a whole stack: typed errors, waiting, search, and
resumable file ingests that count every document exactly once after a run is killed."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semaflow.client import AsyncClient, Client, Forbidden, NotFound, Unauthorized, ValidationFailed
from semaflow.commands import output
from semaflow.redis_server import free_port
from semaflow.webhooks import verify
from tests.e2e.conftest import Stack, corpus
from tests.peers import Receiver

pytestmark = pytest.mark.e2e

CLI_TIMEOUT_S = 180.0


def _client(stack: Stack) -> Client:
    return Client(stack.url, stack.api_key)


def _cli(stack: Stack | None, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``semaflow ARGS`` as a process; the stack's URL and key in the environment unless ``env`` says otherwise."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SEMAFLOW_")}
    if stack is not None:
        base.update({"SEMAFLOW_URL": stack.url, "SEMAFLOW_API_KEY": stack.api_key})
    return subprocess.run(
        [sys.executable, "-m", "semaflow", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def _write_jsonl(path: Path, docs: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(d) + "\n" for d in docs)
    path.write_bytes(gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode())


def _ingest_jobs(client: Client, collection: str) -> list[str]:
    return [j.id for j in client.iter_jobs(collection=collection) if j.kind.value == "ingest"]


# --- SDK --------------------------------------------------------------------------------------


def test_sdk_ingests_waits_and_searches_and_a_repeated_idempotency_key_makes_no_second_job(stack: Stack) -> None:
    docs = corpus(60, seed=41, prefix="sdk")
    with _client(stack) as client:
        assert client.create_collection("sdk-basic").name == "sdk-basic"
        progress: list[int] = []
        accepted = client.ingest(
            iter(docs), "sdk-basic", batch_size=25, on_progress=lambda p: progress.append(p.documents)
        )
        assert progress == [25, 50, 60]
        assert len({a.job_id for a in accepted}) == 3
        jobs = client.wait_all(accepted, timeout_s=120)
        assert [j.state.value for j in jobs] == ["succeeded"] * 3
        assert sum(j.indexed for j in jobs) == 60
        info = client.get_collection("sdk-basic")
        assert info.documents == 60 and info.index_version == jobs[-1].index_version
        hits = client.search("sdk-basic", docs[7]["text"], k=3)
        assert hits.results[0].id == "sdk7"
        assert hits.results[0].metadata == docs[7]["metadata"]
        filtered = client.search("sdk-basic", docs[7]["text"], k=5, filter={"i": 8})
        assert [h.id for h in filtered.results] == ["sdk8"]
        # Documents read back: by id (with its vector), every one listed once, and search hits with their text.
        record = client.get_document("sdk-basic", "sdk7", include=["vector"])
        assert (record.text, record.metadata, record.index_version) == (docs[7]["text"], docs[7]["metadata"],
                                                                         info.index_version)  # fmt: skip
        assert len(record.vector) == 384 and abs(sum(x * x for x in record.vector) - 1) < 1e-4
        listed = [d.id for d in client.list_documents("sdk-basic", limit=7)]
        assert listed == sorted(d["id"] for d in docs)
        with_text = client.search("sdk-basic", docs[7]["text"], k=2, include=["text", "metadata"])
        assert with_text.results[0].text == docs[7]["text"]
        with pytest.raises(NotFound):
            client.get_document("sdk-basic", "no-such-document")

        again = [{"id": "sdk-extra", "text": "lighthouse over the lagoon"}]
        first = client.ingest_batch("sdk-basic", again, idempotency_key="same-batch-1")
        second = client.ingest_batch("sdk-basic", again, idempotency_key="same-batch-1")
        assert first.job_id == second.job_id
        assert client.wait(first, timeout_s=60).state.value == "succeeded"
        assert len(_ingest_jobs(client, "sdk-basic")) == 4


def test_sdk_raises_typed_errors_from_problem_documents(stack: Stack) -> None:
    with _client(stack) as client:
        with pytest.raises(NotFound) as missing:
            client.get_collection("sdk-no-such-collection")
        assert missing.value.status == 404 and missing.value.type.endswith("/not-found")
        with pytest.raises(NotFound):
            client.get_job("job_does_not_exist")
        client.create_collection("sdk-errors")
        with pytest.raises(ValidationFailed) as invalid:
            client.search("sdk-errors", "anything", k=0)
        assert invalid.value.status == 422
        assert [e.pointer for e in invalid.value.errors] == ["/k"]
        created = httpx.post(f"{stack.url}/v1/keys", json={"tenant": "dev", "role": "reader"}, headers=stack.auth)
        assert created.status_code == 201, created.text
        reader_key = created.json()["key"]
    with Client(stack.url, "sk_not_a_key") as stranger, pytest.raises(Unauthorized) as refused:
        stranger.list_collections()
    assert refused.value.status == 401
    with Client(stack.url, reader_key) as reader:
        assert "sdk-errors" in {c.name for c in reader.list_collections()}
        with pytest.raises(Forbidden):
            reader.create_collection("sdk-reader-may-not")


async def test_async_client_and_a_verified_webhook_delivery(stack: Stack) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        async with AsyncClient(stack.url, stack.api_key) as client:
            hook = await client.create_webhook(receiver.url("/sdk"), ["index.*"], description="sdk test")
            assert hook.secret is not None
            assert hook.id in {w.id for w in await client.list_webhooks()}
            delivery = await client.test_webhook(hook.id)
            hits = await receiver.wait_for("/sdk", 1, timeout_s=60)
            event = verify(hits[0].headers, hits[0].body, hook.secret)
            assert event["type"] == "webhook.test"
            assert hits[0].headers["webhook-id"] == delivery.event_id
            await client.delete_webhook(hook.id)
            with pytest.raises(NotFound):
                await client.get_webhook(hook.id)
            await client.create_collection("sdk-async")
            accepted = await client.ingest(corpus(5, seed=3, prefix="as"), "sdk-async")
            job = await client.wait(accepted[0], timeout_s=60)
            assert job.state.value == "succeeded"
            answer = await client.search("sdk-async", "anything", k=2)
            assert len(answer.results) == 2
    finally:
        await receiver.stop()


# --- CLI --------------------------------------------------------------------------------------


def _interrupt(args: list[str], stack: Stack, progress_file: Path, after: int, sig: signal.Signals) -> tuple[int, str]:
    """Run ``semaflow ARGS`` and send it ``sig`` once ``after`` batches are noted in its progress file; returns its
    exit code and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMAFLOW_")}
    env.update({"SEMAFLOW_URL": stack.url, "SEMAFLOW_API_KEY": stack.api_key})
    run = subprocess.Popen([sys.executable, "-m", "semaflow", *args], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + CLI_TIMEOUT_S
    while (len(progress_file.read_text().splitlines()) - 1 if progress_file.exists() else 0) < after:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no batch accepted in time"
        time.sleep(0.005)
    run.send_signal(sig)
    _, err = run.communicate(timeout=60)
    return run.returncode, err


def _noted(progress_file: Path) -> int:
    return len(progress_file.read_text().splitlines()) - 1


def test_cli_ingest_interrupted_twice_resumes_and_counts_every_document_once(stack: Stack, tmp_path: Path) -> None:
    # Given a JSONL file of 300 documents sent 10 per batch (30 batches)
    docs = corpus(300, seed=77, prefix="kill")
    path = tmp_path / "docs.jsonl"
    _write_jsonl(path, docs)
    progress_file = Path(f"{path}.semaflow-progress")
    args = ["ingest", str(path), "--collection", "cli-resume", "--batch-size", "10", "--json", "--no-progress"]

    # When a run is interrupted (Ctrl-C) after a few batches, and the next one killed outright a few batches later
    code, err = _interrupt(args, stack, progress_file, 3, signal.SIGINT)
    assert code == output.INTERRUPTED and "run the same command again to resume" in err
    first = _noted(progress_file)
    code, err = _interrupt(args, stack, progress_file, first + 3, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert f"resuming: {first} batches ({10 * first} documents)" in err
    second = _noted(progress_file)
    assert 6 <= second < 30, "the runs were not interrupted midway"

    # And the same command runs a third time
    summary = _json(_cli(stack, *args))

    # Then it sent only the rest, waited for all 30 jobs, and each document is in the collection once
    assert summary["resumed_documents"] == 10 * second
    assert summary["documents"] == 300 and summary["batches"] == 30 and summary["failed_jobs"] == []
    assert not progress_file.exists()
    with _client(stack) as client:
        assert client.get_collection("cli-resume").documents == 300
        # One job per batch: a batch the killed run sent but never noted was answered with its first job.
        jobs = _ingest_jobs(client, "cli-resume")
        assert sorted(jobs) == sorted(summary["jobs"]) and len(jobs) == 30
        assert client.search("cli-resume", docs[123]["text"], k=1).results[0].id == "kill123"


def test_cli_ingests_csv_with_chosen_fields_and_searches_with_a_filter(stack: Stack, tmp_path: Path) -> None:
    rows = [{"key": f"row{d['metadata']['i']}", "body": d["text"], "lang": ("fr", "en")[d["metadata"]["i"] % 2],
             "ignored": "x"} for d in corpus(40, seed=5, prefix="")]  # fmt: skip
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = _cli(stack, "ingest", str(path), "--collection", "cli-csv", "--id-field", "key", "--text-field", "body",
                  "--metadata-fields", "lang", "--progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "40 documents indexed in cli-csv" in result.stdout
    assert "indexed 40" in result.stderr  # the progress line's last state
    hits = _json(_cli(stack, "search", "cli-csv", rows[4]["body"], "-k", "5", "--filter", "lang=fr", "--json"))
    assert hits["results"][0]["id"] == "row4"
    assert {json.dumps(h["metadata"]) for h in hits["results"]} == {'{"lang": "fr"}'}
    table = _cli(stack, "search", "cli-csv", rows[4]["body"], "-k", "2")
    assert table.returncode == 0 and table.stdout.splitlines()[1].split()[:2] == ["1", "row4"]
    # The documents read back: one with its text from the chosen field, and every id once, in order.
    doc = _json(_cli(stack, "documents", "get", "cli-csv", "row4", "--json"))
    assert (doc["text"], doc["metadata"]) == (rows[4]["body"], {"lang": "fr"})
    listed = _json(_cli(stack, "documents", "list", "cli-csv", "--limit", "1000", "--json"))
    assert [d["id"] for d in listed] == sorted(r["key"] for r in rows)
    missing = _cli(stack, "documents", "get", "cli-csv", "no-such-row")
    assert missing.returncode == 3, missing.stderr  # not found
    with_text = _cli(stack, "search", "cli-csv", rows[4]["body"], "-k", "1", "--include", "text,metadata")
    assert with_text.returncode == 0 and " ".join(rows[4]["body"].split())[:20] in with_text.stdout


def test_cli_ingests_gzipped_jsonl_and_parquet(stack: Stack, tmp_path: Path) -> None:
    gz = tmp_path / "docs.jsonl.gz"
    _write_jsonl(gz, corpus(40, seed=9, prefix="gz"))
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": f"pq{i}", "text": d["text"], "n": i}
                                         for i, d in enumerate(corpus(30, seed=10, prefix=""))]), parquet)  # fmt: skip
    for path in (gz, parquet):
        summary = _json(_cli(stack, "ingest", str(path), "--collection", "cli-files", "--json"))
        assert summary["failed_jobs"] == []
    info = _json(_cli(stack, "collections", "show", "cli-files", "--json"))
    assert info["documents"] == 70
    listed = _json(_cli(stack, "collections", "list", "--json"))
    assert "cli-files" in {c["name"] for c in listed}


def test_cli_resource_commands_and_exit_codes(stack: Stack, tmp_path: Path) -> None:
    data_dir = stack.log.parent / stack.log.stem  # where `semaflow up` keeps its URL and development key
    found = _cli(None, "collections", "create", "cli-misc", "--data-dir", str(data_dir), "--json")
    assert _json(found)["name"] == "cli-misc"
    small = tmp_path / "three.json"
    small.write_text(json.dumps({"documents": corpus(3, seed=2, prefix="m")}))
    sent = _json(_cli(stack, "ingest", str(small), "-c", "cli-misc", "--no-wait", "--json"))
    assert sent["waited"] is False and len(sent["jobs"]) == 1
    job_id = sent["jobs"][0]
    jobs = _json(_cli(stack, "jobs", "list", "--collection", "cli-misc", "--json"))
    assert [j["id"] for j in jobs["jobs"]] == [job_id]
    assert _json(_cli(stack, "jobs", "show", job_id, "--json"))["id"] == job_id
    waited = _cli(stack, "jobs", "wait", job_id, "--wait-timeout", "120")
    assert waited.returncode == 0 and job_id in waited.stdout
    finished = _cli(stack, "jobs", "cancel", job_id)
    assert finished.returncode == output.API_ERROR and "409" in finished.stderr
    queues = _json(_cli(stack, "queues", "--json"))
    assert {"embed", "index"} <= set(queues["queues"])
    assert isinstance(_json(_cli(stack, "dead-letters", "list", "--json")), list)
    assert _cli(stack, "dead-letters", "show", "dl_missing").returncode == output.NOT_FOUND

    hook = _json(_cli(stack, "webhooks", "create", "http://127.0.0.1:9/x", "--event", "job.*", "--json"))
    assert hook["secret"].startswith("whsec_")
    assert hook["id"] in _cli(stack, "webhooks", "list").stdout
    assert _json(_cli(stack, "webhooks", "test", hook["id"], "--json"))["endpoint_id"] == hook["id"]
    assert _cli(stack, "webhooks", "delete", hook["id"]).returncode == 0
    assert _cli(stack, "webhooks", "show", hook["id"]).returncode == output.NOT_FOUND

    assert _cli(stack, "collections", "show", "cli-nothing").returncode == output.NOT_FOUND
    assert _cli(stack, "collections", "rollback", "cli-misc", "0000000001-" + "0" * 16).returncode == output.NOT_FOUND
    bad_k = _cli(stack, "search", "cli-misc", "text", "-k", "0")
    assert bad_k.returncode == output.API_ERROR and "/k:" in bad_k.stderr
    assert _cli(stack, "collections", "list", "--key", "sk_wrong").returncode == output.AUTH
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert _cli(None, "collections", "list", "--url", nowhere, "--retries", "1").returncode == output.UNAVAILABLE
    assert _cli(stack, "ingest", str(tmp_path / "none.jsonl"), "-c", "cli-misc").returncode == output.USAGE
    assert _cli(stack, "collections", "delete", "cli-misc").returncode == 0
