"""The ``Idempotency-Key`` request header (draft-ietf-httpapi-idempotency-key-header) on ``POST /v1`` routes.

A tenant's first request with a key claims it in Redis, runs, and has its answer stored; the same
request again gets that answer replayed, a different request with the key gets 422, and a repeat
while the first still runs gets 409. Server errors are not stored, so the client may retry them.

A secret shown once (an API key, a webhook signing secret) is never stored: a handler names the
answer's secret fields with :func:`withhold_on_replay`, the stored answer has them null, and its
replay says so in the ``Idempotent-Secret-Withheld`` header.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import redis.exceptions
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from services.gateway.appkeys import IDEMPOTENT_REQUEST, PRINCIPAL, REDIS, SETTINGS
from services.gateway.http.bodies import read_bytes
from services.gateway.http.declarations import endpoint_of
from services.gateway.http.problems import REDIS_DOWN, error_response, problem
from shared import keys, scripts
from shared.constants import IDEMPOTENCY_LOCK_TTL_S
from shared.records.apikeys import Role

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = structlog.get_logger(__name__)

HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
WITHHELD_HEADER: Final = "Idempotent-Secret-Withheld"
MAX_KEY_LENGTH: Final = 255


_VALID_KEY: Final = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")
# Headers that are part of the answer, replayed with the status and the body.
_KEPT_HEADERS: Final = ("Content-Type", "Content-Location", "Location", "Retry-After", "Allow")
# The response's own entry naming the body's top-level fields that hold a secret shown only once.
_SECRET_FIELDS: Final = web.ResponseKey("idempotency_secret_fields", tuple)

# Claims a key unless a record is there (which it answers); stores the answer while the claim is this
# request's; frees the key while the claim is this request's.
_CLAIM: Final = scripts.get("idempotency_claim")
_COMPLETE: Final = scripts.get("idempotency_complete")
_RELEASE: Final = scripts.get("idempotency_release")
_RENEW: Final = scripts.get("idempotency_renew")


@dataclass(frozen=True)
class Answer:
    """A stored response: what a repeated request gets back."""

    status: int
    headers: dict[str, str]
    body: bytes

    def response(self) -> web.Response:
        """The response to replay, marked as a replay."""
        response = web.Response(status=self.status, body=self.body, headers=self.headers)
        response.headers[REPLAYED_HEADER] = "true"
        return response


@dataclass(frozen=True)
class Record:
    """What Redis holds for a key: the first request's fingerprint, and its answer once it has one."""

    fingerprint: str
    answer: Answer | None


def fingerprint(method: str, target: str, body: bytes) -> str:
    """SHA-256 hex of a request's method, target (path and query string) and body."""
    return hashlib.sha256(f"{method} {target}\n".encode() + body).hexdigest()


async def claim(
    client: aioredis.Redis, tenant: str, key: str, fingerprint: str, token: str, *, lock_ttl_s: int
) -> Record | None:
    """Claim ``key`` for a request, atomically; None when claimed, else the record already there."""
    found = await _CLAIM.arun(client, [keys.idempotency(tenant, key)], [fingerprint, token, lock_ttl_s])
    if found is None:
        return None
    stored_print, status, headers, body = found
    answer = None
    if status is not None:
        answer = Answer(int(status), json.loads(headers), bytes(body))
    return Record(keys.text(stored_print), answer)


async def complete(client: aioredis.Redis, tenant: str, key: str, token: str, answer: Answer, *, ttl_s: int) -> bool:
    """Store the answer of the request holding the claim ``token``; False if it no longer holds it."""
    stored = await _COMPLETE.arun(
        client,
        [keys.idempotency(tenant, key)],
        [token, ttl_s, answer.status, json.dumps(answer.headers), answer.body],
    )
    return bool(stored == 1)


async def renew(client: aioredis.Redis, tenant: str, key: str, token: str, *, ttl_s: int) -> bool:
    """Extend the claim ``token`` holds by ``ttl_s`` from now; False if it no longer holds it."""
    return bool(await _RENEW.arun(client, [keys.idempotency(tenant, key)], [token, ttl_s]) == 1)


async def _keep_claimed(client: aioredis.Redis, tenant: str, key: str, token: str) -> None:
    """Renew a claim every third of its TTL while its request runs (cancelled when it ends).

    The claim is short, so a request whose gateway died frees its key within that TTL; a request
    that runs longer keeps it for as long as it runs.
    """
    while True:
        await asyncio.sleep(IDEMPOTENCY_LOCK_TTL_S / 3)
        try:
            if not await renew(client, tenant, key, token, ttl_s=IDEMPOTENCY_LOCK_TTL_S):
                return
        except redis.exceptions.RedisError as exc:
            log.warning("idempotency.renew_failed", tenant=tenant, error=str(exc))


async def release(client: aioredis.Redis, tenant: str, key: str, token: str) -> bool:
    """Forget the claim ``token`` holds, so the key may be used again; False if it no longer holds it."""
    released = await _RELEASE.arun(client, [keys.idempotency(tenant, key)], [token])
    return bool(released == 1)


def withhold_on_replay(response: web.Response, *fields: str) -> web.Response:
    """Mark the JSON body's top-level ``fields`` as secrets shown once: a stored answer holds them as null."""
    response[_SECRET_FIELDS] = fields
    return response


def unquote_key(value: str) -> str:
    """The key itself: the draft sends it as a structured-field string (``"abc"``); bare ``abc`` is accepted too."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


@web.middleware
async def idempotency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Honour ``Idempotency-Key`` on ``POST /v1`` routes; requests without it pass straight through."""
    if request.method != "POST" or not request.path.startswith("/v1/") or HEADER not in request.headers:
        return await handler(request)
    values = request.headers.getall(HEADER)
    if len(values) != 1 or not _VALID_KEY.fullmatch(values[0]):
        return problem(
            400, f"The {HEADER} header must be one value of 1 to {MAX_KEY_LENGTH} printable ASCII characters."
        )
    key = unquote_key(values[0])
    tenant = request[PRINCIPAL].tenant
    client = request.app[REDIS]
    request_print = fingerprint(request.method, request.raw_path, await read_bytes(request))
    token = secrets.token_hex(16)
    try:
        found = await claim(client, tenant, key, request_print, token, lock_ttl_s=IDEMPOTENCY_LOCK_TTL_S)
    except REDIS_DOWN:
        endpoint = endpoint_of(request)
        if endpoint is None or endpoint.role is not Role.READER:
            raise
        # A reader's POST (a search) changes nothing: answered again rather than refused while Redis is away.
        return await handler(request)
    if found is None:
        request[IDEMPOTENT_REQUEST] = hashlib.sha256(f"{tenant}\n{key}\n{request_print}".encode()).hexdigest()
        return await _run_claimed(request, handler, tenant, key, token)
    if found.fingerprint != request_print:
        return problem(
            422, f"This {HEADER} was already used with a different request (method, path or body); use a new key."
        )
    if found.answer is None:
        busy = problem(409, f"A request with this {HEADER} is still being processed; retry once it has finished.")
        # A client retrying on its own (the SDK) waits this long and sends the request again.
        busy.headers["Retry-After"] = "1"
        return busy
    log.info("idempotency.replayed", tenant=tenant, path=request.path, status=found.answer.status)
    return found.answer.response()


async def _run_claimed(request: web.Request, handler: Handler, tenant: str, key: str, token: str) -> web.StreamResponse:
    """Run the handler for a claimed key; store its answer, or free the key when there is none to keep."""
    client = request.app[REDIS]
    keeper = asyncio.create_task(_keep_claimed(client, tenant, key, token), name="idempotency-claim")
    try:
        response = await handler(request)
    except Exception as exc:
        # Rendered here rather than by the outer problems middleware, so that a 4xx is stored too.
        rendered = error_response(request, exc)
        if rendered is None:
            await _release_quietly(client, tenant, key, token)
            raise
        response = rendered
    except BaseException:
        await _release_quietly(client, tenant, key, token)
        raise
    finally:
        keeper.cancel()
    answer = _answer(response)
    if answer is None:
        await _release_quietly(client, tenant, key, token)
        return response
    try:
        if not await complete(client, tenant, key, token, answer, ttl_s=request.app[SETTINGS].idempotency_ttl_s):
            log.warning("idempotency.claim_lost", tenant=tenant, path=request.path)
    except redis.exceptions.RedisError as exc:
        # The work is done: answer it. The claim expires on its own, and a retry then runs again.
        log.warning("idempotency.store_failed", tenant=tenant, path=request.path, error=str(exc))
    return response


def _answer(response: web.StreamResponse) -> Answer | None:
    """What to store of a response; None for a server error (the client may retry) or a streamed body."""
    if response.status >= 500 or response.prepared or not isinstance(response, web.Response):
        return None
    body = response.body if response.body is not None else b""
    if not isinstance(body, bytes | bytearray):
        return None
    headers = {name: response.headers[name] for name in _KEPT_HEADERS if name in response.headers}
    secret_fields: tuple[str, ...] = response.get(_SECRET_FIELDS, ())
    if not secret_fields:
        return Answer(response.status, headers, bytes(body))
    try:
        document = json.loads(body)
    except ValueError:
        return None  # a secret it cannot take out: not stored at all
    if not isinstance(document, dict):
        return None
    withheld = [name for name in secret_fields if document.get(name) is not None]
    for name in withheld:
        document[name] = None
    if withheld:
        headers[WITHHELD_HEADER] = ", ".join(withheld)
    return Answer(response.status, headers, json.dumps(document, separators=(",", ":")).encode())


async def _release_quietly(client: aioredis.Redis, tenant: str, key: str, token: str) -> None:
    try:
        await release(client, tenant, key, token)
    except redis.exceptions.RedisError as exc:
        # The claim's lock TTL frees the key anyway.
        log.warning("idempotency.release_failed", tenant=tenant, error=str(exc))
