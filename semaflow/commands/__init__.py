"""The ``semaflow`` commands that talk to a gateway over its HTTP API, through the SDK (:mod:`semaflow.client`):
``ingest``, ``search``, ``collections``, ``jobs``, ``queues``, ``dead-letters``, ``webhooks`` and ``schedules``.

Exit codes are those of :mod:`semaflow.commands.output`.
"""

from __future__ import annotations

import argparse

from semaflow.commands import ingest, output, resources

__all__ = ["add_commands", "handles", "run"]

_INGEST = "ingest"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the API commands to the ``semaflow`` command."""
    ingest.add_command(sub)
    resources.add_commands(sub)


def handles(args: argparse.Namespace) -> bool:
    """Whether the parsed command is one of these."""
    return args.command == _INGEST or hasattr(args, "handler")


def run(args: argparse.Namespace) -> int:
    """Run the parsed API command; errors become messages and exit codes."""
    if args.command == _INGEST:
        return output.guarded(lambda: ingest.run(args))
    return output.guarded(lambda: resources.run(args))
