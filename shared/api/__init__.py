"""The HTTP API's request and response bodies: the gateway validates and answers with them, and the Python SDK
(``semaflow.client``) sends and parses them, so both sides speak one schema.

- :mod:`shared.api.schemas`: collections, documents, search, jobs, dead letters, queues, keys, schedules,
  health, and the problem document of every error;
- :mod:`shared.api.webhooks`: webhooks, their deliveries, replays and the tenant profile.
"""

__all__ = ["schemas", "webhooks"]
