"""Route declarations, their links, roles, and the rate-limit headers' structured-field form."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from pydantic import BaseModel

from services.gateway.http.declarations import Endpoint, Endpoints, Scope, check_links, links_to
from services.gateway.http.openapi import document
from services.gateway.http.ratelimit import Decision, WindowState
from services.gateway.main import ROUTE_TABLES
from shared.records.apikeys import Role
from shared.records.ratelimits import Category


async def _handler(request: web.Request) -> web.Response:
    """Do nothing."""
    return web.Response()


def test_roles_include_the_lesser_ones() -> None:
    assert Role.ADMIN.allows(Role.WRITER) and Role.ADMIN.allows(Role.READER)
    assert Role.WRITER.allows(Role.READER) and not Role.WRITER.allows(Role.ADMIN)
    assert not Role.READER.allows(Role.WRITER)


def test_a_declaration_must_be_consistent() -> None:
    table = Endpoints("t")
    with pytest.raises(ValueError, match="public"):
        table.get("/x", role=None, limit=None, responses={200: None})
    with pytest.raises(ValueError, match="public"):
        table.get("/x", role=Role.READER, limit=None, scope=Scope.PUBLIC, responses={200: None})
    with pytest.raises(ValueError, match="admin"):
        table.get("/x", role=Role.WRITER, limit=Category.SINGLE, scope=Scope.CLUSTER, responses={200: None})
    table.get("/v1/things/{thing_id}", role=Role.READER, limit=Category.SINGLE, responses={200: None})(_handler)
    (endpoint,) = list(table)
    assert endpoint.path_params == ["thing_id"] and endpoint.summary == "Do nothing."


def test_headers_use_the_drafts_structured_fields() -> None:
    windows = (
        WindowState("single-minute", 30, 60, 0, 12),
        WindowState("hour", 100, 3600, 42, 1800),
    )
    refused = Decision(admitted=False, windows=windows)
    assert refused.headers() == {
        "RateLimit-Policy": '"single-minute";q=30;w=60, "hour";q=100;w=3600',
        "RateLimit": '"single-minute";r=0;t=12, "hour";r=42;t=1800',
        "Retry-After": "12",
    }
    assert "Retry-After" not in Decision(admitted=True, windows=windows).headers()
    assert Decision(admitted=True, windows=()).headers() == {}


class _Created(BaseModel):
    id: str


def test_a_link_reads_only_what_its_route_has() -> None:
    table = Endpoints("t")
    with pytest.raises(ValueError, match="not one of its answers"):
        table.post("/x", role=Role.WRITER, limit=None, responses={201: _Created}, links={200: links_to("y", y="$url")})
    with pytest.raises(ValueError, match="not a runtime expression"):
        table.post("/x", role=Role.WRITER, limit=None, responses={201: _Created}, links={201: links_to("y", y="id")})
    with pytest.raises(ValueError, match="no field 'job_id'"):
        table.post(
            "/x",
            role=Role.WRITER,
            limit=None,
            responses={201: _Created},
            links={201: links_to("y", y="$response.body#/job_id")},
        )
    with pytest.raises(ValueError, match="no path parameter 'name'"):
        table.post(
            "/x",
            role=Role.WRITER,
            limit=None,
            responses={201: _Created},
            links={201: links_to("y", y="$request.path.name")},
        )
    with pytest.raises(ValueError, match="passes no parameter"):
        table.post("/x", role=Role.WRITER, limit=None, responses={201: _Created}, links={201: links_to("y")})


def _linked(target: str, **parameters: str) -> Endpoints:
    table = Endpoints("t")
    table.post(
        "/v1/things/{group}",
        role=Role.WRITER,
        limit=None,
        responses={201: _Created},
        links={201: links_to(target, **parameters)},
    )(_handler)
    return table


async def _get_thing(request: web.Request) -> web.Response:
    """Read a thing."""
    return web.Response()


def test_a_link_must_lead_to_a_declared_operation_taking_its_parameters() -> None:
    get = Endpoints("t")
    get.get("/v1/things/{group}/{thing_id}", role=Role.READER, limit=None, responses={200: None})(_get_thing)
    with pytest.raises(ValueError, match="no operation '_get_thin'"):
        check_links([*_linked("_get_thin", thing_id="$response.body#/id"), *get])
    with pytest.raises(ValueError, match=r"passes \['id'\], which GET /v1/things/\{group\}/\{thing_id\} does not take"):
        check_links([*_linked("_get_thing", id="$response.body#/id"), *get])
    with pytest.raises(ValueError, match="no operation"):
        document(list(_linked("_get_thing", thing_id="$response.body#/id")), title="t", version="1")

    linked = _linked("_get_thing", thing_id="$response.body#/id", group="$request.path.group")
    spec = document([*linked, *get], title="t", version="1")
    assert spec["paths"]["/v1/things/{group}"]["post"]["responses"]["201"]["links"] == {
        "_get_thing": {
            "operationId": "_get_thing",
            "parameters": {"thing_id": "$response.body#/id", "group": "$request.path.group"},
        }
    }


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_link_of_the_gateway_leads_to_an_operation_and_passes_its_path_parameters() -> None:
    spec = document(declared_endpoints(), title="semaflow", version="1")
    operations = {op["operationId"]: op for item in spec["paths"].values() for op in item.values()}
    found = 0
    for operation in operations.values():
        for status, response in operation["responses"].items():
            for name, link in response.get("links", {}).items():
                found += 1
                target = operations[link["operationId"]]  # a KeyError: the link leads nowhere
                path_params = {p["name"] for p in target.get("parameters", ()) if p["in"] == "path"}
                assert link["parameters"] and set(link["parameters"]) <= path_params, (name, link)
                assert set(link["parameters"]) == path_params or name == "delete_document", (name, link)
                schema = _resolve(spec, response["content"]["application/json"]["schema"])
                for expression in link["parameters"].values():
                    if expression.startswith("$response.body#/"):
                        assert expression.split("/")[1] in schema["properties"], (operation["operationId"], status)
    assert found >= 30
    ingest = spec["paths"]["/v1/collections/{name}/documents"]["post"]["responses"]["202"]["links"]
    assert ingest["get_job"] == {"operationId": "get_job", "parameters": {"job_id": "$response.body#/job_id"}}
    created = spec["paths"]["/v1/webhooks"]["post"]["responses"]["201"]["links"]
    assert {"get_webhook", "update_webhook", "delete_webhook", "rotate_secret", "test_webhook"} <= set(created)


def declared_endpoints() -> list[Endpoint]:
    return [endpoint for table in ROUTE_TABLES for endpoint in table]
