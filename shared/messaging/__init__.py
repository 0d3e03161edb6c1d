"""How services talk: Dramatiq task contracts, CloudEvents on the Redis stream, fair work queues, trace context."""

__all__ = [
    # work: task contracts, the fair work queues in front of Dramatiq, and sending to them
    "dispatch",
    "tasks",
    "workqueue",
    # events: the CloudEvents envelope and the stream bus
    "bus",
    "events",
    # the trace context both carry
    "tracing",
]
