"""Which ticks of a schedule to fire now, and the rule for ticks missed while no scheduler led.

A leader fires every tick that falls in its own term of office, each once, even if it is running a
little late. Ticks between the last one handled (the schedule's cursor) and the start of the term
passed while no replica led (downtime, or a failover): ``run_once`` fires the latest of them once,
as a catch-up; ``skip`` fires none. A schedule that never ran has nothing missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.records.schedules import MissedRuns

if TYPE_CHECKING:
    from datetime import datetime

    from shared.records.schedules import Cron


@dataclass(frozen=True)
class Due:
    """A tick to fire; ``cursor`` is what the schedule's cursor becomes once it fired."""

    tick: datetime
    cursor: datetime
    catch_up: bool = False


@dataclass(frozen=True)
class Plan:
    """Ticks to fire in order, then where to move the cursor without firing (None: nowhere)."""

    due: tuple[Due, ...]
    advance_to: datetime | None


def plan(
    cron: Cron, missed: MissedRuns, cursor: datetime | None, term_start: datetime, now: datetime, *, limit: int
) -> Plan:
    """The ticks to fire at ``now`` for a leader whose term began at ``term_start``.

    ``cursor``: every tick at or before it was handled (fired or let pass); None if never.
    At most ``limit`` in-term ticks fire in one pass (the latest ones), bounding a burst after a stall.
    """
    due: list[Due] = []
    if cursor is None:
        cursor = term_start  # a first start: nothing was missed
        advance: datetime | None = term_start
    elif cursor < term_start:
        advance = term_start
        latest = cron.latest_at_or_before(term_start)
        if latest > cursor and missed is MissedRuns.RUN_ONCE:
            due.append(Due(latest, term_start, catch_up=True))
        cursor = term_start
    else:
        advance = None
    in_term: list[datetime] = []
    for tick in cron.after(cursor):
        if tick > now:
            break
        in_term.append(tick)
    in_term = in_term[-limit:]  # a leader stalled for more than ``limit`` ticks fires the latest ones
    due.extend(Due(tick, tick) for tick in in_term)
    if due and advance is not None and due[-1].cursor >= advance:
        advance = None
    return Plan(tuple(due), advance)
