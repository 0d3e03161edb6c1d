"""API keys over /v1/keys (admin only), shown once and stored as hashes; roles limit what a key may call."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from shared import keys
from shared.records import apikeys
from shared.records.apikeys import Role
from tests.integration.gateway.conftest import Api


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _json(resp: Any, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json(content_type=None)


def _everything(client: redis.Redis) -> bytes:
    """Every key name and value in Redis, concatenated."""
    out = []
    for name in client.scan_iter():
        out.append(name)
        kind = client.type(name)
        if kind == b"string":
            out.append(client.get(name) or b"")
        elif kind == b"hash":
            out += [b for pair in client.hgetall(name).items() for b in pair]
        elif kind == b"set":
            out += list(client.smembers(name))
    return b"\n".join(out)


async def _create(api: Api, tenant: str, role: str, **extra: Any) -> dict[str, Any]:
    resp = await api.client.post("/v1/keys", json={"tenant": tenant, "role": role, **extra}, headers=api.auth)
    created: dict[str, Any] = await _json(resp, 201)
    return created


async def test_an_admin_creates_a_key_that_is_shown_once_and_stored_only_as_a_hash(
    api: Api, redis_client: redis.Redis
) -> None:
    created = await _create(api, "globex", "reader", name="reporting")
    key = created["key"]
    assert key.startswith("sf_") and created["id"].startswith("key_")
    assert (created["tenant"], created["role"], created["name"]) == ("globex", "reader", "reporting")

    # The secret is nowhere in Redis; only its SHA-256 is.
    assert key.encode() not in _everything(redis_client)
    assert redis_client.exists(keys.api_key(apikeys.hash_key(key)))

    listed = await _json(await api.client.get("/v1/keys?tenant=globex", headers=api.auth), 200)
    assert [k["id"] for k in listed["keys"]] == [created["id"]]
    assert "key" not in listed["keys"][0]
    one = await _json(await api.client.get(f"/v1/keys/{created['id']}", headers=api.auth), 200)
    assert "key" not in one and one["tenant"] == "globex"

    # The new key works, for its own tenant.
    assert (await api.client.get("/v1/collections", headers=_auth(key))).status == 200


async def test_a_revoked_key_stops_working_at_once(api: Api) -> None:
    created = await _create(api, "globex", "writer")
    assert (await api.client.get("/v1/collections", headers=_auth(created["key"]))).status == 200
    assert (await api.client.delete(f"/v1/keys/{created['id']}", headers=api.auth)).status == 204
    assert (await api.client.get("/v1/collections", headers=_auth(created["key"]))).status == 401
    assert (await api.client.delete(f"/v1/keys/{created['id']}", headers=api.auth)).status == 404
    listed = await _json(await api.client.get("/v1/keys", headers=api.auth), 200)
    assert created["id"] not in [k["id"] for k in listed["keys"]]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"tenant": "Not A Tenant", "role": "reader"}, "/tenant"),
        ({"tenant": "globex", "role": "superuser"}, "/role"),
        ({"role": "reader"}, "/tenant"),
        ({"tenant": "globex", "secret": "x"}, "/secret"),
    ],
)
async def test_invalid_key_requests_are_422(api: Api, body: dict[str, Any], pointer: str) -> None:
    problem = await _json(await api.client.post("/v1/keys", json=body, headers=api.auth), 422)
    assert any(e["pointer"] == pointer for e in problem["errors"]), problem


# Every route a reader may call answers it; writes and operator routes answer 403.
READER_ALLOWED: list[tuple[str, str, Any]] = [
    ("GET", "/v1/collections", None),
    ("GET", "/v1/collections/docs", None),
    ("POST", "/v1/collections/docs/search", {"vector": [1.0] + [0.0] * 383}),
    ("GET", "/v1/jobs", None),
    ("GET", "/v1/dead-letters", None),
]
WRITES: list[tuple[str, str, Any]] = [
    ("PUT", "/v1/collections/other", None),
    ("POST", "/v1/collections/docs/documents", {"documents": [{"id": "a", "text": "x"}]}),
    ("DELETE", "/v1/collections/docs/documents/a", None),
    ("POST", "/v1/jobs:cancel", {"collection": "docs"}),
    ("POST", "/v1/dead-letters:replay", {"collection": "docs"}),
    ("DELETE", "/v1/collections/docs", None),
]
OPERATOR: list[tuple[str, str, Any]] = [
    ("GET", "/v1/queues", None),
    ("GET", "/v1/keys", None),
    ("POST", "/v1/keys", {"tenant": "acme", "role": "admin"}),
    ("GET", "/v1/tenants/acme/rate-limits", None),
    ("PUT", "/v1/tenants/acme/rate-limits", {"per_hour": 1}),
]


async def _call(api: Api, key: str, method: str, path: str, body: Any) -> Any:
    return await api.client.request(method, path, json=body, headers=_auth(key))


async def test_roles_limit_routes(api: Api, redis_client: redis.Redis) -> None:
    assert (await api.client.put("/v1/collections/docs", headers=api.auth)).status == 201
    reader, writer = apikeys.new_key(), apikeys.new_key()
    apikeys.store(redis_client, reader, "acme", Role.READER)
    apikeys.store(redis_client, writer, "acme", Role.WRITER)

    for method, path, body in READER_ALLOWED:
        assert (await _call(api, reader, method, path, body)).status == 200, (method, path)
    for method, path, body in WRITES + OPERATOR:
        resp = await _call(api, reader, method, path, body)
        problem = await _json(resp, 403)
        assert resp.content_type == "application/problem+json"
        assert "writer" in problem["detail"] or "admin" in problem["detail"], problem
    for method, path, body in OPERATOR:
        await _json(await _call(api, writer, method, path, body), 403)
    for method, path, body in WRITES:
        assert (await _call(api, writer, method, path, body)).status in (200, 201, 202, 204), (method, path)
    # The admin key reaches the operator routes.
    for method, path, body in OPERATOR:
        assert (await _call(api, api.key, method, path, body)).status in (200, 201), (method, path)
