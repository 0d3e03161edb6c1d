"""Newest-first cursor pagination over a Redis sorted set scored by time (milliseconds).

A cursor is ``{score}:{member}`` of the last item a page returned. Members sharing a score come in
reverse member order (Redis's order for ZREVRANGEBYSCORE), so the next page skips, at the cursor's
score, every member at or above the cursor's.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, cast

from shared import keys
from shared.errors import InvalidInput

if TYPE_CHECKING:
    import redis.asyncio as aioredis


def parse_cursor(cursor: str | None) -> tuple[float | None, str | None]:
    """``(score, member)`` of a cursor, or ``(None, None)`` for none.

    Raises:
        InvalidInput: the cursor is malformed.
    """
    if not cursor:
        return None, None
    score, sep, after = cursor.partition(":")
    try:
        if not sep or not after:
            raise ValueError(cursor)
        return float(int(score)), after
    except ValueError as exc:
        raise InvalidInput(f"invalid cursor {cursor!r}") from exc


def cursor_of(score: float, member: str) -> str:
    """The cursor that continues after ``member``."""
    return f"{int(score)}:{member}"


async def newest_first(
    client: aioredis.Redis,
    key: str,
    *,
    cursor: str | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    page: int = 200,
) -> AsyncGenerator[list[tuple[str, float]], None]:
    """Pages of ``(member, score)`` after ``cursor``, highest score first, within the score bounds.

    Raises:
        InvalidInput: the cursor is malformed.
    """
    cursor_score, after = parse_cursor(cursor)
    bounds = [s for s in (max_score, cursor_score) if s is not None]
    high: float | str = min(bounds) if bounds else "+inf"
    low: float | str = "-inf" if min_score is None else min_score
    offset = 0
    while True:
        found = await client.zrevrangebyscore(key, high, low, start=offset, num=page, withscores=True)
        rows = cast(list[tuple[bytes, float]], found)
        if not rows:
            return
        offset += len(rows)
        members = [(keys.text(m), float(s)) for m, s in rows]
        yield [(m, s) for m, s in members if not (after is not None and s == cursor_score and m >= after)]
