"""The contact address: the OpenAPI document's pattern, the API's validation and the stored check agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from pydantic import ValidationError

from services.gateway.api.health import OPENAPI
from services.gateway.main import build
from shared.api.webhooks import TenantUpdate
from shared.config import Settings
from shared.index.storage import LocalStore
from shared.records.tenants import valid_email

# Plain addresses, and every character the regex dialects disagree on as whitespace: Python's ``re``
# (\x1c-\x1f, \x85), ECMA-262 (\ufeff), Rust (\x85), plus a final newline that Python's ``$`` lets through.
SAMPLES = [
    "ops@example.com",
    "o.p+s@mail.example.co",
    "ünïcode@exämple.com",
    "ops@example.com\n",
    "ops @example.com",
    "ops@example",
    "@example.com",
    "a@b@c.de",
    *(f"o{ch}ps@example.com" for ch in "\t\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u202f\u3000\ufeff"),
]


def _contact_schema(tmp_path: Path) -> dict[str, Any]:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", data_dir=tmp_path)
    app = build(settings, store=LocalStore(tmp_path / "objects"))
    document = json.loads(app[OPENAPI].json())
    prop: dict[str, Any] = document["components"]["schemas"]["TenantUpdate"]["properties"]["contact_email"]
    (string,) = [option for option in prop["anyOf"] if option.get("type") == "string"]
    assert isinstance(string, dict)
    return string


def _api_accepts(address: str) -> bool:
    try:
        TenantUpdate(contact_email=address)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("address", SAMPLES, ids=repr)
def test_the_schema_the_api_and_the_stored_check_agree_on_an_address(address: str, tmp_path: Path) -> None:
    schema_accepts = jsonschema_rs.validator_for(_contact_schema(tmp_path)).is_valid(address)
    assert schema_accepts == _api_accepts(address) == valid_email(address)


def test_a_plain_address_is_accepted_and_a_final_newline_is_not() -> None:
    assert valid_email("ops@example.com") and _api_accepts("ops@example.com")
    assert not valid_email("ops@example.com\n") and not _api_accepts("ops@example.com\n")
