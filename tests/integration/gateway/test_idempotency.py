"""Idempotency-Key on POST routes: one answer per key and request, replayed; misuse gets its problem document."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import redis
import redis.asyncio as aioredis

from services.gateway.http import idempotency
from shared import keys
from shared.config import Settings
from shared.index.storage import LocalStore
from shared.records import apikeys
from tests.integration.gateway.conftest import Api

DOCUMENTS = "/v1/collections/docs/documents"
BATCH = json.dumps({"documents": [{"id": "a", "text": "The cat sits on the mat."}]}).encode()
OTHER_BATCH = json.dumps({"documents": [{"id": "b", "text": "Quarterly revenue grew."}]}).encode()


@pytest.fixture
async def coll(api: Api) -> str:
    resp = await api.client.put("/v1/collections/docs", headers=api.auth)
    assert resp.status == 201
    return "/v1/collections/docs"


@pytest.fixture
async def aclient(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _post(api: Api, path: str, body: bytes, key: str | None, auth: dict[str, str] | None = None) -> Any:
    headers = {**(auth or api.auth), "Content-Type": "application/json"}
    if key is not None:
        headers[idempotency.HEADER] = key
    return await api.client.post(path, data=body, headers=headers)


async def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = json.loads(await resp.text())
    assert body["status"] == status and body["detail"]
    return body


def _jobs(redis_client: redis.Redis) -> int:
    return sum(1 for _ in redis_client.scan_iter(match=keys.job("*")))


def _batches(store: LocalStore, tenant: str = "acme") -> int:
    return sum(1 for key in store.list(f"{tenant}/docs/") if "/batches/" in key)


def _stored_keys(redis_client: redis.Redis, tenant: str = "acme") -> int:
    return sum(1 for _ in redis_client.scan_iter(match=f"{keys.PREFIX}:t:{tenant}:idem:*"))


async def test_a_repeated_ingest_is_accepted_once_and_replayed(
    api: Api, coll: str, redis_client: redis.Redis, store: LocalStore
) -> None:
    first = await _post(api, DOCUMENTS, BATCH, "ingest-1")
    assert first.status == 202, await first.text()
    assert idempotency.REPLAYED_HEADER not in first.headers

    again = await _post(api, DOCUMENTS, BATCH, "ingest-1")
    assert again.status == 202
    assert again.headers[idempotency.REPLAYED_HEADER] == "true"
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert await again.read() == await first.read()
    assert (await again.json())["job_id"] == (await first.json())["job_id"]
    assert _jobs(redis_client) == 1 and _batches(store) == 1


async def test_a_request_run_again_after_its_first_run_died_unanswered_returns_the_first_job(
    api: Api, coll: str, redis_client: redis.Redis, store: LocalStore
) -> None:
    # Given an ingest that made its job, whose gateway then died before storing the answer: the key's
    # claim ran out, so the key is free again (its record is gone) while the job and batch remain
    first = await _post(api, DOCUMENTS, BATCH, "died-unanswered")
    assert first.status == 202, await first.text()
    job_id = (await first.json())["job_id"]
    redis_client.delete(keys.idempotency("acme", "died-unanswered"))

    # When the client retries with the same key, then it gets the first job, and nothing is made twice
    again = await _post(api, DOCUMENTS, BATCH, "died-unanswered")
    assert again.status == 202, await again.text()
    assert idempotency.REPLAYED_HEADER not in again.headers  # run again, not replayed
    assert (await again.json())["job_id"] == job_id
    assert _jobs(redis_client) == 1 and _batches(store) == 1
    assert redis_client.hlen(keys.wq_entries("embed")) == 1  # its entry queued once


async def test_the_same_key_on_a_different_request_is_422(api: Api, coll: str, redis_client: redis.Redis) -> None:
    assert (await _post(api, DOCUMENTS, BATCH, "reused")).status == 202

    body = await _problem(await _post(api, DOCUMENTS, OTHER_BATCH, "reused"), 422)
    assert "different request" in body["detail"]
    await _problem(await _post(api, f"{coll}/search", b'{"query": "cat"}', "reused"), 422)
    await _problem(await _post(api, f"{DOCUMENTS}?x=1", BATCH, "reused"), 422)
    assert _jobs(redis_client) == 1

    # And the API's description says so, where the header is declared
    document = await (await api.client.get("/openapi.json")).json()
    post = document["paths"]["/v1/collections/{name}/documents"]["post"]
    header = next(p for p in post["parameters"] if p["name"] == "Idempotency-Key")
    assert "422" in header["description"] and "different request" in header["description"]
    assert "422" in post["responses"]


async def test_a_key_whose_request_is_still_running_is_409(
    api: Api, coll: str, aclient: aioredis.Redis, redis_client: redis.Redis
) -> None:
    # Given a request with this key and body that has claimed the key and not finished yet
    running = idempotency.fingerprint("POST", DOCUMENTS, BATCH)
    assert await idempotency.claim(aclient, "acme", "busy", running, "other-request", lock_ttl_s=60) is None

    # When the same request arrives again, it is refused, not run, and the claim is left to its owner
    busy = await _post(api, DOCUMENTS, BATCH, "busy")
    assert busy.headers["Retry-After"] == "1"  # when a client (the SDK) tries again
    body = await _problem(busy, 409)
    assert "still being processed" in body["detail"]
    assert _jobs(redis_client) == 0
    assert await idempotency.release(aclient, "acme", "busy", "other-request")

    # Then, once it is released, the key can be used
    assert (await _post(api, DOCUMENTS, BATCH, "busy")).status == 202


async def test_concurrent_requests_with_one_key_run_the_handler_once(
    api: Api, coll: str, redis_client: redis.Redis, store: LocalStore
) -> None:
    responses = await asyncio.gather(*(_post(api, DOCUMENTS, BATCH, "racing") for _ in range(5)))

    ran = [r for r in responses if r.status == 202 and idempotency.REPLAYED_HEADER not in r.headers]
    assert len(ran) == 1
    assert all(r.status in (202, 409) for r in responses)
    assert _jobs(redis_client) == 1 and _batches(store) == 1


async def test_keys_are_per_tenant(api: Api, coll: str, redis_client: redis.Redis, store: LocalStore) -> None:
    other_key = apikeys.new_key()
    apikeys.store(redis_client, other_key, "globex")
    other_auth = {"Authorization": f"Bearer {other_key}"}
    assert (await api.client.put("/v1/collections/docs", headers=other_auth)).status == 201

    mine = await _post(api, DOCUMENTS, BATCH, "shared-key")
    theirs = await _post(api, DOCUMENTS, BATCH, "shared-key", auth=other_auth)

    assert mine.status == theirs.status == 202
    assert idempotency.REPLAYED_HEADER not in theirs.headers
    assert (await mine.json())["job_id"] != (await theirs.json())["job_id"]
    assert _batches(store, "acme") == _batches(store, "globex") == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "naïve"])
async def test_an_invalid_key_is_400(api: Api, coll: str, redis_client: redis.Redis, key: str) -> None:
    body = await _problem(await _post(api, DOCUMENTS, BATCH, key), 400)
    assert idempotency.HEADER in body["detail"]
    assert _jobs(redis_client) == 0


async def test_a_repeated_key_header_is_400(api: Api, coll: str) -> None:
    headers = [*api.auth.items(), (idempotency.HEADER, "one"), (idempotency.HEADER, "two")]
    await _problem(await api.client.post(DOCUMENTS, data=BATCH, headers=headers), 400)


async def test_the_longest_key_and_any_printable_characters_are_accepted(api: Api, coll: str) -> None:
    for key in ("k" * 255, '!"#/:@[\\]{|}~ spaces inside'):
        first = await _post(api, DOCUMENTS, BATCH, key)
        assert first.status == 202, await first.text()
        again = await _post(api, DOCUMENTS, BATCH, key)
        assert again.headers[idempotency.REPLAYED_HEADER] == "true"
        assert await again.read() == await first.read()


async def test_requests_without_a_key_are_unaffected(api: Api, coll: str, redis_client: redis.Redis) -> None:
    first = await _post(api, DOCUMENTS, BATCH, None)
    again = await _post(api, DOCUMENTS, BATCH, None)

    assert first.status == again.status == 202
    assert idempotency.REPLAYED_HEADER not in again.headers
    assert (await first.json())["job_id"] != (await again.json())["job_id"]
    assert _jobs(redis_client) == 2 and _stored_keys(redis_client) == 0


async def test_only_post_routes_are_covered(api: Api, redis_client: redis.Redis) -> None:
    headers = {**api.auth, idempotency.HEADER: "put-key"}
    assert (await api.client.put("/v1/collections/docs", headers=headers)).status == 201
    again = await api.client.put("/v1/collections/docs", headers=headers)
    assert again.status == 200 and idempotency.REPLAYED_HEADER not in again.headers
    assert _stored_keys(redis_client) == 0


async def test_a_client_error_is_replayed_too(api: Api, coll: str, redis_client: redis.Redis) -> None:
    invalid = b'{"documents": []}'
    first = await _problem(await _post(api, DOCUMENTS, invalid, "bad-batch"), 422)

    again = await _post(api, DOCUMENTS, invalid, "bad-batch")
    assert await _problem(again, 422) == first
    assert again.headers[idempotency.REPLAYED_HEADER] == "true"
    assert _stored_keys(redis_client) == 1


async def test_a_server_error_is_not_stored_so_a_retry_runs_again(
    api: Api, coll: str, store: LocalStore, redis_client: redis.Redis
) -> None:
    # Given an object store that cannot write this tenant's batches (a file stands where a directory goes)
    (store.root / "acme").write_bytes(b"")

    # When a write fails with a 503, then the same request with the same key runs again and is not replayed
    for _ in range(2):
        resp = await _post(api, DOCUMENTS, BATCH, "flaky")
        await _problem(resp, 503)
        assert idempotency.REPLAYED_HEADER not in resp.headers
    assert _stored_keys(redis_client) == 0


async def test_only_the_claims_holder_stores_or_releases(aclient: aioredis.Redis) -> None:
    answer = idempotency.Answer(201, {"Content-Type": "application/json", "Location": "/v1/x"}, b'{"ok": true}')
    assert await idempotency.claim(aclient, "acme", "k", "print", "mine", lock_ttl_s=60) is None

    assert not await idempotency.complete(aclient, "acme", "k", "theirs", answer, ttl_s=60)
    assert not await idempotency.release(aclient, "acme", "k", "theirs")
    pending = await idempotency.claim(aclient, "acme", "k", "print", "theirs", lock_ttl_s=60)
    assert pending == idempotency.Record("print", None)

    assert await idempotency.complete(aclient, "acme", "k", "mine", answer, ttl_s=60)
    assert not await idempotency.release(aclient, "acme", "k", "mine")  # done: nothing left to release
    assert await idempotency.claim(aclient, "acme", "k", "print", "later", lock_ttl_s=60) == idempotency.Record(
        "print", answer
    )
    assert 0 < await aclient.ttl(keys.idempotency("acme", "k")) <= 60


async def test_a_running_request_keeps_its_short_claim_and_a_dead_one_frees_the_key_within_it(
    aclient: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency, "IDEMPOTENCY_LOCK_TTL_S", 1)
    assert await idempotency.claim(aclient, "acme", "k", "print", "mine", lock_ttl_s=1) is None
    keeper = asyncio.create_task(idempotency._keep_claimed(aclient, "acme", "k", "mine"))
    await asyncio.sleep(2.5)  # well past the claim's TTL: the running request renewed it
    assert await aclient.exists(keys.idempotency("acme", "k"))
    keeper.cancel()  # the gateway dies: nothing renews it any more
    await asyncio.sleep(1.5)
    assert not await aclient.exists(keys.idempotency("acme", "k"))
    assert await idempotency.claim(aclient, "acme", "k", "print", "retry", lock_ttl_s=1) is None


async def test_a_quoted_key_is_the_same_key_as_its_bare_form(api: Api) -> None:
    await api.client.put("/v1/collections/docs", headers=api.auth)
    body = {"documents": [{"id": "q", "text": "quoted"}]}
    first = await api.client.post(
        "/v1/collections/docs/documents", json=body, headers={**api.auth, "Idempotency-Key": '"k-quoted"'}
    )
    again = await api.client.post(
        "/v1/collections/docs/documents", json=body, headers={**api.auth, "Idempotency-Key": "k-quoted"}
    )
    assert first.status == again.status == 202
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert (await first.json())["job_id"] == (await again.json())["job_id"]


def _stored_records(redis_client: redis.Redis) -> list[dict[bytes, bytes]]:
    found = redis_client.scan_iter(match=f"{keys.PREFIX}:t:*:idem:*")
    return [cast(dict[bytes, bytes], redis_client.hgetall(k)) for k in found]


def _holds(records: list[dict[bytes, bytes]], secret: str) -> bool:
    return any(secret.encode() in field or secret.encode() in value for r in records for field, value in r.items())


async def test_a_created_api_key_is_never_stored_nor_replayed(api: Api, redis_client: redis.Redis) -> None:
    admin_key = apikeys.new_key()
    apikeys.store(redis_client, admin_key, "acme", apikeys.Role.ADMIN)
    admin = {"Authorization": f"Bearer {admin_key}"}
    body = json.dumps({"tenant": "globex", "role": "reader", "name": "ci"}).encode()

    first = await _post(api, "/v1/keys", body, "new-key", auth=admin)
    assert first.status == 201, await first.text()
    created = await first.json()
    assert created["key"].startswith("sf_") and idempotency.WITHHELD_HEADER not in first.headers

    # The stored answer holds the key's record, never the key itself
    records = _stored_records(redis_client)
    assert len(records) == 1 and records[0][b"status"] == b"201"
    assert not _holds(records, created["key"])
    assert json.loads(records[0][b"body"])["key"] is None

    # A replay answers the same status and record, with the key withheld and saying so
    again = await _post(api, "/v1/keys", body, "new-key", auth=admin)
    assert again.status == 201
    assert again.headers[idempotency.REPLAYED_HEADER] == "true"
    assert again.headers[idempotency.WITHHELD_HEADER] == "key"
    assert again.headers["Location"] == first.headers["Location"] == f"/v1/keys/{created['id']}"
    replayed = await again.json()
    assert replayed["key"] is None and created["key"] not in await again.text()
    assert {**replayed, "key": created["key"]} == created
    listed = await api.client.get("/v1/keys?tenant=globex", headers=admin)
    assert [k["id"] for k in (await listed.json())["keys"]] == [created["id"]]

    # Revoked, it is still not replayed (there is nothing to replay)
    assert (await api.client.delete(f"/v1/keys/{created['id']}", headers=admin)).status == 204
    after = await _post(api, "/v1/keys", body, "new-key", auth=admin)
    assert after.status == 201 and (await after.json())["key"] is None


WEBHOOK = json.dumps({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}).encode()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Webhooks to 127.0.0.1 may be created here."""
    return settings.model_copy(update={"webhook_allow_hosts": "127.0.0.1"})


async def test_webhook_signing_secrets_are_never_stored_nor_replayed(api: Api, redis_client: redis.Redis) -> None:
    first = await _post(api, "/v1/webhooks", WEBHOOK, "new-hook")
    assert first.status == 201, await first.text()
    created = await first.json()
    assert created["secret"]

    again = await _post(api, "/v1/webhooks", WEBHOOK, "new-hook")
    assert again.status == 201 and again.headers[idempotency.WITHHELD_HEADER] == "secret"
    assert again.headers["Location"] == first.headers["Location"]
    replayed = await again.json()
    assert replayed["secret"] is None and {**replayed, "secret": created["secret"]} == created

    rotate = f"/v1/webhooks/{created['id']}/rotate-secret"
    rotated = await _post(api, rotate, b"", "rotate-1")
    assert rotated.status == 200, await rotated.text()
    new_secret = (await rotated.json())["secret"]
    assert new_secret and new_secret != created["secret"]
    rotated_again = await _post(api, rotate, b"", "rotate-1")
    assert rotated_again.status == 200 and rotated_again.headers[idempotency.WITHHELD_HEADER] == "secret"
    assert (await rotated_again.json())["secret"] is None

    records = _stored_records(redis_client)
    assert len(records) == 2
    assert not _holds(records, created["secret"]) and not _holds(records, new_secret)
