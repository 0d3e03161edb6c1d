"""Webhooks shared by the gateway (which manages them) and the notifier (which delivers them).

- :mod:`shared.webhooks.endpoints`: endpoints (subscriptions), their secrets and event-type filters;
- :mod:`shared.webhooks.deliveries`: one delivery per (event, endpoint), its attempts, and the
  per-endpoint schedule that starts them;
- :mod:`shared.webhooks.destinations`: which destinations a webhook may reach (SSRF guard);
- :mod:`shared.webhooks.retries`: the retry schedule.
"""

__all__ = ["deliveries", "destinations", "endpoints", "retries"]
