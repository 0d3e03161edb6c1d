"""The gateway's API resources: each one's HTTP routes (thin handlers), schemas, and the work behind them,
which knows nothing of HTTP."""

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
    "webhook_schemas",
    # schedules and rollback
    "operations",
    # keys and limits of any tenant
    "admin",
    # liveness, readiness, metrics, the API's description
    "health",
]
