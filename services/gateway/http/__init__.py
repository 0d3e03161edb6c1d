"""HTTP plumbing of the gateway: route declarations, middleware (context, tracing, CORS, auth, rate limits,
idempotency, problems), request bodies, responses and the OpenAPI document."""

__all__ = [
    # routes declared with their role, cost, scope and models; the OpenAPI document made from them
    "declarations",
    "openapi",
    # the middleware, outermost first
    "spans",
    "context",
    "problems",
    "cors",
    "auth",
    "throttle",
    "ratelimit",
    "idempotency",
    # reading requests and writing answers
    "bodies",
    "responses",
]
