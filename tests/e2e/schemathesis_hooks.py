"""Schemathesis hooks of the contract run (loaded through ``SCHEMATHESIS_HOOKS``).

Two things would stop the run from reaching the API's logic, so they are changed before a request
is sent:

- The run authenticates with the stack's development key, an admin key, and an admin key may revoke
  any key, itself included. Schemathesis reuses the ids it has seen in answers (``GET /v1/keys`` lists
  that key's), so left alone it revokes its own key and every later request answers 401. That one
  revocation is sent for a key made for it just before instead (a key that does not exist would answer
  404, which the stateful phase takes for a created key gone missing when it followed the link from
  ``POST /v1/keys``); any other key is revoked as asked.
- Schemathesis draws ``Idempotency-Key`` values from a small pool ("0", " "...), so most POSTs would
  reuse a key sent with another request and answer 422, and a repeated request would be answered
  with the stored answer of an earlier one (a key created, and revoked, long before). Both are
  documented and tested in ``tests/integration/gateway/test_idempotency.py``; here they would stop
  chains of calls at their first POST. A valid request's key is made unique to that call (an
  invalid request's is left alone: changing it would make schemathesis take the request as valid).
- ``GET /v1/jobs/{id}?wait=S`` may wait up to 60 s for a job that does not change, as long as the
  run's request timeout; a valid request's wait is cut to 1 s (still valid, still a long-poll).
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from typing import Any

import schemathesis
from schemathesis import Case, HookContext

OWN_KEY_ID = os.environ["SEMAFLOW_CONTRACT_KEY_ID"]
IDEMPOTENCY_KEY = "Idempotency-Key"
_KEY_MAX = 255  # the longest Idempotency-Key the API takes


@schemathesis.hook
def before_call(context: HookContext, case: Case[Any], kwargs: dict[str, Any]) -> None:
    """Keep the run's own key, make a valid request's Idempotency-Key unique to it and its long-poll short."""
    params = case.path_parameters or {}
    if case.method.upper() == "DELETE" and params.get("key_id") == OWN_KEY_ID:
        case.path_parameters = {**params, "key_id": _throwaway_key()}
    meta = case.meta
    if meta is not None and meta.generation.mode.is_negative:
        return
    query = case.query or {}
    if isinstance(query.get("wait"), int | float) and query["wait"] > 1:
        case.query = {**query, "wait": 1}
    value = case.headers.get(IDEMPOTENCY_KEY) if case.headers is not None else None
    if case.headers is not None and isinstance(value, str) and value:
        case.headers[IDEMPOTENCY_KEY] = f"{value[: _KEY_MAX - 33]}-{uuid.uuid4().hex}"


def _throwaway_key() -> str:
    """The id of a key made now, with the run's own key, for a revocation that would have hit the run's key."""
    request = urllib.request.Request(
        os.environ["SEMAFLOW_CONTRACT_URL"] + "/v1/keys",
        data=json.dumps({"tenant": "throwaway", "name": "revoked in place of the run's key"}).encode(),
        headers={
            "Authorization": f"Bearer {os.environ['SEMAFLOW_CONTRACT_API_KEY']}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return str(json.loads(resp.read())["id"])
