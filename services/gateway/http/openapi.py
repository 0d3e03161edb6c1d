"""The OpenAPI 3.1 document of the gateway, generated from its route declarations and pydantic models."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, Final, cast

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from services.gateway.http.declarations import JSON, Endpoint, check_links
from services.gateway.http.problems import PROBLEM_JSON
from shared.api.schemas import Problem
from shared.constants import COLLECTION_NAME_PATTERN, TENANT_NAME_PATTERN
from shared.records.apikeys import Role

REF: Final = "#/components/schemas/{model}"
# Path parameters whose form is known; any other is a non-empty string.
PATH_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "name": {"type": "string", "pattern": COLLECTION_NAME_PATTERN},
    "tenant": {"type": "string", "pattern": TENANT_NAME_PATTERN},
}
_PRINTABLE_KEY: Final = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"}
HEADERS: Final[dict[str, dict[str, Any]]] = {
    "X-Request-ID": {
        "description": "The request's id: the client's own if valid (1-128 safe characters), else a new one.",
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": 'Quota policies of the windows the request draws on, e.g. `"hour";q=100;w=3600`.',
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'Remaining quota per window and seconds until it resets, e.g. `"hour";r=42;t=1800`.',
        "schema": {"type": "string"},
    },
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}},
}


def _headers(*names: str) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _problem_statuses(endpoint: Endpoint) -> set[int]:
    """Error statuses a route can answer, from what it declares."""
    if endpoint.role is None:
        return set()
    statuses = {401, 503}
    if endpoint.limit is not None:
        statuses.add(429)
    if endpoint.role is not Role.READER:
        statuses.add(403)
    if endpoint.path_params:
        statuses |= {404, 422}
    if endpoint.query is not None:
        statuses |= {400, 422}  # 400: a value its schema allows but the route cannot use (a foreign cursor)
    if endpoint.body is not None or endpoint.method in ("POST", "PUT", "PATCH"):
        statuses |= {400, 408, 413, 422}
    if endpoint.method == "POST":
        statuses.add(409)  # an Idempotency-Key still in use (and state conflicts)
    elif 201 in endpoint.responses:
        statuses.add(409)  # a PUT that creates: the resource exists with other settings
    if endpoint.path.endswith("/search") or (endpoint.method == "GET" and "/documents" in endpoint.path):
        statuses.add(421)  # reads of the index: the collection is served by another gateway group
    return statuses


def _models(endpoints: Iterable[Endpoint]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    pairs: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(Problem, "serialization"): None}
    for ep in endpoints:
        for model in (ep.body, ep.query):
            if model is not None:
                pairs[(model, "validation")] = None
        for response in ep.responses.values():
            if response is not None:
                pairs[(response, "serialization")] = None
    return list(pairs)


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: a parameter is absent rather than null, so the null branch goes."""
    options = [o for o in prop.get("anyOf", ()) if o.get("type") != "null"]
    out = {k: v for k, v in prop.items() if k != "anyOf" and not (k == "default" and v is None)}
    if len(options) == 1:
        out.update(options[0])
    elif options:
        out["anyOf"] = options
    return out


def _query_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": _without_null(prop)}
        for name, prop in schema.get("properties", {}).items()
    ]


def _success(
    ep: Endpoint, status: int, refs: dict[tuple[type[BaseModel], JsonSchemaMode], Any], headers: dict[str, Any]
) -> dict[str, Any]:
    """A success answer's Response object, with its links: where a client can go next with what it got."""
    model = ep.responses[status]
    entry: dict[str, Any] = {"description": HTTPStatus(status).phrase, "headers": headers}
    if model is not None:
        entry["content"] = {ep.media_type: {"schema": refs[(model, "serialization")]}}
    elif status != 204:
        entry["content"] = {ep.media_type: {"schema": {"type": "string"}}}
    if ep.links.get(status):
        entry["links"] = {
            name: {"operationId": link.operation_id, "parameters": dict(link.parameters)}
            for name, link in ep.links[status].items()
        }
    return entry


def _operation(
    ep: Endpoint, refs: dict[tuple[type[BaseModel], JsonSchemaMode], Any], inline: dict[type[BaseModel], Any]
) -> dict[str, Any]:
    doc = inspect.cleandoc(ep.handler.__doc__ or "")
    op: dict[str, Any] = {"operationId": ep.operation_id, "summary": ep.summary, "tags": [ep.tag]}
    rest = "\n".join(doc.splitlines()[1:]).strip()
    details = [rest] if rest else []
    if ep.role is not None:
        details.append(f"Requires a key with the **{ep.role.value}** role or above.")
    if ep.limit is not None:
        details.append(f"Rate-limit category: **{ep.limit.value}**.")
    op["description"] = "\n\n".join(details) or ep.summary
    if ep.role is None:
        op["security"] = []
    parameters = [
        {"name": p, "in": "path", "required": True, "schema": PATH_SCHEMAS.get(p, {"type": "string", "minLength": 1})}
        for p in ep.path_params
    ]
    if ep.query is not None:
        parameters += _query_parameters(inline[ep.query])
    if ep.method == "POST" and ep.role is not None:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": (
                    "Makes a retried POST safe: the same request with the same key gets the first answer "
                    "(for 24 h). The key used with a different request (another route, method or body) "
                    "answers 422; while the first request with it is still running, 409."
                ),
                "schema": _PRINTABLE_KEY,
            }
        )
    if parameters:
        op["parameters"] = parameters
    if ep.body is not None:
        schema = {JSON: {"schema": refs[(ep.body, "validation")]}}
        op["requestBody"] = {"required": ep.body_required, "content": schema}
    headers = _headers("X-Request-ID", "RateLimit-Policy", "RateLimit") if ep.limit else _headers("X-Request-ID")
    responses = {str(status): _success(ep, status, refs, headers) for status in sorted(ep.responses)}
    problem_ref = refs[(Problem, "serialization")]
    for status in sorted(_problem_statuses(ep) - set(ep.responses)):
        responses[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "headers": _headers(*headers, "Retry-After") if status in (429, 503) else headers,
            "content": {PROBLEM_JSON: {"schema": problem_ref}},
        }
    op["responses"] = responses
    return op


def document(endpoints: Iterable[Endpoint], *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing ``endpoints``.

    Raises:
        ValueError: a link of one of them leads nowhere (see :func:`check_links`).
    """
    shown = [ep for ep in endpoints if ep.in_schema]
    check_links(shown)
    pairs = _models(shown)
    found, defs = models_json_schema(pairs, ref_template=REF)
    refs = cast(dict[tuple[type[BaseModel], JsonSchemaMode], Any], found)
    inline = {
        ep.query: ep.query.model_json_schema(mode="validation", ref_template=REF)
        for ep in shown
        if ep.query is not None
    }
    paths: dict[str, dict[str, Any]] = {}
    for ep in shown:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep, refs, inline)
    tags = list(dict.fromkeys(ep.tag for ep in shown))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Event-driven semantic indexing and search. Every `/v1` route needs `Authorization: Bearer KEY`; "
                "errors are RFC 9457 problem documents."
            ),
        },
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "headers": HEADERS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key (sf_…)."}},
        },
        "security": [{"bearer": []}],
    }


class ApiDescription:
    """The document of an app's declared routes, generated on first request and kept."""

    def __init__(self, endpoints: Iterable[Endpoint], *, title: str, version: str) -> None:
        """Keep the routes to describe.

        Raises:
            ValueError: a link of one of them leads nowhere, so the app fails at build, not on a request.
        """
        self.endpoints = list(endpoints)
        check_links(self.endpoints)
        self.title = title
        self.version = version
        self._json: bytes | None = None

    def json(self) -> bytes:
        """The document as compact JSON."""
        if self._json is None:
            spec = document(self.endpoints, title=self.title, version=self.version)
            self._json = json.dumps(spec, separators=(",", ":")).encode()
        return self._json
