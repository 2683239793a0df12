"""Bulk exports (SPEC §6.1): what may be exported, how a row is written, and byte ranges.

An export is a file of one resource's rows in ``(changed_at, id)`` order, written once
by a job and then downloaded, whole or by ``Range``, until it expires
(``DOWNLOAD_LIFETIME``). CSV follows RFC 4180: UTF-8, a header row, CRLF line ends,
fields quoted when they hold a comma, a quote or a line break; a record's custom
fields become columns ``custom.<name>`` and its external ids ``external_ids.<system>``,
the names being every one that occurs in the export (sorted). An empty cell is a
missing value. NDJSON is one JSON object a line, shaped as the API shows a record.

``Encoder`` turns records into bytes as they come, holding only what it has not yet
handed back, so writing an export takes the same memory whatever its length.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from keyrack.errors import InvalidInput, KeyrackError

DOWNLOAD_LIFETIME = timedelta(days=7)
PART_SIZE = 256 * 1024
"""The bytes of one stored part of a file (the last one may be shorter)."""
CUSTOM_PREFIX = "custom."
EXTERNAL_PREFIX = "external_ids."


class Resource(enum.StrEnum):
    CLIENTS = "clients"
    CONTACTS = "contacts"
    CONTRACTS = "contracts"
    PULSE = "pulse"
    USAGE = "usage"
    ENGAGEMENTS = "engagements"


READ_PERMISSION: dict[Resource, str] = {
    Resource.CLIENTS: "clients:read",
    Resource.CONTACTS: "contacts:read",
    Resource.CONTRACTS: "contracts:read",
    Resource.PULSE: "pulse:read",
    Resource.USAGE: "usage:read",
    Resource.ENGAGEMENTS: "engagements:read",
}
"""Exporting a resource needs ``exports:create`` and the permission to read it."""

FILTERS: dict[Resource, frozenset[str]] = {
    Resource.CLIENTS: frozenset({"status"}),
    **{r: frozenset({"client_id"}) for r in Resource if r is not Resource.CLIENTS},
}
"""The filters each resource's export takes (besides ``updated_since``)."""


class Format(enum.StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"


class ExportStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"


Status = ExportStatus


UNDER_WAY: tuple[Status, ...] = (Status.QUEUED, Status.RUNNING)


def media_type(fmt: Format, gzipped: bool) -> str:
    if gzipped:
        return "application/gzip"
    return "text/csv; charset=utf-8" if fmt is Format.CSV else "application/x-ndjson"


def file_name(ref: str, resource: Resource, fmt: Format, gzipped: bool) -> str:
    return f"{resource.value}-{ref}.{fmt.value}" + (".gz" if gzipped else "")


def check_filters(resource: Resource, filters: Mapping[str, Any]) -> dict[str, str]:
    """``filters`` as text values, refusing any the resource does not take."""
    unknown = sorted(set(filters) - FILTERS[resource])
    if unknown:
        known = ", ".join(sorted(FILTERS[resource]))
        raise InvalidInput(
            f"unknown filter(s) for {resource.value}: {', '.join(unknown)}; known: {known}"
        )
    for name, value in filters.items():
        if not isinstance(value, str) or not 0 < len(value) <= 200:
            raise InvalidInput(f"filter {name!r} takes a text value of 1 to 200 characters")
    return dict(filters)


def columns(fields: Sequence[str], custom: Iterable[str], systems: Iterable[str]) -> list[str]:
    """The CSV header: the resource's fields, then its custom fields and external ids."""
    return [
        *fields,
        *(CUSTOM_PREFIX + name for name in sorted(custom)),
        *(EXTERNAL_PREFIX + name for name in sorted(systems)),
    ]


def cell(value: Any) -> str:
    """One CSV field: empty for a missing value, ``true``/``false``, ISO-8601 times, JSON
    for anything structured."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _json_default(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class Encoder:
    """Records in, bytes out: ``write`` buffers, ``take`` hands back what is ready,
    ``close`` the rest (and the gzip trailer). ``size`` counts the bytes handed back."""

    def __init__(self, fmt: Format, gzipped: bool, header: Sequence[str]) -> None:
        self.fmt, self.header = fmt, list(header)
        self._text = io.StringIO()
        self._csv = csv.writer(self._text, lineterminator="\r\n")
        self._zip = zlib.compressobj(6, zlib.DEFLATED, 31) if gzipped else None
        self._ready = bytearray()
        self.size = 0
        # a header as ``columns`` makes it: the fields, then custom fields, then external ids
        self._plain = [n for n in self.header if not n.startswith((CUSTOM_PREFIX, EXTERNAL_PREFIX))]
        self._custom = [n[len(CUSTOM_PREFIX) :] for n in self.header if n.startswith(CUSTOM_PREFIX)]
        self._systems = [
            n[len(EXTERNAL_PREFIX) :] for n in self.header if n.startswith(EXTERNAL_PREFIX)
        ]
        if fmt is Format.CSV:
            self._csv.writerow(self.header)

    def write(self, record: Mapping[str, Any]) -> None:
        if self.fmt is Format.CSV:
            custom = record.get("custom_fields") or {}
            systems = record.get("external_ids") or {}
            self._csv.writerow(
                [cell(record.get(name)) for name in self._plain]
                + [cell(custom.get(name)) for name in self._custom]
                + [cell(systems.get(name)) for name in self._systems]
            )
        else:
            line = json.dumps(record, ensure_ascii=False, default=_json_default)
            self._text.write(line + "\n")
        if self._text.tell() >= 64 * 1024:
            self._encode()

    def _encode(self) -> None:
        data = self._text.getvalue().encode()
        self._text.seek(0)
        self._text.truncate()
        self._ready += self._zip.compress(data) if self._zip else data

    @property
    def pending(self) -> int:
        """Bytes ready to be taken."""
        return len(self._ready)

    def take(self, size: int) -> bytes:
        """Up to ``size`` ready bytes."""
        chunk = bytes(self._ready[:size])
        del self._ready[:size]
        self.size += len(chunk)
        return chunk

    def close(self) -> None:
        """Encode what is buffered (and end the gzip stream): everything is then ready."""
        self._encode()
        if self._zip is not None:
            self._ready += self._zip.flush()
            self._zip = None


class RangeNotSatisfiable(KeyrackError):
    """A ``Range`` header no part of the file answers (416)."""

    code = "range-not-satisfiable"


class ByteRange(NamedTuple):
    start: int
    end: int
    """Inclusive, as in ``Content-Range``."""

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def byte_range(header: str | None, size: int) -> ByteRange | None:
    """The one range ``header`` (RFC 9110 ``bytes=a-b``, ``a-`` or ``-n``) asks of a file of
    ``size`` bytes; None for the whole file (no header, or one this does not read, which
    RFC 9110 says to ignore). ``RangeNotSatisfiable`` when it starts past the end."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multipart ranges: the whole file, 200
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:
            suffix = int(last)
            if suffix <= 0:
                raise RangeNotSatisfiable(f"the file has {size} bytes; {header!r} asks none")
            return ByteRange(max(size - suffix, 0), size - 1) if size else _none(header, size)
        start = int(first)
        end = int(last) if last else None
    except ValueError:
        return None
    if start < 0 or (end is not None and end < start):
        return None
    if start >= size:
        return _none(header, size)
    return ByteRange(start, size - 1 if end is None else min(end, size - 1))


def _none(header: str, size: int) -> ByteRange:
    raise RangeNotSatisfiable(f"the file has {size} bytes; {header!r} asks for none of them")
