"""Leader election: one Redis lease with a fencing token, renewed by its holder well inside its TTL.

Acquiring is ``SET NX PX`` with a random owner id, and in the same script ``INCR`` of a counter that
never goes back: every term of office gets a strictly larger fencing token, stored in the lease's
value (``'{owner} {token}'``). The holder extends the lease with a compare-and-extend script every
third of the TTL; whoever finds the key gone after its TTL takes it with the next token. Firing
checks the whole value atomically (see :mod:`services.scheduler.firing`), so a deposed leader that
wakes up late can no longer fire: its token is stale even if it still believes it leads.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Final

from shared import keys, scripts
from shared.runtime.heartbeat import instance_id

if TYPE_CHECKING:
    import redis.asyncio as aioredis

# Take the lease if it is free (answers the new fencing token, or 0); extend or delete it, only our own.
_ACQUIRE: Final = scripts.get("scheduler_lease_acquire")
_RENEW: Final = scripts.get("scheduler_lease_renew")
_RELEASE: Final = scripts.get("scheduler_lease_release")


class Lease:
    """This process's claim on the scheduler lease."""

    def __init__(self, client: aioredis.Redis, ttl_s: float, *, owner: str | None = None) -> None:
        self.client = client
        self.ttl_ms = max(1, int(ttl_s * 1000))
        # host:pid makes the holder findable by an operator; the random part makes it unique.
        self.owner = owner or f"{instance_id()}:{uuid.uuid4().hex[:12]}"
        self.token: int | None = None
        self._valid_until = 0.0  # monotonic; a conservative local view, the fencing token is the real guard

    @property
    def value(self) -> str:
        """What the lease key holds while we hold it."""
        return f"{self.owner} {self.token}"

    @property
    def held(self) -> bool:
        """Whether we hold the lease, as far as we know (renewed less than a TTL ago)."""
        return self.token is not None and time.monotonic() < self._valid_until

    async def acquire(self) -> int | None:
        """Take the lease if it is free; returns the new fencing token, or None."""
        started = time.monotonic()
        lease_keys = [keys.scheduler_lease(), keys.scheduler_fence()]
        token = int(await _ACQUIRE.arun(self.client, lease_keys, [self.owner, self.ttl_ms]))
        if not token:
            return None
        self.token = token
        self._valid_until = started + self.ttl_ms / 1000
        return token

    async def renew(self) -> bool:
        """Extend our lease; False (and we no longer hold it) if it expired or another took it."""
        if self.token is None:
            return False
        started = time.monotonic()
        if await _RENEW.arun(self.client, [keys.scheduler_lease()], [self.value, self.ttl_ms]):
            self._valid_until = started + self.ttl_ms / 1000
            return True
        self.token = None
        return False

    async def release(self) -> None:
        """Give the lease up, if we still hold it."""
        if self.token is not None:
            await _RELEASE.arun(self.client, [keys.scheduler_lease()], [self.value])
        self.token = None

    def lost(self) -> None:
        """Forget the lease (renewal failed, or a firing found our token stale)."""
        self.token = None
