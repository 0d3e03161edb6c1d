"""Which gateway the API commands talk to, with which key: ``--url``/``--key``, else ``SEMAFLOW_URL`` /
``SEMAFLOW_API_KEY``, else what a local ``semaflow up`` recorded in its data directory."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from semaflow.client import Client, RetryPolicy
from shared.errors import ConfigurationError

#: The gateway's URL, recorded by ``semaflow up`` in its data directory while it runs.
GATEWAY_URL_FILE: Final = "gateway-url"
#: The development admin key ``semaflow up`` creates (``semaflow.cli`` writes it).
DEV_KEY_FILE: Final = "dev-api-key"
DEFAULT_DATA_DIR: Final = Path(".semaflow")


def write_gateway_url(data_dir: Path, url: str) -> Path:
    """Record the gateway's URL in the data directory, for the API commands to find."""
    path = data_dir / GATEWAY_URL_FILE
    path.write_text(url + "\n")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The connection options every API command takes."""
    group = parser.add_argument_group("connection")
    group.add_argument("--url", default=None, help="gateway URL (default: $SEMAFLOW_URL, else the local `semaflow up`)")
    group.add_argument("--key", default=None, help="API key (default: $SEMAFLOW_API_KEY, else the local dev key)")
    group.add_argument("--data-dir", type=Path, default=None, help="data dir of `semaflow up` (default ./.semaflow)")
    group.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    group.add_argument("--retries", type=int, default=5, help="attempts per request on 429/503/no answer (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of tables")


def resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, str | None]:
    """The gateway URL and API key to use.

    Raises:
        ConfigurationError: no URL given, none in the environment, and no running ``semaflow up`` recorded one.
    """
    data_dir: Path = args.data_dir or Path(environ.get("SEMAFLOW_DATA_DIR") or DEFAULT_DATA_DIR)
    url = args.url or environ.get("SEMAFLOW_URL")
    if not url:
        path = data_dir / GATEWAY_URL_FILE
        if not path.exists():
            raise ConfigurationError(
                f"no gateway to talk to: pass --url, set SEMAFLOW_URL, or start `semaflow up` (it records its URL in "
                f"{path})"
            )
        url = path.read_text().strip()
    key = args.key or environ.get("SEMAFLOW_API_KEY")
    if not key:
        path = data_dir / DEV_KEY_FILE
        key = path.read_text().strip() if path.exists() else None
    return url, key


def client(args: argparse.Namespace) -> Client:
    """A client for the command's gateway (the environment is read here, at the command line's edge)."""
    url, key = resolve(args, os.environ)
    retry = RetryPolicy(max_attempts=max(1, args.retries), max_time_s=max(60.0, args.timeout * 2))
    return Client(url, key, retry=retry, timeout_s=args.timeout)
