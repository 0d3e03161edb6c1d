"""The gateway's index follower: follows index events for as long as the app runs, through Redis outages.

While Redis cannot be reached, each try fails at once; the follower waits longer after each failure
(1 s, 2 s, 4 s ... up to 30 s) and logs the outage twice, when it starts (``index.follow_failed``) and
when it ends (``index.follow_recovered``), not on every try.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import structlog

from shared.runtime.service import pause

if TYPE_CHECKING:
    from services.gateway.search.snapshots import IndexRegistry

log = structlog.get_logger(__name__)

# A Redis restart is over in about a second, so the first retry comes that soon; a long outage is
# retried every 30 s at most, so the follower catches up within that of Redis coming back.
RETRY_FIRST_S: Final = 1.0
RETRY_MAX_S: Final = 30.0


@dataclass
class Backoff:
    """The waits between failed tries: doubling from ``first_s`` up to ``max_s``, back to ``first_s`` on success."""

    first_s: float = RETRY_FIRST_S
    max_s: float = RETRY_MAX_S
    failures: int = field(default=0, init=False)

    def failed(self) -> float:
        """Count a failure; how long to wait before the next try."""
        self.failures += 1
        return float(min(self.first_s * 2 ** (self.failures - 1), self.max_s))

    def succeeded(self) -> int:
        """Start over from ``first_s``; how many tries had failed in a row."""
        failures, self.failures = self.failures, 0
        return failures


async def follow_forever(
    registry: IndexRegistry, stop: asyncio.Event, reconcile_s: float, backoff: Backoff | None = None
) -> None:
    """Follow index events until ``stop`` is set, trying again (with backoff) after each failure."""
    backoff = backoff or Backoff()
    loop = asyncio.get_running_loop()
    failing_since = 0.0

    def following() -> None:
        if failures := backoff.succeeded():
            log.info("index.follow_recovered", failed_tries=failures, down_s=round(loop.time() - failing_since, 1))

    while not stop.is_set():
        try:
            await registry.follow(stop, reconcile_s=reconcile_s, on_following=following)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            first = backoff.failures == 0
            delay = backoff.failed()
            if first:
                failing_since = loop.time()
                log.warning("index.follow_failed", error=str(exc), retry_in_s=delay)
            else:
                log.debug("index.follow_retry_failed", error=str(exc), retry_in_s=delay, failed_tries=backoff.failures)
            await pause(stop, delay)
