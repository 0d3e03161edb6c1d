"""The indexer's maintenance actors: compaction, cleanup and statistics, each reporting its outcome.

Thin entry points: each parses its payload, runs one function, announces new versions, and returns
a summary, which :class:`shared.runtime.schedule_runs.ScheduleRuns` records for the schedule run that asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import structlog

from services.indexer import stats
from services.indexer.cleanup import Cleaner
from services.indexer.compaction import Compactor, Policy, Result
from services.indexer.publishing import announce
from shared import keys
from shared.errors import PermanentError, StaleIndex
from shared.messaging import tasks
from shared.records import catalog

if TYPE_CHECKING:
    import dramatiq
    import redis

    from services.indexer.publishing import Publisher
    from shared.config import Settings
    from shared.index.storage import ObjectStore

log = structlog.get_logger(__name__)

# Merges of one collection in one run: a publish fills at most one tier, and each merge can fill the
# next, so a run needs about as many merges as there are tiers; the cap stops a run that never ends.
MAX_MERGES_PER_RUN: Final = 64


class Maintenance:
    """The maintenance actors' logic, bound to the indexer's Redis, store and publisher."""

    def __init__(self, client: redis.Redis, store: ObjectStore, publisher: Publisher, settings: Settings) -> None:
        self.client = client
        self.store = store
        self.maxlen = settings.stream_maxlen
        self.compactor = Compactor(store, publisher, Policy.from_settings(settings))
        self.cleaner = Cleaner(
            client,
            store,
            publisher,
            retention_s=settings.cleanup_retention_s,
            keep_manifests=settings.cleanup_keep_manifests,
        )

    def compact(self, payload: tasks.CompactCollections) -> str:
        """Compact every collection in scope; announce each new version. Returns a summary."""
        results: list[Result] = []
        failed: list[str] = []
        tenants = [payload.tenant] if payload.tenant else catalog.tenants(self.client)
        for tenant in tenants:
            for collection in catalog.list_all(self.client, tenant):
                if payload.collection and collection.name != payload.collection:
                    continue
                # The collection's compaction is running now: a publish from here on may queue the next one.
                self.client.delete(keys.compaction_queued(tenant, collection.name))
                try:
                    for result in self._merges(collection, full=payload.full):
                        results.append(result)
                        self._announce(tenant, collection.name, result)
                except StaleIndex as exc:  # a rollback raced it: the next run picks it up
                    log.warning("compaction.skipped", collection=collection.name, reason=str(exc))
                    continue
                except Exception as exc:
                    log.exception("compaction.failed", tenant=tenant, collection=collection.name)
                    failed.append(f"{tenant}/{collection.name}: {type(exc).__name__}: {exc}")
                    continue
        summary = (
            f"compacted {len({(r.tenant, r.collection) for r in results})} collections in {len(results)} merges: "
            f"{sum(r.merged for r in results)} segments merged, "
            f"{sum(r.dropped for r in results)} tombstoned rows dropped, "
            f"{sum(1 for r in results if r.kind != 'flat')} approximate segments built"
        )
        if failed:
            raise PermanentError(f"{summary}; failed: {'; '.join(failed)}"[:2000])
        return summary

    def _merges(self, collection: catalog.Collection, *, full: bool) -> Iterator[Result]:
        """Merge until the tier rule is satisfied (one rebuild when ``full``): a merge can fill the next tier."""
        for _ in range(MAX_MERGES_PER_RUN):
            result = self.compactor.compact(collection, full=full)
            if result is None:
                return
            yield result
            full = False

    def _announce(self, tenant: str, collection: str, result: Result) -> None:
        announce(self.client, tenant, collection, result.version, result.documents, result.segments, maxlen=self.maxlen)

    def compact_collections(self, **kwargs: Any) -> str:
        """Actor: compaction (hourly by default)."""
        return self.compact(tasks.COMPACT_COLLECTIONS.parse(kwargs))

    def cleanup_store(self, **kwargs: Any) -> str:
        """Actor: retention cleanup (daily by default)."""
        return self.cleaner.run(tasks.CLEANUP_STORE.parse(kwargs).tenant).summary()

    def refresh_stats(self, **kwargs: Any) -> str:
        """Actor: index statistics (every 5 minutes by default)."""
        tasks.REFRESH_STATS.parse(kwargs)
        return f"statistics of {stats.refresh(self.client, self.store)} collections"


def declare(
    broker: dramatiq.Broker, client: redis.Redis, store: ObjectStore, publisher: Publisher, settings: Settings
) -> None:
    """Declare the maintenance actors on ``broker``."""
    maintenance = Maintenance(client, store, publisher, settings)
    # Compaction and cleanup walk every collection: each gets a limit of its own, sized for that.
    tasks.COMPACT_COLLECTIONS.declare(
        broker,
        maintenance.compact_collections,
        throws=(PermanentError,),
        time_limit_s=settings.compaction_time_limit_s,
    )
    tasks.CLEANUP_STORE.declare(
        broker, maintenance.cleanup_store, throws=(PermanentError,), time_limit_s=settings.cleanup_time_limit_s
    )
    tasks.REFRESH_STATS.declare(broker, maintenance.refresh_stats, throws=(PermanentError,))
