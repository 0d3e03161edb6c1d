"""What every semaflow service shares: settings, schemas, the event bus, the broker, storage, telemetry.

Services import from the modules here (``shared.config``, ``shared.events``, ``shared.tasks``,
``shared.bus``, ``shared.broker``, ``shared.storage``, ``shared.keys``, ``shared.errors`` ...) and
never from each other.
"""
