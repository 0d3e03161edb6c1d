"""What semaflow keeps in Redis: jobs, API keys, tenants, rate limits, collections, schedules, dead letters.

Where a job changes state: :mod:`shared.records.jobs`, and nowhere else.
"""

__all__ = [
    # work and its outcome
    "deadletters",
    "jobs",
    "activity",
    # tenants and access
    "apikeys",
    "ratelimits",
    "tenants",
    # collections
    "catalog",
    # schedules: their definitions and their runs
    "schedule_state",
    "schedules",
    # helpers
    "paging",
]
