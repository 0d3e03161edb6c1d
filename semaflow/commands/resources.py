"""The API commands besides ``ingest``: collections, search, documents, jobs, queues, dead letters, webhooks."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from semaflow.client import Client
from semaflow.commands import connection, output
from semaflow.commands.output import UsageError
from shared.records.jobs import Job

Handler = Callable[[Client, argparse.Namespace, TextIO], int]
if TYPE_CHECKING:
    from typing import TypeAlias

    Sub: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def _leaf(sub: Sub, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    connection.add_arguments(parser)
    parser.set_defaults(handler=handler)
    return parser


def _group(sub: Sub, name: str, help_text: str) -> Sub:
    return sub.add_parser(name, help=help_text).add_subparsers(dest="action", required=True)


# --- collections ------------------------------------------------------------------------------

_COLLECTION_COLUMNS = ("name", "documents", "segments", "index_version", "created_at")


def _collections_list(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    items = client.list_collections()
    if args.json:
        output.print_json(items, out)
    else:
        output.print_table(_COLLECTION_COLUMNS, [[getattr(c, k) for k in _COLLECTION_COLUMNS] for c in items], out)
    return output.OK


def _show(value: Any, args: argparse.Namespace, out: TextIO) -> int:
    (output.print_json if args.json else output.print_record)(value, out)
    return output.OK


def _collections_create(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.create_collection(args.name, args.quantization), args, out)


def _collections_show(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.get_collection(args.name), args, out)


def _collections_delete(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    client.delete_collection(args.name)
    if not args.json:
        print(f"collection {args.name} deleted", file=out)
    return output.OK


def _collections_rollback(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.rollback(args.name, args.version), args, out)


def _add_collections(sub: Sub) -> None:
    group = _group(sub, "collections", "list, create, show, delete and roll back collections")
    _leaf(group, "list", _collections_list, "the tenant's collections")
    create = _leaf(group, "create", _collections_create, "create a collection (or confirm it exists)")
    create.add_argument("name")
    create.add_argument(
        "--quantization",
        choices=("none", "int8"),
        help="how its segments hold vectors (fixed at creation): float32 (none, the default) or int8 codes",
    )
    for name, handler, text in (
        ("show", _collections_show, "a collection's size, index version and statistics"),
        ("delete", _collections_delete, "delete a collection and its documents"),
    ):
        _leaf(group, name, handler, text).add_argument("name")
    rollback = _leaf(group, "rollback", _collections_rollback, "publish an earlier index version again (admin)")
    rollback.add_argument("name")
    rollback.add_argument("version")


# --- search -----------------------------------------------------------------------------------


def _filter_value(text: str) -> Any:
    """A filter value: JSON when it reads as a JSON scalar (1, true, "1"), else the text itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str | int | float | bool) or value is None else text


def parse_filters(items: list[str]) -> dict[str, Any]:
    """``key=value`` arguments as a search filter.

    Raises:
        UsageError: an item has no ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--filter takes key=value, not {item!r}")
        out[key] = _filter_value(value)
    return out


def _search(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    include = [i for i in args.include.split(",") if i] if args.include else None
    answer = client.search(args.collection, args.query, k=args.k, filter=parse_filters(args.filter), include=include)
    if args.json:
        output.print_json(answer, out)
        return output.OK
    if include and "text" in include:
        output.print_table(("rank", "id", "score", "text", "metadata"),
                           [[n, h.id, h.score, _excerpt(h.text), h.metadata]
                            for n, h in enumerate(answer.results, 1)], out)  # fmt: skip
    else:
        output.print_table(("rank", "id", "score", "metadata"),
                           [[n, h.id, h.score, h.metadata] for n, h in enumerate(answer.results, 1)], out)  # fmt: skip
    print(f"(index version {answer.index_version or '-'})", file=out)
    return output.OK


def _add_search(sub: Sub) -> None:
    p = _leaf(sub, "search", _search, "the documents of a collection closest to a query text")
    p.add_argument("collection")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=10, help="how many results (1-100, default 10)")
    filter_help = 'exact match on a metadata field (repeatable; VALUE is JSON when it reads so: 1, true, "1")'
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help=filter_help)
    p.add_argument("--include", default=None, help="comma-separated extra fields of each hit (text,metadata,vector)")


def _excerpt(text: str | None, width: int = 60) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# --- documents --------------------------------------------------------------------------------


def _documents_get(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.get_document(args.collection, args.id, include=["vector"] if args.vector else None), args, out)


def _documents_list(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    docs = client.list_documents(args.collection, limit=min(args.limit, 1000))
    items = [d for _, d in zip(range(args.limit), docs, strict=False)]
    if args.json:
        output.print_json(items, out)
    else:
        output.print_table(("id", "metadata"), [[d.id, d.metadata] for d in items], out)
    return output.OK


def _add_documents(sub: Sub) -> None:
    group = _group(sub, "documents", "read documents back from a collection's published index")
    get = _leaf(group, "get", _documents_get, "one document: its text, metadata and index version")
    get.add_argument("collection")
    get.add_argument("id")
    get.add_argument("--vector", action="store_true", help="add the stored vector")
    listing = _leaf(group, "list", _documents_list, "documents' ids and metadata, in id order")
    listing.add_argument("collection")
    listing.add_argument("--limit", type=int, default=100, help="how many (default 100; pages through cursors)")


# --- jobs -------------------------------------------------------------------------------------

_JOB_COLUMNS = ("id", "kind", "collection", "state", "documents", "embedded", "indexed", "created_at")


def _job_rows(jobs: list[Job]) -> list[list[Any]]:
    return [[getattr(j, k) for k in _JOB_COLUMNS] for j in jobs]


def _jobs_list(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    page = client.list_jobs(state=args.state, collection=args.collection, limit=args.limit, cursor=args.cursor)
    if args.json:
        output.print_json(page, out)
    else:
        output.print_table(_JOB_COLUMNS, _job_rows(page.jobs), out)
        if page.next_cursor:
            print(f"(more: --cursor {page.next_cursor})", file=out)
    return output.OK


def _jobs_show(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.get_job(args.job_id), args, out)


def _jobs_wait(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    jobs = client.wait_all(args.job_ids, args.wait_timeout)
    if args.json:
        output.print_json(jobs, out)
    else:
        output.print_table(_JOB_COLUMNS, _job_rows(jobs), out)
    return output.OK if all(j.state.value == "succeeded" for j in jobs) else output.API_ERROR


def _jobs_cancel(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.cancel_job(args.job_id), args, out)


def _jobs_retry(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.retry_job(args.job_id), args, out)


def _add_jobs(sub: Sub) -> None:
    group = _group(sub, "jobs", "list, show, wait for, cancel and retry jobs")
    listing = _leaf(group, "list", _jobs_list, "jobs, newest first")
    listing.add_argument("--state", default=None)
    listing.add_argument("--collection", default=None)
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor", default=None)
    for name, handler, text in (
        ("show", _jobs_show, "one job"),
        ("cancel", _jobs_cancel, "cancel a job that has not finished"),
        ("retry", _jobs_retry, "queue a failed, cancelled or dead job again"),
    ):
        _leaf(group, name, handler, text).add_argument("job_id")
    wait = _leaf(group, "wait", _jobs_wait, "wait until the jobs finished (exit 1 unless all succeeded)")
    wait.add_argument("job_ids", nargs="+")
    wait.add_argument("--wait-timeout", type=float, default=None, help="give up after this many seconds (exit 5)")


# --- queues and dead letters ------------------------------------------------------------------


def _queues(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    stats = client.queues()
    if args.json:
        output.print_json(stats, out)
        return output.OK
    rows = [[name, sum(q.depth.values()), q.delayed, q.in_flight, q.dead, q.oldest_age_seconds, q.workers,
             q.processed_last_minute] for name, q in stats.queues.items()]  # fmt: skip
    headers = ("queue", "depth", "delayed", "in_flight", "dead", "oldest_age_s", "workers", "processed_1m")
    output.print_table(headers, rows, out)
    return output.OK


_LETTER_COLUMNS = ("id", "queue", "op", "collection", "job_id", "attempts", "failed_at", "error")


def _letters_list(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    letters = client.list_dead_letters(queue=args.queue, collection=args.collection, job_id=args.job_id,
                                       limit=args.limit)  # fmt: skip
    if args.json:
        output.print_json(letters, out)
    else:
        output.print_table(_LETTER_COLUMNS, [[getattr(d, k) for k in _LETTER_COLUMNS] for d in letters], out)
    return output.OK


def _letters_show(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.get_dead_letter(args.letter_id), args, out)


def _letters_replay(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.replay_dead_letter(args.letter_id).root, args, out)


def _letters_delete(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    client.delete_dead_letter(args.letter_id)
    if not args.json:
        print(f"dead letter {args.letter_id} deleted", file=out)
    return output.OK


def _add_dead_letters(sub: Sub) -> None:
    _leaf(sub, "queues", _queues, "every work queue's depth, workers and dead letters (admin)")
    group = _group(sub, "dead-letters", "list, show, replay and delete dead letters")
    listing = _leaf(group, "list", _letters_list, "dead letters, newest first")
    listing.add_argument("--queue", default=None)
    listing.add_argument("--collection", default=None)
    listing.add_argument("--job-id", default=None)
    listing.add_argument("--limit", type=int, default=None)
    for name, handler, text in (
        ("show", _letters_show, "one dead letter"),
        ("replay", _letters_replay, "queue its work again (the letter is removed)"),
        ("delete", _letters_delete, "drop a dead letter"),
    ):
        _leaf(group, name, handler, text).add_argument("letter_id")


# --- webhooks ---------------------------------------------------------------------------------

_WEBHOOK_COLUMNS = ("id", "url", "event_types", "disabled", "description")


def _webhooks_list(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    hooks = client.list_webhooks()
    if args.json:
        output.print_json(hooks, out)
    else:
        output.print_table(_WEBHOOK_COLUMNS, [[getattr(w, k) for k in _WEBHOOK_COLUMNS] for w in hooks], out)
    return output.OK


def _webhooks_create(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    hook = client.create_webhook(args.endpoint_url, args.event, description=args.description)
    if args.json:
        output.print_json(hook, out)
    else:
        output.print_record(hook, out)
        print("(the secret is shown only now: keep it to verify deliveries)", file=out)
    return output.OK


def _webhooks_show(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.get_webhook(args.endpoint_id), args, out)


def _webhooks_delete(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    client.delete_webhook(args.endpoint_id)
    if not args.json:
        print(f"webhook {args.endpoint_id} deleted", file=out)
    return output.OK


def _webhooks_test(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.test_webhook(args.endpoint_id), args, out)


def _add_webhooks(sub: Sub) -> None:
    group = _group(sub, "webhooks", "list, create, show, delete and test webhook endpoints")
    _leaf(group, "list", _webhooks_list, "the tenant's webhook endpoints")
    create = _leaf(group, "create", _webhooks_create, "subscribe an endpoint (prints its secret, once)")
    create.add_argument("endpoint_url", metavar="URL")
    create.add_argument("--event", action="append", required=True, metavar="TYPE",
                        help="event type or pattern (job.*, index.published, *); repeatable")  # fmt: skip
    create.add_argument("--description", default=None)
    for name, handler, text in (
        ("show", _webhooks_show, "one endpoint"),
        ("delete", _webhooks_delete, "remove an endpoint"),
        ("test", _webhooks_test, "send it a webhook.test event; prints the delivery"),
    ):
        _leaf(group, name, handler, text).add_argument("endpoint_id")


# --- schedules --------------------------------------------------------------------------------


def _schedules_list(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    items = client.list_schedules()
    if args.json:
        output.print_json(items, out)
    else:
        columns = ("name", "cron", "action", "enabled", "paused", "next_run")
        output.print_table(columns, [[getattr(s, k) for k in columns] for s in items], out)
    return output.OK


def _schedules_act(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    act = {"trigger": client.trigger_schedule, "pause": client.pause_schedule, "resume": client.resume_schedule}
    return _show(act[args.action](args.name), args, out)


def _add_schedules(sub: Sub) -> None:
    group = _group(sub, "schedules", "list, trigger, pause and resume schedules (admin)")
    _leaf(group, "list", _schedules_list, "every schedule with its next and last run")
    for name in ("trigger", "pause", "resume"):
        _leaf(group, name, _schedules_act, f"{name} a schedule").add_argument("name")


def add_commands(sub: Sub) -> None:
    """Add the API commands (but ``ingest``) to the ``semaflow`` command."""
    _add_collections(sub)
    _add_search(sub)
    _add_documents(sub)
    _add_jobs(sub)
    _add_dead_letters(sub)
    _add_webhooks(sub)
    _add_schedules(sub)


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run the API command the arguments name."""
    with connection.client(args) as client:
        code: int = args.handler(client, args, out)
        return code
