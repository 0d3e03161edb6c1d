"""API keys this gateway verified recently, kept in memory for the moments Redis cannot be reached.

Redis stays the authority: while it answers, every request checks its key there (so a revoked key
stops at once) and a successful check refreshes the key's entry here. Only when Redis cannot be
reached does the gateway fall back to an entry, and only one verified within ``ttl_s``: a key
revoked during an outage (through a replica that still reaches Redis) works here at most that long.
Entries are held under the key's SHA-256, never the key itself.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from shared.records.apikeys import ApiKey

# Distinct keys remembered at most; the least recently verified go first (a bound on memory, not a policy).
MAX_ENTRIES: Final = 10_000


class VerifiedKeys:
    """Key hash -> the record Redis last confirmed for it, and when."""

    def __init__(
        self, ttl_s: float, *, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, ApiKey]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def confirmed(self, key_hash: str, record: ApiKey) -> None:
        """Redis just confirmed the key: remember it as of now."""
        if self.ttl_s <= 0:
            return
        self._entries[key_hash] = (self._clock(), record)
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def refused(self, key_hash: str) -> None:
        """Redis does not know the key (never issued, or revoked): forget it."""
        self._entries.pop(key_hash, None)

    def recall(self, key_hash: str) -> ApiKey | None:
        """The key's record if Redis confirmed it within ``ttl_s``, else None."""
        found = self._entries.get(key_hash)
        if found is None:
            return None
        verified_at, record = found
        if self._clock() - verified_at >= self.ttl_s:
            del self._entries[key_hash]
            return None
        return record
