"""Model batches cut from texts ordered by token count: what every backend feeds its model.

A call's texts are tokenised by the model's own tokenizer (sentence-transformers' ``preprocess``: the same ids
and truncation as its ``encode``), in parts (:func:`parts`), each part ordered by token count, longest first,
and cut into batches. Sorting by characters, as sentence-transformers does, leaves batches whose longest text
has many more tokens than the rest (a number or a chemical name is many tokens), and the model computes every
padding position: 30 % of the positions for one-sentence texts, 7 % sorted by tokens. Each batch is cut to its
own longest text (padding is on the right, so the cut leaves every text's ids, and thus its vector, as they
were).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# The transformer's inputs, as sentence-transformers' tokenizer names them.
INPUTS: Final = ("input_ids", "attention_mask", "token_type_ids")
# Most texts tokenised in one part after the head: bounds the padded ids a long call holds at once
# (8,192 x 256 positions x 3 inputs x 8 bytes = 50 MB).
MAX_PART: Final = 8_192

Indices = np.ndarray[Any, np.dtype[np.intp]]


class Batch(NamedTuple):
    """One model batch: which of the call's texts (``rows``), the model's inputs, and their attention mask."""

    rows: Indices
    inputs: dict[str, np.ndarray[Any, Any]]
    attention: np.ndarray[Any, Any]


def parts(texts: Sequence[str], head: int) -> list[Indices]:
    """Indices of ``texts`` in the groups tokenised in turn: a long call's ``head`` longest texts (by characters)
    first, so that the model has work while the rest is tokenised, then the rest in parts of at most
    :data:`MAX_PART`, longest first; a short call (up to two heads, or up to :data:`MAX_PART` without a head)
    in one part, in its own order."""
    if len(texts) <= (2 * head if head > 0 else MAX_PART):
        return [np.arange(len(texts))]
    by_chars = np.argsort(-np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), kind="stable")
    rest = by_chars[head:]
    return ([by_chars[:head]] if head > 0 else []) + [rest[at : at + MAX_PART] for at in range(0, len(rest), MAX_PART)]


def token_batches(
    model: SentenceTransformer,
    texts: Sequence[str],
    groups: list[Indices],
    batch_size: int,
    *,
    max_tokens: int = 0,
    inputs: Sequence[str] = INPUTS,
) -> Iterator[Batch]:
    """The model batches of ``texts``, part by part of ``groups``: each part tokenised when its first batch is
    asked for (the batches of the part before can be running meanwhile), ordered by token count, longest first,
    and cut into batches of at most ``batch_size`` texts and, when ``max_tokens`` is set, at most that many
    positions (texts x the batch's longest text; a text longer than that goes alone). ``inputs`` names the
    tokenizer's outputs the model takes."""
    right = getattr(model.tokenizer, "padding_side", "right") == "right"
    for part in groups:
        if len(part) == 0:
            continue
        features = model.preprocess([texts[k] for k in part])
        arrays = {k: features[k].numpy() for k in inputs if k in features}
        attention = features["attention_mask"].numpy()
        lengths = attention.sum(axis=1)
        order = np.argsort(-lengths, kind="stable")
        start = 0
        while start < len(order):
            end = start + batch_size
            if max_tokens > 0:  # the first text is the batch's longest
                end = min(end, start + max(1, max_tokens // max(1, int(lengths[order[start]]))))
            rows = order[start:end]
            width = int(lengths[rows].max()) if right else attention.shape[1]
            feed = {k: np.ascontiguousarray(v[rows, :width]) for k, v in arrays.items()}
            yield Batch(part[rows], feed, attention[rows, :width])
            start = end
