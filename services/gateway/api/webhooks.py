"""HTTP routes of webhooks, their deliveries, and the tenant profile (where notification mail goes)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web
from pydantic import ValidationError

from services.gateway.appkeys import REDIS, SETTINGS, SUBSCRIPTIONS
from services.gateway.http.auth import tenant_of
from services.gateway.http.bodies import read_body
from services.gateway.http.declarations import Endpoints, links_to
from services.gateway.http.idempotency import withhold_on_replay
from services.gateway.http.problems import problem, validation_problem
from services.gateway.http.responses import model_response
from shared.api.schemas import Matched
from shared.api.webhooks import (
    DeliveryListQuery,
    DeliveryPage,
    ReplayRequest,
    TenantUpdate,
    Webhook,
    WebhookCreate,
    WebhookDelivery,
    WebhookList,
    WebhookUpdate,
    WebhookWithSecret,
)
from shared.errors import InvalidInput
from shared.records import tenants
from shared.records.apikeys import Role
from shared.records.ratelimits import Category
from shared.records.tenants import TenantProfile
from shared.webhooks import endpoints
from shared.webhooks.endpoints import Endpoint

webhook_routes = Endpoints("webhooks")
# What a client does next with an endpoint it created, and with a delivery.
_WEBHOOK_LINKS: Final = links_to(
    "get_webhook",
    "update_webhook",
    "delete_webhook",
    "rotate_secret",
    "test_webhook",
    "list_deliveries",
    "replay_webhook",
    endpoint_id="$response.body#/id",
)
_DELIVERY_LINKS: Final = links_to("get_delivery", "retry_delivery", delivery_id="$response.body#/id")


def _refused(exc: InvalidInput) -> web.Response:
    return problem(
        422,
        "The webhook URL cannot be used.",
        errors=[{"pointer": "/url", "detail": str(exc), "type": "url_refused"}],
    )


async def _endpoint(request: web.Request) -> Endpoint:
    return await request.app[SUBSCRIPTIONS].endpoint(tenant_of(request), request.match_info["endpoint_id"])


def _with_secret(endpoint: Endpoint, secret: str) -> dict[str, Any]:
    return {**endpoint.public(), "secret": secret}


@webhook_routes.post(
    "/v1/webhooks",
    role=Role.WRITER,
    limit=Category.SINGLE,
    body=WebhookCreate,
    responses={201: WebhookWithSecret},
    links={201: _WEBHOOK_LINKS},
)
async def create_webhook(request: web.Request) -> web.Response:
    """Subscribe a URL to event types; the answer carries its signing secret, shown this once.

    The secret is never kept anywhere it could be shown again: a replay of this request with the same
    `Idempotency-Key` answers 201 with the endpoint but `secret` null, and the header
    `Idempotent-Secret-Withheld: secret`. A client that lost the first answer rotates the secret.
    """
    body = await read_body(request, WebhookCreate)
    try:
        endpoint, secret = await request.app[SUBSCRIPTIONS].create(
            tenant_of(request), body.url, tuple(body.event_types), body.description, disabled=body.disabled
        )
    except InvalidInput as exc:
        return _refused(exc)
    response = web.json_response(_with_secret(endpoint, secret), status=201)
    response.headers["Location"] = f"/v1/webhooks/{endpoint.id}"
    return withhold_on_replay(response, "secret")


@webhook_routes.get("/v1/webhooks", role=Role.READER, limit=Category.SINGLE, responses={200: WebhookList})
async def list_webhooks(request: web.Request) -> web.Response:
    """The tenant's endpoints (without secrets)."""
    found = await endpoints.list_for(request.app[REDIS], tenant_of(request))
    return web.json_response({"webhooks": [e.public() for e in found]})


@webhook_routes.get("/v1/webhooks/{endpoint_id}", role=Role.READER, limit=Category.SINGLE, responses={200: Webhook})
async def get_webhook(request: web.Request) -> web.Response:
    """One endpoint: URL, event types, whether (and why) it is disabled."""
    return web.json_response((await _endpoint(request)).public())


@webhook_routes.patch(
    "/v1/webhooks/{endpoint_id}", role=Role.WRITER, limit=Category.SINGLE, body=WebhookUpdate, responses={200: Webhook}
)
async def update_webhook(request: web.Request) -> web.Response:
    """Change an endpoint; ``{"disabled": false}`` enables it again and resumes its waiting deliveries."""
    endpoint = await _endpoint(request)
    body = await read_body(request, WebhookUpdate)
    changes = body.model_dump(exclude_none=True)
    if "event_types" in changes:
        changes["event_types"] = tuple(changes["event_types"])
    try:
        updated = await request.app[SUBSCRIPTIONS].update(endpoint, changes)
    except InvalidInput as exc:
        return _refused(exc)
    return web.json_response(updated.public())


@webhook_routes.delete("/v1/webhooks/{endpoint_id}", role=Role.WRITER, limit=Category.SINGLE, responses={204: None})
async def delete_webhook(request: web.Request) -> web.Response:
    """Remove an endpoint; its waiting deliveries are dropped."""
    await endpoints.delete(request.app[REDIS], await _endpoint(request))
    return web.Response(status=204)


@webhook_routes.post(
    "/v1/webhooks/{endpoint_id}/rotate-secret",
    role=Role.WRITER,
    limit=Category.SINGLE,
    responses={200: WebhookWithSecret},
)
async def rotate_secret(request: web.Request) -> web.Response:
    """A new signing secret (shown this once); the previous one keeps signing during the grace period.

    A replay of this request with the same `Idempotency-Key` rotates nothing and answers the endpoint
    with `secret` null and the header `Idempotent-Secret-Withheld: secret`: the secret is never stored.
    """
    grace = request.app[SETTINGS].webhook_secret_grace_s
    rotated, secret = await endpoints.rotate_secret(request.app[REDIS], await _endpoint(request), grace_s=grace)
    return withhold_on_replay(web.json_response(_with_secret(rotated, secret)), "secret")


@webhook_routes.post(
    "/v1/webhooks/{endpoint_id}/test",
    role=Role.WRITER,
    limit=Category.SINGLE,
    responses={202: WebhookDelivery},
    links={202: _DELIVERY_LINKS},
)
async def test_webhook(request: web.Request) -> web.Response:
    """Send a ``webhook.test`` event to this endpoint; answers with its delivery."""
    delivery, _event_id = await request.app[SUBSCRIPTIONS].send_test(await _endpoint(request))
    return web.json_response(delivery.public(attempts=[]), status=202)


@webhook_routes.get(
    "/v1/webhooks/{endpoint_id}/deliveries",
    role=Role.READER,
    limit=Category.SINGLE,
    query=DeliveryListQuery,
    responses={200: DeliveryPage},
)
async def list_deliveries(request: web.Request) -> web.Response:
    """The endpoint's deliveries, newest first, each with its attempts; cursor pagination."""
    endpoint = await _endpoint(request)
    try:
        q = DeliveryListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        return validation_problem(exc, root="query")
    found, cursor = await request.app[SUBSCRIPTIONS].deliveries.scan(
        endpoint.id, limit=q.limit, cursor=q.cursor, state=q.state, event_type=q.event_type
    )
    return web.json_response({"deliveries": [d.public(tries) for d, tries in found], "next_cursor": cursor})


@webhook_routes.post(
    "/v1/webhooks/{endpoint_id}/replay",
    role=Role.WRITER,
    limit=Category.BULK,
    body=ReplayRequest,
    responses={202: Matched},
)
async def replay_webhook(request: web.Request) -> web.Response:
    """Send the endpoint again every stored event it subscribes to from ``since`` (recovery after an outage)."""
    endpoint = await _endpoint(request)
    body = await read_body(request, ReplayRequest)
    matched = await request.app[SUBSCRIPTIONS].replay(endpoint, body.since, body.until)
    return model_response(Matched(matched=matched), 202)


@webhook_routes.get(
    "/v1/deliveries/{delivery_id}", role=Role.READER, limit=Category.SINGLE, responses={200: WebhookDelivery}
)
async def get_delivery(request: web.Request) -> web.Response:
    """One delivery and every attempt: time, status, latency, the first kilobyte of the answer."""
    subscriptions = request.app[SUBSCRIPTIONS]
    delivery = await subscriptions.delivery(tenant_of(request), request.match_info["delivery_id"])
    return web.json_response(delivery.public(await subscriptions.deliveries.attempts(delivery.id)))


@webhook_routes.post(
    "/v1/deliveries/{delivery_id}/retry", role=Role.WRITER, limit=Category.SINGLE, responses={202: WebhookDelivery}
)
async def retry_delivery(request: web.Request) -> web.Response:
    """Send a delivery again now, with a fresh set of attempts."""
    subscriptions = request.app[SUBSCRIPTIONS]
    delivery = await subscriptions.delivery(tenant_of(request), request.match_info["delivery_id"])
    retried = await subscriptions.retry(delivery)
    return web.json_response(retried.public(await subscriptions.deliveries.attempts(delivery.id)), status=202)


@webhook_routes.get("/v1/tenant", role=Role.READER, limit=Category.SINGLE, responses={200: TenantProfile})
async def get_tenant(request: web.Request) -> web.Response:
    """The key's tenant and its contact address."""
    return model_response(await tenants.get(request.app[REDIS], tenant_of(request)))


@webhook_routes.patch(
    "/v1/tenant", role=Role.WRITER, limit=Category.SINGLE, body=TenantUpdate, responses={200: TenantProfile}
)
async def update_tenant(request: web.Request) -> web.Response:
    """Set where the tenant's notification mail (failed jobs, webhooks that gave up, the weekly digest) goes."""
    body = await read_body(request, TenantUpdate)
    return model_response(await tenants.set_contact(request.app[REDIS], tenant_of(request), body.contact_email))
