"""``semaflow doctor``: checks that what Redis and the object store say about the work and the indexes
fits together, like ``git fsck``, and with ``--repair`` puts right what can be put right.

What it checks, and what a repair does:

- **Work queues** (``embed``, ``index``):
  - a claim whose lease ran out (its worker died or its token message was lost), or whose
    entry is gone: the entry goes back to the front of its level (the claim is dropped);
  - an entry neither waiting nor claimed (it would never run): queued again;
  - a waiting id whose entry is gone (it skews the depth): taken out;
  - waiting entries without a token that can run them: tokens are sent;
  - tokens a dead worker fetched (Dramatiq hands them back only in its occasional maintenance):
    put back on their queue.
- **Jobs**: a queued or running job, quiet for ``--grace`` seconds, with no work-queue entry
  behind it (nothing would ever finish it): its first stage is queued again (the stages are
  idempotent, so whatever ran before is not applied twice).
- **Indexes**: a collection's ``LATEST`` pointer must name a manifest that reads and verifies, and
  every segment file that manifest lists must exist. Reported only: the fix (a rollback to an
  earlier version, or restoring the store) is the operator's choice.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import redis
import structlog

from semaflow import admin
from shared import keys
from shared.clock import now, now_ms
from shared.config import Settings
from shared.errors import ConfigurationError, CorruptObject, ObjectNotFound
from shared.index import manifests
from shared.index.storage import open_store
from shared.messaging import dispatch, tasks
from shared.messaging.workqueue import LEVELS, Entry, WorkQueue
from shared.records import catalog, jobs
from shared.runtime.broker import build_broker
from shared.runtime.telemetry import configure_logging

if TYPE_CHECKING:
    import dramatiq

    from shared.index.storage import ObjectStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Finding:
    """One inconsistency: which check found it, about what, and whether it was repaired."""

    check: str
    subject: str
    detail: str
    repairable: bool = True
    repaired: bool = False

    def line(self) -> str:
        """How the command prints it."""
        status = "repaired" if self.repaired else ("repairable" if self.repairable else "needs an operator")
        return f"{self.check:<24} {self.subject:<40} {self.detail} [{status}]"


@dataclass
class Doctor:
    """The checks, on one Redis and one object store; ``repair`` makes them fix what they find."""

    client: redis.Redis
    store: ObjectStore
    broker: dramatiq.Broker | None = None
    lease_ms: int = 15_000
    grace_s: float = 60.0
    repair: bool = False

    def run(self) -> list[Finding]:
        """Every check, in order: queues first (their repairs feed the job check), then jobs, then indexes."""
        found: list[Finding] = []
        for queue in tasks.TOKENS:
            found += self.claims(queue)
            found += self.entries(queue)
            found += self.dead_worker_tokens(queue)
            found += self.tokens(queue)
        found += self.jobs()
        found += self.indexes()
        return found

    def _done(self, finding: Finding) -> Finding:
        return replace(finding, repaired=True) if self.repair and finding.repairable else finding

    # --- work queues -----------------------------------------------------------------------------

    def claims(self, queue: str) -> list[Finding]:
        """Claims without live work behind them (lease run out or missing) or without an entry."""
        claims = {keys.text(k): keys.text(v) for k, v in self.client.hgetall(keys.wq_claims(queue)).items()}
        if not claims:
            return []
        leases: dict[bytes, float] = dict(self.client.zrange(keys.wq_leases(queue), 0, -1, withscores=True))  # type: ignore[arg-type]
        at = now_ms()
        found = []
        for token, entry_id in sorted(claims.items()):
            deadline = leases.get(token.encode())
            if not self.client.hexists(keys.wq_entries(queue), entry_id):
                found.append(Finding("claim_without_entry", f"{queue}:{entry_id}", f"token {token}"))
            elif deadline is None:
                found.append(Finding("orphaned_claim", f"{queue}:{entry_id}", f"token {token} holds no lease"))
            elif deadline < at:
                ago = (at - deadline) / 1000
                found.append(Finding("orphaned_claim", f"{queue}:{entry_id}", f"lease ran out {ago:.0f} s ago"))
        if found and self.repair:
            WorkQueue(self.client, queue, lease_ms=self.lease_ms).reap()
        return [self._done(f) for f in found]

    def entries(self, queue: str) -> list[Finding]:
        """Entries neither waiting nor claimed, and waiting ids without an entry."""
        stored = {keys.text(k) for k in self.client.hkeys(keys.wq_entries(queue))}
        claimed = {keys.text(v) for v in self.client.hvals(keys.wq_claims(queue))}
        waiting: dict[str, int] = {}
        for level in range(LEVELS):
            members: list[bytes] = self.client.zrange(keys.wq_age(queue, level), 0, -1)  # type: ignore[assignment]
            for member in members:
                waiting[keys.text(member)] = level
        found = []
        for entry_id in sorted(stored - claimed - set(waiting)):
            found.append(Finding("stranded_entry", f"{queue}:{entry_id}", "neither waiting nor claimed"))
            if self.repair:
                WorkQueue(self.client, queue).restore(entry_id)
        for entry_id in sorted(set(waiting) - stored):
            found.append(Finding("ghost_waiting", f"{queue}:{entry_id}", "waits, but its entry is gone"))
            if self.repair:
                self._drop_ghost(queue, entry_id, waiting[entry_id])
        return [self._done(f) for f in found]

    def _drop_ghost(self, queue: str, entry_id: str, level: int) -> None:
        ring = keys.wq_ring(queue, level)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.wq_age(queue, level), entry_id)
            for tenant in self.client.lrange(ring, 0, -1):
                pipe.lrem(keys.wq_tenant(queue, level, keys.text(tenant)), 0, entry_id)
            pipe.execute()

    def dead_worker_tokens(self, queue: str) -> list[Finding]:
        """Tokens fetched by a worker that stopped beating: put back on their queue (as Dramatiq's maintenance does)."""
        since = now_ms() - self.lease_ms
        workers: list[bytes] = self.client.zrangebyscore(keys.dramatiq_heartbeats(), since, "+inf")  # type: ignore[assignment]
        alive = {keys.text(w) for w in workers}
        found = []
        for pattern, name in zip(keys.dramatiq_acks(queue), keys.dramatiq_queues(queue), strict=True):
            for ack_key in self.client.scan_iter(match=pattern, count=500):
                worker = keys.dramatiq_ack_owner(ack_key)
                if worker in alive:
                    continue
                held = int(self.client.scard(ack_key))
                if held:
                    found.append(Finding("dead_worker_tokens", f"{queue}:{worker}", f"{held} token(s) held"))
                if self.repair:
                    self._hand_back(ack_key, name)
        return [self._done(f) for f in found]

    def _hand_back(self, ack_key: bytes | str, queue_key: str) -> None:
        messages = f"{queue_key}.msgs"

        def move(pipe: redis.client.Pipeline) -> None:
            ids = pipe.smembers(ack_key)
            present = [i for i in ids if pipe.hexists(messages, i)]
            pipe.multi()
            if present:
                pipe.rpush(queue_key, *present)
            pipe.delete(ack_key)

        self.client.transaction(move, ack_key)

    def tokens(self, queue: str) -> list[Finding]:
        """Waiting entries without a token that can run them."""
        waiting = WorkQueue(self.client, queue).waiting()
        tokens = max(0, dispatch.tokens_without_claim(self.client, queue, dead_after_ms=self.lease_ms))
        if waiting <= tokens:
            return []
        finding = Finding("missing_tokens", queue, f"{waiting} waiting, {tokens} token(s) to run them")
        if self.repair and self.broker is not None:
            dispatch.top_up(self.client, self.broker, queue, grace_ms=0, dead_after_ms=self.lease_ms)
            return [replace(finding, repaired=True)]
        return [finding]

    # --- jobs ------------------------------------------------------------------------------------

    def _job_keys(self) -> Iterator[str]:
        for key in self.client.scan_iter(match=keys.job("*"), count=1000):
            yield keys.text(key)

    def jobs(self) -> list[Finding]:
        """Queued or running jobs with nothing in any work queue to finish them."""
        cutoff = now() - timedelta(seconds=self.grace_s)
        found = []
        prefix = keys.job("")
        for key in self._job_keys():
            state = self.client.hget(key, "state")
            if state is None or keys.text(state) not in {s.value for s in jobs.ACTIVE}:
                continue
            job = jobs.get(self.client, key.removeprefix(prefix))
            if job is None or job.updated_at > cutoff:
                continue
            if any(self.client.hexists(keys.wq_entries(q), job.id) for q in tasks.TOKENS):
                continue
            quiet = (now() - job.updated_at).total_seconds()
            finding = Finding(
                "job_without_work",
                f"job:{job.id}",
                f"{job.state.value} for {quiet:.0f} s with no queued or claimed work",
                repairable=job.task is not None,
            )
            if self.repair and job.task is not None and self.broker is not None:
                entry = Entry(job.id, job.tenant, job.priority, job.task.arguments, now_ms())
                dispatch.submit(self.client, self.broker, job.task.queue, entry)
                finding = replace(finding, repaired=True)
            found.append(finding)
        return found

    # --- indexes ---------------------------------------------------------------------------------

    def indexes(self) -> list[Finding]:
        """Each collection's LATEST manifest reads and verifies, and its segments' files exist."""
        found = []
        for tenant in catalog.tenants(self.client):
            for collection in catalog.list_all(self.client, tenant):
                subject = f"{tenant}/{collection.name}"
                version = self.client.get(keys.latest(tenant, collection.name))
                if version is None:
                    continue  # nothing published yet
                ref = collection.ref
                try:
                    manifest = manifests.read(self.store, ref, keys.text(version))
                except ObjectNotFound:
                    found.append(
                        Finding("latest_missing", subject, f"LATEST {keys.text(version)} is not in the store", False)
                    )
                    continue
                except CorruptObject as exc:
                    found.append(Finding("latest_corrupt", subject, str(exc), False))
                    continue
                for segment in manifest.segments:
                    for name in segment.files:
                        if not self.store.exists(ref.segment_key(segment.id, name)):
                            detail = f"version {manifest.version}: segment {segment.id} lacks {name}"
                            found.append(Finding("segment_missing", subject, detail, False))
        return found


def report(findings: list[Finding], *, as_json: bool) -> str:
    """The command's output: one line per finding (or JSON lines), and a summary."""
    if as_json:
        return "\n".join(json.dumps(asdict(f)) for f in findings)
    if not findings:
        return "semaflow doctor: no problems found"
    open_ = sum(not f.repaired for f in findings)
    lines = [f.line() for f in findings]
    lines.append(f"semaflow doctor: {len(findings)} problem(s), {len(findings) - open_} repaired, {open_} left")
    return "\n".join(lines)


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``doctor`` to the ``semaflow`` command."""
    p = sub.add_parser("doctor", help="check queues, claims, jobs and indexes for consistency (--repair fixes)")
    p.add_argument("--repair", action="store_true", help="fix what can be fixed (otherwise only report)")
    p.add_argument("--json", action="store_true", help="one JSON object per finding")
    p.add_argument("--grace", type=float, default=60.0, metavar="S", help="a job quiet this long may be stuck")
    p.add_argument("--data-dir", type=Path, default=None, help="data dir of `semaflow up` (default ./.semaflow)")
    p.add_argument("--redis-url", default=None, help="Redis to use (default: the one `semaflow up` started)")


def main(args: argparse.Namespace) -> int:
    """Run the checks; exit status 0 when nothing is (left) wrong, 1 when something is, 2 on a usage error."""
    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir is not None else {}))
    configure_logging("semaflow", level=settings.log_level, json=settings.log_json)  # on stderr
    try:
        url = admin.redis_url(args, settings)
        store = open_store(settings)
    except ConfigurationError as exc:
        print(f"semaflow: {exc}", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(url)
    broker = build_broker(settings, url) if args.repair else None
    try:
        doctor = Doctor(
            client,
            store,
            broker,
            lease_ms=int(settings.worker_dead_after_s * 1000),
            grace_s=args.grace,
            repair=args.repair,
        )
        findings = doctor.run()
    except redis.RedisError as exc:
        print(f"semaflow: cannot reach Redis ({exc}); is `semaflow up` running?", file=sys.stderr)
        return 1
    finally:
        if broker is not None:
            broker.close()
        client.close()
    print(report(findings, as_json=args.json))
    return 1 if any(not f.repaired for f in findings) else 0
