"""When the SDK sends a request again: exponential backoff with jitter, honouring ``Retry-After``, within limits."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Final

# 429: a rate limit (Retry-After says when); 503: a dependency is briefly down (Redis, the model loading).
RETRY_STATUSES: Final = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a request is tried: ``max_attempts`` in all, never past ``max_time_s`` after the first.

    The n-th retry waits a random time up to ``base_s * 2**n`` (capped at ``cap_s``; "full jitter", so clients
    that failed together do not come back together), or what the answer's ``Retry-After`` asks when it does.
    """

    max_attempts: int = 5
    max_time_s: float = 60.0
    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, retry: int, retry_after: float | None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first)."""
        if retry_after is not None:
            # What the server asked, plus a little jitter so a crowd told the same does not return at once.
            return retry_after + (rng or random).uniform(0, min(1.0, self.base_s))
        return (rng or random).uniform(0, min(self.cap_s, self.base_s * 2**retry))

    def allows(self, attempt: int, started: float, delay_s: float, now: float | None = None) -> bool:
        """Whether another attempt may follow attempt number ``attempt`` (1-based) after ``delay_s``."""
        elapsed = (time.monotonic() if now is None else now) - started
        return attempt < self.max_attempts and elapsed + delay_s <= self.max_time_s


NO_RETRIES: Final = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
