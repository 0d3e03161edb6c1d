"""Request and response bodies of the webhook and tenant routes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from shared.api.schemas import CURSOR_PATTERN
from shared.errors import InvalidInput
from shared.records.jobs import Job
from shared.records.tenants import EMAIL_PATTERN, MAX_EMAIL_LENGTH
from shared.webhooks.deliveries import Attempt, DeliveryState
from shared.webhooks.destinations import MAX_URL_LENGTH
from shared.webhooks.endpoints import EVENT_TYPE_NAMES, check_event_types

_MAX_DESCRIPTION = 500
_MAX_EVENT_TYPES = 50


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _subscription_pattern() -> str:
    """The patterns a subscription may name, as one regular expression: ``*``, an event type, or a prefix
    of one followed by ``.*`` (so the OpenAPI document says exactly what the server takes)."""
    prefixes = sorted({name.rsplit(".", n)[0] for name in EVENT_TYPE_NAMES for n in range(1, name.count(".") + 1)})
    choices = [r"\*", *(re.escape(n) for n in EVENT_TYPE_NAMES), *(re.escape(p) + r"\.\*" for p in prefixes)]
    return "^(" + "|".join(choices) + ")$"


_EventType = Annotated[str, Field(pattern=_subscription_pattern())]


def _event_types(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    try:
        return list(check_event_types(value))
    except InvalidInput as exc:
        raise ValueError(str(exc)) from exc


class WebhookCreate(_Body):
    """``POST /v1/webhooks``."""

    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    event_types: list[_EventType] = Field(min_length=1, max_length=_MAX_EVENT_TYPES)
    description: str = Field(default="", max_length=_MAX_DESCRIPTION)
    disabled: bool = False

    _types = field_validator("event_types")(_event_types)


class WebhookUpdate(_Body):
    """``PATCH /v1/webhooks/{id}``: the fields to change (at least one)."""

    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL_LENGTH)
    event_types: list[_EventType] | None = Field(default=None, min_length=1, max_length=_MAX_EVENT_TYPES)
    description: str | None = Field(default=None, max_length=_MAX_DESCRIPTION)
    disabled: bool | None = None

    _types = field_validator("event_types")(_event_types)

    @model_validator(mode="after")
    def _some_field(self) -> WebhookUpdate:
        if not any(v is not None for v in (self.url, self.event_types, self.description, self.disabled)):
            raise ValueError("give at least one of url, event_types, description, disabled")
        return self


class ReplayRequest(_Body):
    """``POST /v1/webhooks/{id}/replay``: resend every event from ``since`` (up to, not including, ``until``)."""

    since: datetime
    until: datetime | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ReplayRequest:
        if self.since.tzinfo is None or (self.until is not None and self.until.tzinfo is None):
            raise ValueError("give times with a time zone (e.g. 2026-11-23T08:00:00Z)")
        if self.until is not None and self.until <= self.since:
            raise ValueError("'until' must be after 'since'")
        return self


class DeliveryListQuery(_Body):
    """``GET /v1/webhooks/{id}/deliveries`` query parameters."""

    state: DeliveryState | None = None
    event_type: str | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, pattern=CURSOR_PATTERN)


class TenantUpdate(_Body):
    """``PATCH /v1/tenant``: the contact address notification mail goes to (null removes it)."""

    contact_email: str | None = Field(max_length=MAX_EMAIL_LENGTH, pattern=EMAIL_PATTERN)


class Webhook(_Body):
    """An endpoint as the API shows it (never its secrets)."""

    id: str
    url: str
    description: str
    event_types: list[str]
    disabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(Webhook):
    """A new or rotated endpoint, with its signing secret: shown this once."""

    secret: str | None = Field(
        description="The signing secret; null in an Idempotency-Key replay (header Idempotent-Secret-Withheld)."
    )


class WebhookList(_Body):
    """``GET /v1/webhooks``."""

    webhooks: list[Webhook]


class WebhookDelivery(_Body):
    """One event on its way to one endpoint, with its attempts where the answer lists them."""

    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    trigger: str
    state: DeliveryState
    attempt_count: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    dead_letter: str | None
    attempts: list[Attempt] = Field(default_factory=list)


class DeliveryPage(_Body):
    """A page of deliveries, newest first; ``next_cursor`` continues it (null on the last page)."""

    deliveries: list[WebhookDelivery]
    next_cursor: str | None


class MailQueued(_Body):
    """A mail's dead letter, replayed: its message is queued again."""

    queue: str
    op: str
    state: str
    arguments: dict[str, Any]


class Replayed(RootModel[Job | WebhookDelivery | MailQueued]):
    """What a dead-letter replay queued again: the job, the webhook delivery, or the mail."""
