"""Declared routes: each states, in one place, who may call it, what it costs and what it takes and answers.

A routes module builds an :class:`Endpoints` table (used like aiohttp's ``RouteTableDef``) and
declares every route on it with its required role, rate-limit category, scope and pydantic
models. ``main.build`` installs the tables; the role check, the rate limiter and the OpenAPI
document all read these declarations, so they cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
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
    query: type[BaseModel] | None = None
    responses: Mapping[int, type[BaseModel] | None] = field(default_factory=dict)
    media_type: str = JSON
    in_schema: bool = True

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
    query: type[BaseModel] | None
    media_type: str
    in_schema: bool


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
        query: type[BaseModel] | None = None,
        media_type: str = JSON,
        in_schema: bool = True,
    ) -> Callable[[H], H]:
        """Declare ``handler`` as the route ``method path``.

        ``role`` None means no key is needed (only with ``Scope.PUBLIC``); ``limit`` None means the
        route draws on no rate limit; ``responses`` maps each success status to its body model
        (None: no body, or not JSON).
        """
        if (role is None) != (scope is Scope.PUBLIC):
            raise ValueError(f"{method} {path}: public routes, and only they, need no role")
        if scope is Scope.CLUSTER and role is not Role.ADMIN:
            raise ValueError(f"{method} {path}: cluster-wide routes are for admin keys only")

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
                    query=query,
                    responses=dict(responses),
                    media_type=media_type,
                    in_schema=in_schema,
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
