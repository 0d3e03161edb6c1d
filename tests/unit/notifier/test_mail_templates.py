"""Every mail renders to a subject, a plain-text body and an HTML body from its templates."""

from __future__ import annotations

import pytest

from services.notifier.mail import SUBJECTS, Renderer
from shared.errors import PermanentError

CONTEXTS: dict[str, dict[str, object]] = {
    "job_failed": {
        "tenant": "acme",
        "collection": "papers",
        "job_id": "job_1",
        "error": "CorruptObject: <bad> & broken",
        "dead_letter": "dl_1",
        "time": "2026-11-23T10:00:00+00:00",
    },
    "delivery_exhausted": {
        "tenant": "acme",
        "endpoint_id": "ep_1",
        "url": "https://hooks.example.com/in",
        "delivery_id": "dlv_1",
        "event_id": "e1",
        "event_type": "job.succeeded",
        "attempts": 15,
        "error": "HTTP 500",
        "time": "2026-11-23T10:00:00+00:00",
    },
    "endpoint_disabled": {
        "tenant": "acme",
        "endpoint_id": "ep_1",
        "url": "https://hooks.example.com/in",
        "reason": "the endpoint answered 410 Gone",
        "time": "2026-11-23T10:00:00+00:00",
    },
    "digest": {
        "tenant": "acme",
        "week": "2026-W47",
        "start": "2026-11-16",
        "end": "2026-11-22",
        "documents_ingested": 1234,
        "jobs_succeeded": 12,
        "jobs_failed": 2,
        "deliveries_exhausted": 1,
    },
}


def test_every_kind_has_a_context_here() -> None:
    assert set(CONTEXTS) == set(SUBJECTS)


@pytest.mark.parametrize("kind", sorted(CONTEXTS))
def test_each_mail_renders_text_and_html(kind: str) -> None:
    subject, text, html = Renderer().render(kind, CONTEXTS[kind])
    assert subject.startswith("[semaflow] ") and "\n" not in subject
    assert "acme" in text and "acme" in html
    assert html.lstrip().startswith("<!DOCTYPE html>")
    for value in CONTEXTS[kind].values():
        if isinstance(value, str) and "<" not in value:
            assert value in text


def test_html_is_escaped_and_text_is_not() -> None:
    _subject, text, html = Renderer().render("job_failed", CONTEXTS["job_failed"])
    assert "CorruptObject: <bad> & broken" in text
    assert "CorruptObject: &lt;bad&gt; &amp; broken" in html
    assert "<bad>" not in html


def test_optional_fields_may_be_missing() -> None:
    context = {k: v for k, v in CONTEXTS["job_failed"].items() if k != "dead_letter"}
    _subject, text, _html = Renderer().render("job_failed", context)
    assert "Dead letter" not in text


def test_a_missing_field_or_unknown_kind_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError):
        Renderer().render("job_failed", {"tenant": "acme"})
    with pytest.raises(PermanentError):
        Renderer().render("nope", {})
