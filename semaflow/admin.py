"""``semaflow keys`` and ``semaflow limits``: API keys and tenants' rate limits, straight in Redis.

They reach the Redis of a running ``semaflow up`` through the URL it writes into its data
directory, or any Redis given by ``--redis-url`` / ``SEMAFLOW_REDIS_URL``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Final

import redis

from shared.config import Settings
from shared.errors import ConfigurationError, InvalidInput
from shared.records import apikeys, ratelimits
from shared.records.apikeys import Role
from shared.records.ratelimits import FIELDS, QuotaOverrides, Quotas

REDIS_URL_FILE: Final = "redis-url"


def write_redis_url(data_dir: Path, url: str) -> Path:
    """Record the stack's Redis URL in its data directory (0600: it may carry a password)."""
    path = data_dir / REDIS_URL_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(url + "\n")
    return path


def redis_url(args: argparse.Namespace, settings: Settings) -> str:
    """``--redis-url``, else ``SEMAFLOW_REDIS_URL``, else the URL a running ``semaflow up`` recorded.

    Raises:
        ConfigurationError: none of them is there.
    """
    if args.redis_url:
        return str(args.redis_url)
    if settings.redis_url:
        return settings.redis_url
    data_dir = args.data_dir if args.data_dir is not None else settings.data_dir
    path = data_dir / REDIS_URL_FILE
    if path.exists():
        return path.read_text().strip()
    raise ConfigurationError(
        f"no Redis to talk to: start `semaflow up` (it records its Redis in {path}), "
        "or pass --redis-url / set SEMAFLOW_REDIS_URL"
    )


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys`` and ``limits`` to the ``semaflow`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=None, help="data dir of `semaflow up` (default ./.semaflow)")
    common.add_argument("--redis-url", default=None, help="Redis to use (default: the one `semaflow up` started)")

    p_keys = sub.add_parser("keys", help="create, list and revoke API keys")
    keys_sub = p_keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", parents=[common], help="create a key (shown once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--role", choices=[r.value for r in Role], default=Role.WRITER.value)
    create.add_argument("--name", default=None, help="a label to recognise the key by")
    listing = keys_sub.add_parser("list", parents=[common], help="list keys (never the keys themselves)")
    listing.add_argument("--tenant", default=None)
    revoke = keys_sub.add_parser("revoke", parents=[common], help="revoke a key by its id (key_…)")
    revoke.add_argument("key_id")

    p_limits = sub.add_parser("limits", help="show or set a tenant's rate limits")
    limits_sub = p_limits.add_subparsers(dest="action", required=True)
    show = limits_sub.add_parser("show", parents=[common], help="a tenant's limits in force")
    show.add_argument("--tenant", required=True)
    put = limits_sub.add_parser("set", parents=[common], help="set a tenant's own quotas (0: no limit)")
    put.add_argument("--tenant", required=True)
    for field in FIELDS:
        put.add_argument(f"--{field.replace('_', '-')}", dest=field, type=int, default=None, metavar="N")
    reset = limits_sub.add_parser("reset", parents=[common], help="return a tenant to the default quotas")
    reset.add_argument("--tenant", required=True)


def run(args: argparse.Namespace) -> int:
    """Run a ``keys`` or ``limits`` command; prints its result as JSON lines."""
    settings = Settings()
    try:
        client = redis.Redis.from_url(redis_url(args, settings))
        try:
            return _keys(client, args) if args.command == "keys" else _limits(client, args, settings)
        finally:
            client.close()
    except (ConfigurationError, InvalidInput) as exc:
        print(f"semaflow: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"semaflow: cannot reach Redis ({exc}); is `semaflow up` running?", file=sys.stderr)
        return 1


def _keys(client: redis.Redis, args: argparse.Namespace) -> int:
    if args.action == "create":
        key, record = apikeys.create(client, args.tenant, Role(args.role), name=args.name)
        print(json.dumps({"key": key, **record.model_dump(mode="json")}))
        print("semaflow: store the key now; it cannot be shown again", file=sys.stderr)
        return 0
    if args.action == "list":
        for record in apikeys.list_keys(client, args.tenant):
            print(record.model_dump_json())
        return 0
    if not apikeys.revoke(client, args.key_id):
        print(f"semaflow: no key {args.key_id!r}", file=sys.stderr)
        return 1
    print(json.dumps({"revoked": args.key_id}))
    return 0


def _limits(client: redis.Redis, args: argparse.Namespace, settings: Settings) -> int:
    tenant = apikeys.check_tenant(args.tenant)
    if args.action == "set":
        given = {f: getattr(args, f) for f in FIELDS if getattr(args, f) is not None}
        if any(v < 0 for v in given.values()):
            raise InvalidInput("quotas are 0 (no limit) or more")
        ratelimits.update(client, tenant, QuotaOverrides(**given))
    elif args.action == "reset":
        ratelimits.update(client, tenant, QuotaOverrides(**dict.fromkeys(FIELDS)))
    defaults = Quotas.from_settings(settings)
    own = ratelimits.overrides(client, tenant)
    effective = ratelimits.effective(defaults, own)
    print(json.dumps({"tenant": tenant, "overrides": own, "effective": effective.model_dump()}))
    return 0
