"""Task time limits: Dramatiq's ``TimeLimit`` interrupts an actor that runs too long; how that reads in a record.

Dramatiq raises :class:`~dramatiq.middleware.TimeLimitExceeded` (a ``BaseException``, so an actor's
``except Exception`` does not swallow it) in the actor's thread once the actor has run longer than its
limit: the ``time_limit`` option of the message, else of the actor, else the broker-wide default.
The failure then goes the way of any other: a retry after a back-off, an attempt counted, a dead
letter once the attempts run out. Its record says which limit it ran into.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import TimeLimit, TimeLimitExceeded


def limit_ms(broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> float | None:
    """The time limit ``message`` ran under (milliseconds), as ``TimeLimit`` chose it; None without that middleware."""
    default = next((m.time_limit for m in broker.middleware if isinstance(m, TimeLimit)), None)
    if default is None:
        return None
    option = message.options.get("time_limit")
    if option:
        return float(option)
    actor = broker.get_actor(message.actor_name)
    return float(actor.options.get("time_limit", default))


def describe(broker: dramatiq.Broker, message: dramatiq.MessageProxy, exception: BaseException) -> str:
    """The error a job or run records for ``exception``: ``time limit of N s exceeded``, else ``Type: text``."""
    if isinstance(exception, TimeLimitExceeded):
        limit = limit_ms(broker, message)
        return "time limit exceeded" if limit is None else f"time limit of {limit / 1000:g} s exceeded"
    return f"{type(exception).__name__}: {exception}"
