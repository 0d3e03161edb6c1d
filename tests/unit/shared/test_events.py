from __future__ import annotations

import pytest

from shared.errors import InvalidInput
from shared.messaging.events import CloudEvent, IndexPublished


def test_envelope_round_trips_with_cloudevents_fields() -> None:
    data = IndexPublished(tenant="t", collection="c", version="0000000001-ab", documents=3, segments=1)
    event = CloudEvent.wrap(data, source="semaflow/indexer", subject="c")
    decoded = CloudEvent.decode(event.encode())
    assert decoded == event
    assert decoded.specversion == "1.0"
    assert decoded.type == "index.published"
    assert decoded.payload() == data


def test_unknown_type_is_invalid() -> None:
    event = CloudEvent(source="x", type="nope", data={})
    with pytest.raises(InvalidInput):
        event.payload()


def test_garbage_is_invalid() -> None:
    with pytest.raises(InvalidInput):
        CloudEvent.decode(b"{not json")
    with pytest.raises(InvalidInput):
        CloudEvent.decode(b'{"specversion": "0.3", "source": "x", "type": "t", "data": {}}')
