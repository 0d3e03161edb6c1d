"""Running a service: the Dramatiq broker and its middleware, worker processes, heartbeats, shutdown, telemetry."""

__all__ = [
    # Dramatiq: the broker, and the middleware every worker runs
    "broker",
    "outcomes",
    "schedule_runs",
    "task_telemetry",
    "time_limits",
    # processes
    "heartbeat",
    "outage",
    "service",
    "worker",
    # observability
    "metrics",
    "telemetry",
]
