"""The gateway's API resources: each one's HTTP routes (thin handlers) and the work behind them, which knows
nothing of HTTP. Their request and response bodies are :mod:`shared.api`'s models (the SDK uses the same)."""

__all__ = [
    # collections, documents and search
    "collections",
    "writes",
    # jobs, dead letters and queues
    "jobs",
    "job_control",
    # webhooks and the tenant profile
    "webhooks",
    "subscriptions",
    # schedules and rollback
    "operations",
    # keys and limits of any tenant
    "admin",
    # liveness, readiness, metrics, the API's description
    "health",
]
