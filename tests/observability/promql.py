"""A small PromQL reader: which series an expression selects, with which label matchers, grouped by which labels.

It tokenizes and classifies identifiers; it does not evaluate or fully parse (``promtool`` checks
syntax). An identifier is a metric name unless it is a function or aggregation (followed by ``(``),
a keyword (``by``, ``and``, ``offset`` ...), a label name (inside ``{...}`` or a grouping clause's
list), or part of a string. Grafana's template variables (``$__rate_interval``) are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Keywords that take a parenthesised list of label names.
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
#: Binary-operator keywords, modifiers and number literals spelled as words.
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
#: Aggregation operators, which may be followed by ``by (...)`` or ``without (...)`` before their ``(``.
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
)

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
  | (?P<number>\d[\w.]*|\.\d+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@:])
    """,
    re.VERBOSE,
)


class PromQLSyntaxError(ValueError):
    """The expression has a character or bracket this reader cannot make sense of."""


@dataclass(frozen=True)
class Matcher:
    """One label matcher of a selector: ``label op "value"``."""

    label: str
    op: str
    value: str


@dataclass(frozen=True)
class Selector:
    """A series selector: a metric name and its label matchers."""

    metric: str
    matchers: tuple[Matcher, ...] = ()


@dataclass(frozen=True)
class Usage:
    """What one expression reads: its selectors and the labels its grouping clauses name."""

    selectors: tuple[Selector, ...] = ()
    grouping_labels: frozenset[str] = field(default_factory=frozenset)

    @property
    def metric_names(self) -> frozenset[str]:
        """The series names the expression selects, as written (``..._total``, ``..._bucket``)."""
        return frozenset(s.metric for s in self.selectors)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def tokenize(expr: str) -> list[_Token]:
    """The expression's tokens, without white space and comments.

    Raises:
        PromQLSyntaxError: a character that starts no PromQL token.
    """
    tokens: list[_Token] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLSyntaxError(f"unexpected {expr[pos]!r} at {pos} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(_Token(kind, match.group()))
        pos = match.end()
    return tokens


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _matchers(tokens: list[_Token], start: int) -> tuple[tuple[Matcher, ...], int]:
    """Parse ``{label op "value", ...}`` from the ``{`` at ``start``; returns the matchers and the index after ``}``."""
    found: list[Matcher] = []
    i = start + 1
    while i < len(tokens) and tokens[i].text != "}":
        if tokens[i].text == ",":
            i += 1
            continue
        if i + 2 >= len(tokens) or tokens[i + 2].kind != "string" or tokens[i + 1].kind != "op":
            raise PromQLSyntaxError(f"bad label matcher near {' '.join(t.text for t in tokens[i : i + 3])!r}")
        # Label names may be keywords (`on`, `by`) or quoted; either way they are names here.
        label = _unquote(tokens[i].text) if tokens[i].kind == "string" else tokens[i].text
        found.append(Matcher(label, tokens[i + 1].text, _unquote(tokens[i + 2].text)))
        i += 3
    if i >= len(tokens):
        raise PromQLSyntaxError("unclosed '{'")
    return tuple(found), i + 1


def _label_list(tokens: list[_Token], start: int) -> tuple[list[str], int]:
    """Parse ``(label, ...)`` from the ``(`` at ``start``; returns the labels and the index after ``)``."""
    labels: list[str] = []
    i = start + 1
    while i < len(tokens) and tokens[i].text != ")":
        if tokens[i].kind in ("ident", "string"):
            labels.append(_unquote(tokens[i].text) if tokens[i].kind == "string" else tokens[i].text)
        elif tokens[i].text != ",":
            raise PromQLSyntaxError(f"unexpected {tokens[i].text!r} in a label list")
        i += 1
    if i >= len(tokens):
        raise PromQLSyntaxError("unclosed '(' of a label list")
    return labels, i + 1


def _next_text(tokens: list[_Token], i: int) -> str:
    return tokens[i].text if i < len(tokens) else ""


def parse(expr: str) -> Usage:
    """The selectors and grouping labels of a PromQL expression.

    Raises:
        PromQLSyntaxError: the expression cannot be tokenized, or a matcher or label list is malformed.
    """
    tokens = tokenize(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.kind == "ident":
            word = token.text.lower()
            if word in _GROUPING:
                if _next_text(tokens, i + 1) == "(":
                    labels, i = _label_list(tokens, i + 1)
                    grouping.update(labels)
                else:
                    i += 1
                continue
            if word in _KEYWORDS or word in _AGGREGATIONS or _next_text(tokens, i + 1) == "(":
                i += 1  # a keyword, an aggregation, or a function
                continue
            matchers: tuple[Matcher, ...] = ()
            i += 1
            if _next_text(tokens, i) == "{":
                matchers, i = _matchers(tokens, i)
            selectors.append(Selector(token.text, matchers))
            continue
        if token.text == "{":
            # A selector without a name outside the braces: {__name__="metric", ...}.
            matchers, i = _matchers(tokens, i)
            names = [m.value for m in matchers if m.label == "__name__" and m.op == "="]
            if not names:
                raise PromQLSyntaxError(f"a selector without a metric name in {expr!r}")
            selectors.append(Selector(names[0], tuple(m for m in matchers if m.label != "__name__")))
            continue
        i += 1
    return Usage(tuple(selectors), frozenset(grouping))


def metric_names(expr: str) -> frozenset[str]:
    """The series names a PromQL expression selects, as written (``..._total``, ``..._bucket``)."""
    return parse(expr).metric_names
