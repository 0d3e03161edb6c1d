"""Per-key rate limits in Redis: one atomic script checks every window a request draws on.

Windows are fixed (a minute, an hour, a day, aligned to the epoch on Redis's clock, so every
replica agrees). The script reads the tenant's own quotas, checks all the request's windows, and
counts the request in all of them only if every one admits it: a refused request costs nothing,
and concurrent requests can never overshoot a quota (the script runs alone in Redis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from shared import keys, scripts
from shared.records.ratelimits import WINDOWS, Category, Quotas

if TYPE_CHECKING:
    import redis.asyncio as aioredis

# Counts a request in all its windows only if every one admits it; answers each window's state.
_CHARGE: Final = scripts.get("ratelimit_charge")


@dataclass(frozen=True)
class WindowState:
    """One window as a response reports it."""

    policy: str
    quota: int
    seconds: int
    remaining: int
    reset_s: int


@dataclass(frozen=True)
class Decision:
    """Whether a request was admitted, and the state of every limited window it draws on."""

    admitted: bool
    windows: tuple[WindowState, ...]

    @property
    def retry_after_s(self) -> int:
        """Seconds until every exhausted window has reset (0 when admitted)."""
        exhausted = [w.reset_s for w in self.windows if w.remaining == 0]
        return max(exhausted, default=0) if not self.admitted else 0

    def headers(self) -> dict[str, str]:
        """``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers), plus ``Retry-After``."""
        if not self.windows:
            return {}
        out = {
            "RateLimit-Policy": ", ".join(f'"{w.policy}";q={w.quota};w={w.seconds}' for w in self.windows),
            "RateLimit": ", ".join(f'"{w.policy}";r={w.remaining};t={w.reset_s}' for w in self.windows),
        }
        if not self.admitted:
            out["Retry-After"] = str(max(1, self.retry_after_s))
        return out


class RateLimiter:
    """Charges requests against their key's windows; quotas from settings unless the tenant has its own."""

    def __init__(self, client: aioredis.Redis, defaults: Quotas) -> None:
        self.client = client
        self.defaults = defaults

    async def charge(self, key_id: str, tenant: str, category: Category) -> Decision:
        """Count one request of ``category`` for the key if every window admits it."""
        windows = WINDOWS[category]
        args: list[str | int] = []
        for window in windows:
            args += [window.field, self.defaults.quota(window.field), window.seconds]
        counters = [keys.rate_limit_counter(key_id, w.policy) for w in windows]
        raw = await _CHARGE.arun(self.client, [keys.rate_limit_overrides(tenant), *counters], args)
        states = []
        for i, window in enumerate(windows):
            quota, remaining, reset_s = (int(x) for x in raw[1 + 3 * i : 4 + 3 * i])
            if quota > 0:  # 0: this window is not limited, so not reported
                states.append(WindowState(window.policy, quota, window.seconds, remaining, reset_s))
        return Decision(admitted=int(raw[0]) == 1, windows=tuple(states))
