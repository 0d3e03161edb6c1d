"""The SDK's errors: every problem document the API answers with becomes one of these, by its status."""

from __future__ import annotations

import json
from typing import Any, Final

from shared.api.schemas import Problem, ProblemField


class SemaflowError(Exception):
    """An error answer of the semaflow API (an RFC 9457 problem document), or no answer at all."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        type: str = "about:blank",
        problem: Problem | None = None,
        retry_after: float | None = None,
    ) -> None:
        message = f"{status} {title}: {detail}" if status else detail
        if problem is not None and problem.errors:
            message += " (" + "; ".join(f"{e.pointer}: {e.detail}" for e in problem.errors) + ")"
        super().__init__(message)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.problem = problem
        self.retry_after = retry_after


class BadRequest(SemaflowError):
    """400: the request was malformed (bad JSON, a bad header)."""


class Unauthorized(SemaflowError):
    """401: the API key is missing or unknown."""


class Forbidden(SemaflowError):
    """403: the API key's role does not allow this route."""


class NotFound(SemaflowError):
    """404: no such collection, job, letter or webhook (or another tenant's)."""


class Conflict(SemaflowError):
    """409: the request conflicts with the resource's state (a finished job cancelled, say)."""


class PayloadTooLarge(SemaflowError):
    """413: the body or the batch is too large."""


class ValidationFailed(SemaflowError):
    """422: invalid fields; ``errors`` points at each one."""

    @property
    def errors(self) -> list[ProblemField]:
        """Each invalid field: its JSON pointer, what is wrong, and the error's type."""
        return list(self.problem.errors or []) if self.problem is not None else []


class RateLimited(SemaflowError):
    """429: a rate limit is spent; ``retry_after`` says for how many seconds."""


class Unavailable(SemaflowError):
    """503 (a dependency is down), or the gateway could not be reached at all (status 0)."""


class ServerError(SemaflowError):
    """Any other 5xx answer."""


class Timeout(SemaflowError):
    """A wait ran out of time before the job finished (status 0: no error answer)."""


_BY_STATUS: Final[dict[int, type[SemaflowError]]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    503: Unavailable,
}


def from_response(status: int, body: bytes, retry_after: float | None) -> SemaflowError:
    """The error of an answer with an error ``status``: its problem document when it carries one."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else SemaflowError)
    problem = _problem(body)
    if problem is None:
        text = body.decode(errors="replace").strip()[:500]
        return cls(status, f"HTTP {status}", text or "no detail", retry_after=retry_after)
    return cls(status, problem.title, problem.detail, type=problem.type, problem=problem, retry_after=retry_after)


def _problem(body: bytes) -> Problem | None:
    try:
        data: Any = json.loads(body)
        return Problem.model_validate(data)
    except ValueError:
        return None
