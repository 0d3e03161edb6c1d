"""Per-key rate limits in Redis: one atomic script checks every window a request draws on.

Windows are fixed (a minute, an hour, a day, aligned to the epoch on Redis's clock, so every
replica agrees). The script reads the tenant's own quotas, checks all the request's windows, and
counts the request in all of them only if every one admits it: a refused request costs nothing,
and concurrent requests can never overshoot a quota (the script runs alone in Redis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from shared import keys
from shared.ratelimits import WINDOWS, Category, Quotas

if TYPE_CHECKING:
    import redis.asyncio as aioredis

# KEYS[1] the tenant's quota overrides; KEYS[2..] one counter hash per window.
# ARGV per window: quota field, default quota, window length (s).
# Returns {admitted (1/0), then per window: quota, remaining, seconds until it resets}.
_CHARGE: Final = """
local now = tonumber(redis.call('TIME')[1])
local n = #KEYS - 1
local quota, start, used, length = {}, {}, {}, {}
local admitted = 1
for i = 1, n do
  local field = ARGV[3 * i - 2]
  local q = tonumber(redis.call('HGET', KEYS[1], field) or ARGV[3 * i - 1])
  local w = tonumber(ARGV[3 * i])
  local s = now - (now % w)
  local stored = redis.call('HMGET', KEYS[i + 1], 's', 'n')
  local u = 0
  if tonumber(stored[1]) == s then u = tonumber(stored[2]) or 0 end
  quota[i], start[i], used[i], length[i] = q, s, u, w
  if q > 0 and u >= q then admitted = 0 end
end
local out = {admitted}
for i = 1, n do
  if admitted == 1 and quota[i] > 0 then
    used[i] = used[i] + 1
    redis.call('HSET', KEYS[i + 1], 's', start[i], 'n', used[i])
    redis.call('EXPIRE', KEYS[i + 1], length[i])
  end
  table.insert(out, quota[i])
  table.insert(out, math.max(0, quota[i] - used[i]))
  table.insert(out, start[i] + length[i] - now)
end
return out
"""


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
        self._script = client.register_script(_CHARGE)

    async def charge(self, key_id: str, tenant: str, category: Category) -> Decision:
        """Count one request of ``category`` for the key if every window admits it."""
        windows = WINDOWS[category]
        args: list[str | int] = []
        for window in windows:
            args += [window.field, self.defaults.quota(window.field), window.seconds]
        counters = [keys.rate_limit_counter(key_id, w.policy) for w in windows]
        raw = await self._script(keys=[keys.rate_limit_overrides(tenant), *counters], args=args)
        states = []
        for i, window in enumerate(windows):
            quota, remaining, reset_s = (int(x) for x in raw[1 + 3 * i : 4 + 3 * i])
            if quota > 0:  # 0: this window is not limited, so not reported
                states.append(WindowState(window.policy, quota, window.seconds, remaining, reset_s))
        return Decision(admitted=int(raw[0]) == 1, windows=tuple(states))
