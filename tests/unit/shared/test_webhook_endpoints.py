from __future__ import annotations

import pytest

from shared.errors import InvalidInput
from shared.webhooks.endpoints import EVENT_TYPE_NAMES, check_event_types, matches


def test_the_subscribable_types_are_the_tenant_scoped_ones() -> None:
    assert "job.succeeded" in EVENT_TYPE_NAMES
    assert "index.published" in EVENT_TYPE_NAMES
    assert "webhook.delivery.exhausted" in EVENT_TYPE_NAMES
    assert "webhook.test" not in EVENT_TYPE_NAMES  # sent on request only


def test_patterns_match_exact_types_prefixes_and_everything() -> None:
    assert matches(["job.*"], "job.failed")
    assert not matches(["job.*"], "index.published")
    assert matches(["index.published"], "index.published")
    assert matches(["*"], "webhook.delivery.exhausted")
    assert not matches(["document.batch.accepted"], "document.batch.embedded")
    assert matches(["document.*"], "document.batch.embedded")


def test_patterns_are_validated_and_deduplicated() -> None:
    assert check_event_types(["job.*", "index.published", "job.*"]) == ("job.*", "index.published")
    for bad in ["job", "jobs.*", "job.*.x", "*.failed", "index.publish"]:
        with pytest.raises(InvalidInput):
            check_event_types([bad])
