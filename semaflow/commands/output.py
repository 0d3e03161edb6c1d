"""How the API commands answer: tables for people, JSON for scripts, and exit codes by what went wrong.

Exit codes: 0 done; 1 the API refused or a job failed; 2 bad usage (arguments, input files, configuration);
3 not found; 4 not allowed (401 unauthorised, 403 forbidden); 5 unavailable (no answer, 503, 429 past the
retries, a wait that ran out of time); 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TextIO

from pydantic import BaseModel

from semaflow.client import errors
from shared.errors import ConfigurationError

OK: Final = 0
API_ERROR: Final = 1
USAGE: Final = 2
NOT_FOUND: Final = 3
AUTH: Final = 4
UNAVAILABLE: Final = 5
INTERRUPTED: Final = 130


class UsageError(Exception):
    """Bad input from the command line or its files (exit code 2)."""


def exit_code(exc: BaseException) -> int:
    """The exit code a failure stands for."""
    if isinstance(exc, errors.NotFound):
        return NOT_FOUND
    if isinstance(exc, errors.Unauthorized | errors.Forbidden):
        return AUTH
    if isinstance(exc, errors.Unavailable | errors.RateLimited | errors.Timeout):
        return UNAVAILABLE
    if isinstance(exc, UsageError | ConfigurationError):
        return USAGE
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    return API_ERROR


def guarded(run: Callable[[], int], err: TextIO = sys.stderr) -> int:
    """Run a command; an error is printed (one line, with each invalid field) and becomes its exit code."""
    try:
        return run()
    except (errors.SemaflowError, UsageError, ConfigurationError) as exc:
        print(f"semaflow: {exc}", file=err)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("semaflow: interrupted", file=err)
        return INTERRUPTED


def plain(value: Any) -> Any:
    """A model (or a list of them) as JSON-ready data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def print_json(value: Any, out: TextIO = sys.stdout) -> None:
    """Print ``value`` as indented JSON."""
    print(json.dumps(plain(value), indent=2, default=str), file=out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(plain(value), default=str, separators=(",", ":"))
    return str(getattr(value, "value", value))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO = sys.stdout) -> None:
    """Print rows under headers, in aligned columns."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


def print_record(value: BaseModel | dict[str, Any], out: TextIO = sys.stdout) -> None:
    """Print one record as ``field: value`` lines."""
    data = plain(value)
    width = max((len(k) for k in data), default=0)
    for key, item in data.items():
        print(f"{key.ljust(width)}  {_cell(item)}", file=out)
