"""What every semaflow service shares; services import from here and never from each other.

Layers, highest first (an import-linter contract keeps them so: a layer imports only those below it):

- :mod:`shared.api`: the HTTP API's request and response bodies, used by the gateway and by the
  Python SDK (``semaflow.client``) alike.
- :mod:`shared.runtime`: running a service: the Dramatiq broker and its middleware, the worker
  process, heartbeats, graceful shutdown, metrics and telemetry.
- :mod:`shared.webhooks`: endpoints, deliveries, destinations and retry schedules.
- :mod:`shared.records`: what semaflow keeps in Redis: jobs, API keys, tenants, rate limits,
  collections, schedules and their runs, dead letters.
- :mod:`shared.index` and :mod:`shared.messaging` (independent of each other): documents, vectors,
  segments, manifests and the object store; tasks, events, the stream bus, work queues and trace context.

Below them all, plain modules: :mod:`shared.config` (settings), :mod:`shared.errors`,
:mod:`shared.keys` (every Redis key), :mod:`shared.clock`, :mod:`shared.constants`,
:mod:`shared.scripts` (the Lua scripts in ``shared/lua``) and :mod:`shared.scriptbatch`.
"""

__all__ = [
    # layers
    "api",
    "runtime",
    "webhooks",
    "records",
    "index",
    "messaging",
    # foundations
    "clock",
    "config",
    "constants",
    "errors",
    "keys",
    "scriptbatch",
    "scripts",
]
