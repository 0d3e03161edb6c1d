"""A key of one tenant can never read, search, change or learn of another tenant's resources.

The test walks the app's router: every ``/v1`` route, each path parameter filled with an id of the
other tenant's resource. Routes added later are walked automatically; a new kind of path parameter
or request body needs an entry in ``FOREIGN`` or ``BODIES`` below (the test says so).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from aiohttp import web

from services.gateway.http.declarations import ENDPOINTS, UNDECLARED, Endpoint, Scope
from shared.api.schemas import (
    CollectionCreate,
    DeadLetterReplayRequest,
    IngestRequest,
    JobBulkRequest,
    KeyCreateRequest,
    RollbackRequest,
    SearchRequest,
)
from shared.api.webhooks import ReplayRequest, TenantUpdate, WebhookCreate, WebhookUpdate
from shared.messaging.workqueue import Entry, Priority
from shared.records import apikeys, deadletters, jobs
from shared.records.apikeys import Role
from shared.records.ratelimits import QuotaOverrides
from tests.integration.gateway.conftest import Api

OWNER = "globex"
COLLECTION = "plans-2027"
DOCUMENT = "d1"
HOOK = "https://hooks.globex.example/in"


@dataclass
class Foreign:
    """The other tenant's resources and its key."""

    key: str
    key_id: str
    job_id: str
    letter_id: str
    webhook_id: str
    delivery_id: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def identifiers(self) -> list[str]:
        """Strings that must never appear in an answer to the other tenant."""
        return [OWNER, COLLECTION, self.job_id, self.letter_id, self.key_id, self.webhook_id, self.delivery_id, HOOK]


# A foreign id for each path parameter, by name. A route with a parameter missing here fails the
# test until one is added (with whatever the fixture must create for it).
FOREIGN: dict[str, Callable[[Foreign], str]] = {
    "name": lambda f: COLLECTION,
    "doc_id": lambda f: DOCUMENT,
    "job_id": lambda f: f.job_id,
    "letter_id": lambda f: f.letter_id,
    "key_id": lambda f: f.key_id,
    "tenant": lambda f: OWNER,
    "endpoint_id": lambda f: f.webhook_id,
    "delivery_id": lambda f: f.delivery_id,
    "schedule": lambda f: "stats",  # schedules are cluster-wide: only the admin-only check applies
}

# A valid body for each request model, aimed at the other tenant's resources where it names any.
BODIES: dict[type[Any], dict[str, Any]] = {
    CollectionCreate: {"quantization": "none"},
    IngestRequest: {"documents": [{"id": DOCUMENT, "text": "overwritten by a stranger"}]},
    SearchRequest: {"vector": [1.0] + [0.0] * 383, "k": 5},
    JobBulkRequest: {"collection": COLLECTION},
    DeadLetterReplayRequest: {"collection": COLLECTION},
    KeyCreateRequest: {"tenant": "acme", "role": "reader"},
    QuotaOverrides: {"per_hour": 1000},
    WebhookCreate: {"url": "https://hooks.acme.example/in", "event_types": ["*"]},
    WebhookUpdate: {"description": "taken over"},
    ReplayRequest: {"since": "2020-01-01T00:00:00Z"},
    TenantUpdate: {"contact_email": "intruder@acme.example"},
    RollbackRequest: {"version": "0000000001-0123456789abcdef"},
}

# Routes whose right answer to a foreign name is not 404: creating a collection of that name makes
# the caller's own (names are per tenant), exactly as if the other tenant's did not exist.
OWN_NAMESPACE: dict[tuple[str, str], int] = {("PUT", "/v1/collections/{name}"): 201}


@pytest.fixture
async def foreign(api: Api, redis_client: redis.Redis) -> Foreign:
    """Tenant globex with a collection holding a document (its job queued), a dead letter, and a
    webhook with a delivery (a test event).
    """
    key = apikeys.new_key()
    record = apikeys.store(redis_client, key, OWNER, Role.ADMIN)
    auth = {"Authorization": f"Bearer {key}"}
    assert (await api.client.put(f"/v1/collections/{COLLECTION}", headers=auth)).status == 201
    resp = await api.client.post(
        f"/v1/collections/{COLLECTION}/documents",
        json={"documents": [{"id": DOCUMENT, "text": "globex's plans"}]},
        headers=auth,
    )
    assert resp.status == 202
    job_id = (await resp.json())["job_id"]
    entry = Entry("job_dead", OWNER, Priority.NORMAL, {"op": "embed_batch", "collection": COLLECTION}, 0)
    letter = deadletters.record(redis_client, "embed", entry, error="boom", attempts=3, retention_s=3600)
    resp = await api.client.post("/v1/webhooks", json={"url": HOOK, "event_types": ["job.*"]}, headers=auth)
    assert resp.status == 201, await resp.text()
    webhook_id = (await resp.json())["id"]
    resp = await api.client.post(f"/v1/webhooks/{webhook_id}/test", headers=auth)
    assert resp.status == 202, await resp.text()
    return Foreign(key, record.id, job_id, letter.id, webhook_id, (await resp.json())["id"])


def _declarations(app: web.Application) -> list[Endpoint]:
    """Every /v1 route of the router with its declaration; an undeclared one fails the test."""
    found: dict[tuple[str, str], Endpoint] = {}
    for route in app.router.routes():
        info = route.resource.canonical if route.resource is not None else ""
        if not info.startswith("/v1/") or route.method == "HEAD":
            continue
        endpoint = app[ENDPOINTS].get(route)
        assert endpoint is not None and endpoint is not UNDECLARED, f"{route.method} {info} is not declared"
        found[(endpoint.method, endpoint.path)] = endpoint
    assert len(found) >= 19, sorted(found)
    return list(found.values())


def _path(endpoint: Endpoint, foreign: Foreign) -> str:
    path = endpoint.path
    for param in endpoint.path_params:
        if param not in FOREIGN:
            pytest.fail(f"{endpoint.method} {endpoint.path}: add a foreign id for {{{param}}} to FOREIGN")
        path = path.replace(f"{{{param}}}", FOREIGN[param](foreign))
    return path


def _body(endpoint: Endpoint) -> dict[str, Any] | None:
    if endpoint.body is None:
        return None
    if endpoint.body not in BODIES:
        pytest.fail(f"{endpoint.method} {endpoint.path}: add a sample {endpoint.body.__name__} to BODIES")
    return BODIES[endpoint.body]


Call = Callable[[Endpoint, dict[str, str]], Awaitable[tuple[int, str]]]


@pytest.fixture
def call(api: Api, foreign: Foreign) -> Call:
    async def send(endpoint: Endpoint, auth: dict[str, str]) -> tuple[int, str]:
        resp = await api.client.request(endpoint.method, _path(endpoint, foreign), json=_body(endpoint), headers=auth)
        return resp.status, await resp.text()

    return send


async def test_every_route_answers_404_to_a_foreign_id_and_leaks_nothing(
    api: Api, foreign: Foreign, call: Call, redis_client: redis.Redis
) -> None:
    endpoints = _declarations(api.client.app)
    tenant_routes = [e for e in endpoints if e.scope is Scope.TENANT]
    walked_with_ids = 0
    for endpoint in sorted(tenant_routes, key=lambda e: (e.method, e.path) in OWN_NAMESPACE):
        status, text = await call(endpoint, api.auth)  # acme's admin key: no role check stands in the way
        where = f"{endpoint.method} {endpoint.path} -> {status}: {text[:300]}"
        if endpoint.path_params:
            walked_with_ids += 1
            assert status == OWN_NAMESPACE.get((endpoint.method, endpoint.path), 404), where
        else:
            assert status < 500, where
        if status != 404:
            leaked = [i for i in foreign.identifiers() if i in text and not _own_echo(endpoint, i)]
            assert not leaked, where
    assert walked_with_ids >= 10

    # The other tenant's resources are as they were.
    assert (await api.client.get(f"/v1/collections/{COLLECTION}", headers=foreign.auth)).status == 200
    job = jobs.get(redis_client, foreign.job_id)
    assert job is not None and job.state is jobs.JobState.QUEUED
    letter = await api.client.get(f"/v1/dead-letters/{foreign.letter_id}", headers=foreign.auth)
    assert letter.status == 200
    hook = await (await api.client.get(f"/v1/webhooks/{foreign.webhook_id}", headers=foreign.auth)).json()
    assert hook["description"] == "" and hook["url"] == HOOK
    delivery = await api.client.get(f"/v1/deliveries/{foreign.delivery_id}", headers=foreign.auth)
    assert delivery.status == 200
    tenant = await (await api.client.get("/v1/tenant", headers=foreign.auth)).json()
    assert tenant == {"name": OWNER, "contact_email": None}


def _own_echo(endpoint: Endpoint, identifier: str) -> bool:
    """An answer may name what the caller itself sent: its own new collection of the same name."""
    return (endpoint.method, endpoint.path) in OWN_NAMESPACE and identifier == COLLECTION


async def test_operator_routes_are_for_admin_keys_only(
    api: Api, foreign: Foreign, call: Call, redis_client: redis.Redis
) -> None:
    writer = apikeys.new_key()
    apikeys.store(redis_client, writer, "acme", Role.WRITER)
    cluster = [e for e in _declarations(api.client.app) if e.scope is Scope.CLUSTER]
    assert {e.path for e in cluster} >= {"/v1/queues", "/v1/keys", "/v1/keys/{key_id}"}
    for endpoint in cluster:
        assert endpoint.role is Role.ADMIN
        status, text = await call(endpoint, {"Authorization": f"Bearer {writer}"})
        assert status == 403, f"{endpoint.method} {endpoint.path} -> {status}: {text[:200]}"
        assert not any(i in text for i in foreign.identifiers())


def test_bodies_table_is_valid() -> None:
    for model, body in BODIES.items():
        model.model_validate(json.loads(json.dumps(body)))
