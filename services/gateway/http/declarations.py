"""Declared routes: each states, in one place, who may call it, what it costs and what it takes and answers.

A routes module builds an :class:`Endpoints` table (used like aiohttp's ``RouteTableDef``) and
declares every route on it with its required role, rate-limit category, scope and pydantic
models. ``main.build`` installs the tables; the role check, the rate limiter and the OpenAPI
document all read these declarations, so they cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Required, TypedDict, TypeVar, Unpack

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel

from shared.records.apikeys import Role
from shared.records.ratelimits import Category

H = TypeVar("H", bound=Handler)
JSON: Final = "application/json"
_PARAM: Final = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
# The OpenAPI runtime expressions a link's parameter may take: a part of the request or of the answer.
_EXPRESSION: Final = re.compile(
    r"\$(?:url|method|statusCode"
    r"|request\.(?:path|query|header)\.(?P<request_name>[A-Za-z0-9_.~-]+)"
    r"|(?:request|response)\.body(?:#(?P<pointer>(?:/[^/]*)*))?"
    r"|response\.header\.[A-Za-z0-9!#$%&'*+.^_`|~-]+)"
)


@dataclass(frozen=True)
class Link:
    """An OpenAPI link: the operation an answer leads to, and where each of its parameters comes from.

    ``parameters`` maps a path parameter of the target to a runtime expression such as
    ``$response.body#/job_id`` or ``$request.path.name``.
    """

    operation_id: str
    parameters: Mapping[str, str]


# Per success status, links by name: ``{202: {"get_job": Link("get_job", {"job_id": "$response.body#/job_id"})}}``.
Links = Mapping[int, Mapping[str, Link]]


def links_to(*operation_ids: str, **parameters: str) -> dict[str, Link]:
    """Links to each of ``operation_ids``, named after it, all passing the same ``parameters``."""
    return {op: Link(op, parameters) for op in operation_ids}


class Scope(StrEnum):
    """Whose resources a route reaches."""

    TENANT = "tenant"  # the key's own tenant's, always: a foreign id answers 404
    CLUSTER = "cluster"  # across tenants (operator routes); admin keys only
    PUBLIC = "public"  # no key needed (health, metrics, the API description)


@dataclass(frozen=True, eq=False)
class Endpoint:
    """One route and what it requires."""

    method: str
    path: str
    handler: Handler
    role: Role | None
    limit: Category | None
    scope: Scope
    tag: str
    body: type[BaseModel] | None = None
    body_required: bool = True  # False: a request without a body takes the body model's defaults
    query: type[BaseModel] | None = None
    responses: Mapping[int, type[BaseModel] | None] = field(default_factory=dict)
    media_type: str = JSON
    in_schema: bool = True
    links: Links = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The first line of the handler's docstring."""
        return (self.handler.__doc__ or self.handler.__name__).strip().splitlines()[0]

    @property
    def operation_id(self) -> str:
        """A stable operation name: the handler's."""
        return self.handler.__name__

    @property
    def path_params(self) -> list[str]:
        """Names of the path's ``{parameters}``, in order."""
        return _PARAM.findall(self.path)


class RouteOptions(TypedDict, total=False):
    """What a declaration states besides method and path (see :meth:`Endpoints.route`)."""

    role: Required[Role | None]
    limit: Required[Category | None]
    responses: Required[Mapping[int, type[BaseModel] | None]]
    scope: Scope
    body: type[BaseModel] | None
    body_required: bool
    query: type[BaseModel] | None
    media_type: str
    in_schema: bool
    links: Links


class Endpoints:
    """A module's declared routes: ``@table.get(path, role=..., limit=..., responses=...)`` on each handler."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._endpoints: list[Endpoint] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        role: Role | None,
        limit: Category | None,
        responses: Mapping[int, type[BaseModel] | None],
        scope: Scope = Scope.TENANT,
        body: type[BaseModel] | None = None,
        body_required: bool = True,
        query: type[BaseModel] | None = None,
        media_type: str = JSON,
        in_schema: bool = True,
        links: Links | None = None,
    ) -> Callable[[H], H]:
        """Declare ``handler`` as the route ``method path``.

        ``role`` None means no key is needed (only with ``Scope.PUBLIC``); ``limit`` None means the
        route draws on no rate limit; ``responses`` maps each success status to its body model
        (None: no body, or not JSON); ``links`` names, per success status, the operations its answer
        leads to (checked here against this route, and against their targets by :func:`check_links`).

        Raises:
            ValueError: the declaration contradicts itself.
        """
        if (role is None) != (scope is Scope.PUBLIC):
            raise ValueError(f"{method} {path}: public routes, and only they, need no role")
        if scope is Scope.CLUSTER and role is not Role.ADMIN:
            raise ValueError(f"{method} {path}: cluster-wide routes are for admin keys only")
        own_links = {status: dict(named) for status, named in (links or {}).items()}
        for status, named in own_links.items():
            _check_own_links(f"{method} {path}", status, named, responses, _PARAM.findall(path))

        def register(handler: H) -> H:
            self._endpoints.append(
                Endpoint(
                    method=method.upper(),
                    path=path,
                    handler=handler,
                    role=role,
                    limit=limit,
                    scope=scope,
                    tag=self.tag,
                    body=body,
                    body_required=body_required,
                    query=query,
                    responses=dict(responses),
                    media_type=media_type,
                    in_schema=in_schema,
                    links=own_links,
                )
            )
            return handler

        return register

    def get(self, path: str, **options: Unpack[RouteOptions]) -> Callable[[H], H]:
        """Declare a GET route (HEAD is answered too)."""
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Unpack[RouteOptions]) -> Callable[[H], H]:
        """Declare a POST route."""
        return self.route("POST", path, **options)

    def put(self, path: str, **options: Unpack[RouteOptions]) -> Callable[[H], H]:
        """Declare a PUT route."""
        return self.route("PUT", path, **options)

    def patch(self, path: str, **options: Unpack[RouteOptions]) -> Callable[[H], H]:
        """Declare a PATCH route."""
        return self.route("PATCH", path, **options)

    def delete(self, path: str, **options: Unpack[RouteOptions]) -> Callable[[H], H]:
        """Declare a DELETE route."""
        return self.route("DELETE", path, **options)

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self._endpoints)


def _check_own_links(
    route: str,
    status: int,
    named: Mapping[str, Link],
    responses: Mapping[int, type[BaseModel] | None],
    path_params: list[str],
) -> None:
    """Check that a route's links read only what its request and its ``status`` answer hold."""
    if status not in responses:
        raise ValueError(f"{route}: links on {status}, which is not one of its answers")
    model = responses[status]
    for name, link in named.items():
        if not link.parameters:
            raise ValueError(f"{route}: link {name!r} passes no parameter")
        for param, expression in link.parameters.items():
            match = _EXPRESSION.fullmatch(expression)
            where = f"{route}: link {name!r} parameter {param!r}"
            if match is None:
                raise ValueError(f"{where}: {expression!r} is not a runtime expression")
            if expression.startswith("$request.path.") and match["request_name"] not in path_params:
                raise ValueError(f"{where}: the route has no path parameter {match['request_name']!r}")
            if expression.startswith("$response.body"):
                field_name = (match["pointer"] or "/").split("/")[1]
                if model is None or field_name not in model.model_fields:
                    raise ValueError(f"{where}: the {status} answer has no field {field_name!r}")


def check_links(endpoints: Iterable[Endpoint]) -> None:
    """Check that every link leads to a declared operation and passes only path parameters it has.

    Raises:
        ValueError: a link names an operation that is not declared (or not in the API description),
            or a parameter its path does not have.
    """
    shown = [ep for ep in endpoints if ep.in_schema]
    by_id = {ep.operation_id: ep for ep in shown}
    if len(by_id) != len(shown):
        raise ValueError("two routes have the same operation id")
    for ep in shown:
        for named in ep.links.values():
            for name, link in named.items():
                target = by_id.get(link.operation_id)
                if target is None:
                    raise ValueError(
                        f"{ep.method} {ep.path}: link {name!r} leads to no operation {link.operation_id!r}"
                    )
                unknown = set(link.parameters) - set(target.path_params)
                if unknown:
                    raise ValueError(
                        f"{ep.method} {ep.path}: link {name!r} passes {sorted(unknown)}, "
                        f"which {target.method} {target.path} does not take"
                    )


EndpointTable = dict[web.AbstractRoute, Endpoint]


def install(router: web.UrlDispatcher, *tables: Endpoints) -> EndpointTable:
    """Add every declared route to ``router``; returns which declaration each added route has."""
    installed: EndpointTable = {}
    for table in tables:
        for endpoint in table:
            installed[router.add_route(endpoint.method, endpoint.path, endpoint.handler)] = endpoint
            if endpoint.method == "GET":
                installed[router.add_route("HEAD", endpoint.path, endpoint.handler)] = endpoint
    return installed


def declared(table: EndpointTable) -> list[Endpoint]:
    """The distinct declarations of a table, in the order they were installed."""
    return list(dict.fromkeys(table.values()))


ENDPOINTS: Final = web.AppKey("endpoints", EndpointTable)


async def _undeclared(request: web.Request) -> web.StreamResponse:
    """A route added without a declaration."""
    raise web.HTTPNotFound()


# What a /v1 route added without a declaration requires: the most, so a forgotten declaration
# fails closed (admin keys only, rate limited) instead of open.
UNDECLARED: Final = Endpoint(
    method="*",
    path="*",
    handler=_undeclared,
    role=Role.ADMIN,
    limit=Category.SINGLE,
    scope=Scope.CLUSTER,
    tag="undeclared",
    in_schema=False,
)


def endpoint_of(request: web.Request) -> Endpoint | None:
    """The declaration of the route a request matched; None for no route (404/405) or a non-API one."""
    match = request.match_info
    if match.http_exception is not None:
        return None
    found = request.app[ENDPOINTS].get(match.route)
    if found is None and request.path.startswith("/v1/"):
        return UNDECLARED
    return found
