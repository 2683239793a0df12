"""A parser for the subset of SOQL an incremental sync needs, with Salesforce's own errors.

    SELECT field, … FROM Object
      [WHERE field op literal [AND …]]     op: = != <> < <= > >= IN (…) NOT IN (…)
      [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST], …]
      [LIMIT n]

Literals: 'strings' (with backslash escapes), numbers, true/false/null, date literals
(``2026-01-01``) and datetime literals (``2026-01-01T00:00:00Z``, ``…+02:00``), unquoted as
SOQL wants them. Keywords and field names are case-insensitive. Everything else (OR,
parentheses, relationship fields, functions, subqueries, GROUP BY, OFFSET, FIELDS()) is
refused with ``MALFORMED_QUERY``, and its message points at the token the way Salesforce
does (``ERROR at Row:1:Column:n``). Field and object names are checked by the caller,
which knows the schema (``INVALID_FIELD``, ``INVALID_TYPE``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))"
    r"|(?P<date>\d{4}-\d{2}-\d{2})"
    r"|(?P<number>-?\d+(?:\.\d+)?)"
    r"|(?P<string>'(?:[^'\\]|\\.)*')"
    r"|(?P<op><=|>=|!=|<>|=|<|>)"
    r"|(?P<punct>[,()])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)"
    r"|(?P<bad>.)"
)
_KEYWORDS = {"select", "from", "where", "and", "order", "by", "asc", "desc", "limit", "in", "not"}
_KEYWORDS |= {"nulls", "first", "last", "true", "false", "null"}


class SoqlError(Exception):
    """A query Salesforce would refuse: ``code`` and ``message`` as it answers them."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    at: int  # offset in the query

    @property
    def word(self) -> str:
        return self.text.lower() if self.kind == "name" else ""


@dataclass(frozen=True)
class Literal:
    kind: str  # string | number | boolean | null | date | datetime
    value: Any
    token: Token


@dataclass(frozen=True)
class Condition:
    field: Token
    op: str  # = != < <= > >= in notin
    values: tuple[Literal, ...]


@dataclass(frozen=True)
class Order:
    field: Token
    descending: bool
    nulls_last: bool


@dataclass
class Query:
    text: str
    fields: list[Token]
    sobject: Token
    where: list[Condition] = field(default_factory=list)
    order: list[Order] = field(default_factory=list)
    limit: int | None = None

    def pointing_at(self, token: Token, message: str) -> str:
        """Salesforce's way of quoting the query with a caret under ``token``."""
        before = self.text[: token.at]
        row = before.count("\n") + 1
        line_start = before.rfind("\n") + 1
        line_end = self.text.find("\n", token.at)
        line = self.text[line_start : line_end if line_end >= 0 else None]
        column = token.at - line_start + 1
        return f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{message}"


def parse(text: str) -> Query:
    tokens = _tokens(text)
    return _Parser(text, tokens).query()


def _tokens(text: str) -> list[Token]:
    found = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "bad"
        if kind != "ws":
            found.append(Token(kind, match.group(), match.start()))
    return found


class _Parser:
    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.pos = 0
        self._partial = Query(text, [], Token("name", "", 0))

    def fail(self, token: Token | None = None) -> SoqlError:
        token = token or self.peek()
        shown = "<EOF>" if token.kind == "eof" else token.text
        return SoqlError(
            "MALFORMED_QUERY", self._partial.pointing_at(token, f"unexpected token: {shown}")
        )

    def peek(self) -> Token:
        if self.pos < len(self.tokens):
            return self.tokens[self.pos]
        return Token("eof", "", len(self.text))

    def take(self) -> Token:
        token = self.peek()
        self.pos += 1
        return token

    def keyword(self, word: str) -> bool:
        if self.peek().word == word:
            self.pos += 1
            return True
        return False

    def expect(self, word: str) -> None:
        if not self.keyword(word):
            raise self.fail()

    def name(self) -> Token:
        token = self.take()
        if token.kind != "name" or token.word in _KEYWORDS:
            raise self.fail(token)
        if "." in token.text or self.peek().text == "(":
            raise self.fail(token if "." in token.text else self.peek())
        return token

    def query(self) -> Query:
        self.expect("select")
        fields = [self.name()]
        while self.peek().text == ",":
            self.take()
            fields.append(self.name())
        self.expect("from")
        query = Query(self.text, fields, self.name())
        if self.keyword("where"):
            query.where.append(self.condition())
            while self.keyword("and"):
                query.where.append(self.condition())
        if self.keyword("order"):
            self.expect("by")
            query.order.append(self.order())
            while self.peek().text == ",":
                self.take()
                query.order.append(self.order())
        if self.keyword("limit"):
            token = self.take()
            if token.kind != "number" or not token.text.isdigit():
                raise self.fail(token)
            query.limit = int(token.text)
        if self.peek().kind != "eof":
            raise self.fail()
        return query

    def condition(self) -> Condition:
        name = self.name()
        token = self.take()
        if token.kind == "op":
            op = "!=" if token.text == "<>" else token.text
            return Condition(name, op, (self.literal(),))
        negated = token.word == "not"
        if negated:
            token = self.take()
        if token.word != "in":
            raise self.fail(token)
        if self.take().text != "(":
            raise self.fail(self.tokens[self.pos - 1])
        values = [self.literal()]
        while self.peek().text == ",":
            self.take()
            values.append(self.literal())
        if self.take().text != ")":
            raise self.fail(self.tokens[self.pos - 1])
        return Condition(name, "notin" if negated else "in", tuple(values))

    def literal(self) -> Literal:
        token = self.take()
        if token.kind == "string":
            value = re.sub(r"\\(.)", r"\1", token.text[1:-1])
            return Literal("string", value, token)
        if token.kind == "number":
            return Literal("number", float(token.text), token)
        if token.kind == "date":
            return Literal("date", token.text, token)
        if token.kind == "datetime":
            moment = dt.datetime.fromisoformat(token.text.replace("Z", "+00:00"))
            return Literal("datetime", int(moment.timestamp() * 1000), token)
        if token.word in ("true", "false"):
            return Literal("boolean", token.word == "true", token)
        if token.word == "null":
            return Literal("null", None, token)
        raise self.fail(token)

    def order(self) -> Order:
        name = self.name()
        descending = self.keyword("desc")
        if not descending:
            self.keyword("asc")
        nulls_last = descending
        if self.keyword("nulls"):
            if self.keyword("last"):
                nulls_last = True
            else:
                self.expect("first")
                nulls_last = False
        return Order(name, descending, nulls_last)
