#!/usr/bin/env python3
"""Smoke test of a running semaflow gateway: ready, then a whole ingest and search in a throw-away collection.

    python3 deploy/smoke.py BASE_URL API_KEY [--timeout SECONDS]

Checks ``/readyz``, creates a collection named ``smoke-<random>``, ingests three documents, waits
for the job to succeed, searches until the expected document comes first, and deletes the
collection (also after a failure). Prints one line per step; exits 0 when every step passed,
1 otherwise. Needs only the standard library, so it runs wherever Python 3.11 does. The key
must be allowed to write (a ``writer`` or ``admin`` key). A 429 is waited out (``Retry-After``).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from typing import Any

DOCUMENTS = [
    {"id": "cat", "text": "The cat sits on the mat.", "metadata": {"smoke": True}},
    {"id": "revenue", "text": "Quarterly revenue grew by ten percent.", "metadata": {"smoke": True}},
    {"id": "volcano", "text": "The volcano erupted at dawn.", "metadata": {"smoke": True}},
]
QUERY = "a kitten resting on a rug"
EXPECTED = "cat"
#: Job states after which the job will not change by itself.
FAILED_STATES = {"failed", "dead", "cancelled"}


class SmokeFailure(Exception):
    """A step of the smoke test did not get the answer it needs."""


class Gateway:
    """A tiny JSON client of the gateway's API, with a deadline for the whole test."""

    def __init__(self, base_url: str, api_key: str, deadline: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.deadline = deadline

    def request(self, method: str, path: str, body: Any = None, *, expect: set[int]) -> Any:
        """Send one request; returns the decoded JSON answer (None when empty).

        Raises:
            SmokeFailure: the status is not one of ``expect``, the gateway is unreachable, or time ran out.
        """
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.api_key}", "Cache-Control": "no-cache"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        while True:
            req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self._left()) as resp:
                    status, raw = resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                status, raw = exc.code, exc.read()
                if status == 429:
                    self.sleep(float(exc.headers.get("Retry-After") or 1))
                    continue
            except (urllib.error.URLError, OSError) as exc:
                raise SmokeFailure(f"{method} {path}: {getattr(exc, 'reason', exc)}") from exc
            if status not in expect:
                raise SmokeFailure(f"{method} {path}: {status} {raw[:500].decode(errors='replace')}")
            return json.loads(raw) if raw else None

    def sleep(self, seconds: float) -> None:
        """Wait, unless that would pass the deadline.

        Raises:
            SmokeFailure: the deadline would pass.
        """
        if time.monotonic() + seconds > self.deadline:
            raise SmokeFailure("timed out")
        time.sleep(seconds)

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise SmokeFailure("timed out")
        return min(left, 30.0)


def step(name: str, detail: str = "") -> None:
    """Report a step that passed."""
    print(f"ok   {name}{': ' + detail if detail else ''}", flush=True)


def wait_for_job(gw: Gateway, job_id: str) -> dict[str, Any]:
    """Poll the job until it succeeded.

    Raises:
        SmokeFailure: it failed, died or was cancelled, or time ran out.
    """
    while True:
        job: dict[str, Any] = gw.request("GET", f"/v1/jobs/{job_id}", expect={200})
        if job["state"] == "succeeded":
            return job
        if job["state"] in FAILED_STATES:
            raise SmokeFailure(f"job {job_id} is {job['state']}: {job.get('error')}")
        gw.sleep(0.5)


def search_until_found(gw: Gateway, collection: str) -> dict[str, Any]:
    """Search until the expected document comes first (each gateway replica swaps the new version in on its own).

    Raises:
        SmokeFailure: time ran out first.
    """
    while True:
        answer: dict[str, Any] = gw.request(
            "POST", f"/v1/collections/{collection}/search", {"query": QUERY, "k": 3}, expect={200}
        )
        results = answer.get("results") or []
        if results and results[0]["id"] == EXPECTED:
            return answer
        gw.sleep(0.5)


def run(gw: Gateway) -> None:
    """Every step, in order; once the collection exists it is deleted whatever happens.

    Raises:
        SmokeFailure: a step failed.
    """
    ready = gw.request("GET", "/readyz", expect={200})
    step("readyz", json.dumps(ready) if ready is not None else "")
    collection = f"smoke-{secrets.token_hex(6)}"
    gw.request("PUT", f"/v1/collections/{collection}", expect={201})
    step("create collection", collection)
    failure: SmokeFailure | None = None
    try:
        accepted = gw.request("POST", f"/v1/collections/{collection}/documents", {"documents": DOCUMENTS}, expect={202})
        step("ingest", f"job {accepted['job_id']}")
        job = wait_for_job(gw, accepted["job_id"])
        step("job succeeded", f"index version {job.get('index_version')}")
        answer = search_until_found(gw, collection)
        top = answer["results"][0]
        step("search", f"{top['id']} first (score {top['score']:.3f}, version {answer.get('index_version')})")
    except SmokeFailure as exc:
        failure = exc
    # Clean up in any case, with time of its own even when the test ran out of it.
    gw.deadline = max(gw.deadline, time.monotonic() + 30)
    try:
        gw.request("DELETE", f"/v1/collections/{collection}", expect={204})
        step("delete collection", collection)
    except SmokeFailure as exc:
        if failure is None:
            raise
        print(f"FAIL {exc}", flush=True)
    if failure is not None:
        raise failure


def main(argv: list[str] | None = None) -> int:
    """Run the smoke test; 0 when it passed, 1 when a step failed."""
    parser = argparse.ArgumentParser(description="Smoke test of a running semaflow gateway.")
    parser.add_argument("base_url", help="the gateway, e.g. http://127.0.0.1:8080")
    parser.add_argument("api_key", help="a writer or admin API key")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds for the whole test (default 180)")
    args = parser.parse_args(argv)
    gw = Gateway(args.base_url, args.api_key, time.monotonic() + args.timeout)
    try:
        run(gw)
    except SmokeFailure as exc:
        print(f"FAIL {exc}", flush=True)
        return 1
    print("smoke test passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
