"""The API's resources: one generic CRUD helper, specialised in a few lines each.

Every method returns the decoded JSON body (a ``dict``); a list returns one
``Page`` and its ``iter…`` twin walks every page lazily.
"""

from __future__ import annotations

import csv
import gzip as gzip_module
import io
import json
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote

from keyrack.client._pagination import Page, iterate
from keyrack.domain.crm import ExternalRef

Record = dict[str, Any]


class Requester(Protocol):
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any: ...


class Listing:
    """A cursor-paged ``GET`` list: ``list`` for one page, ``iter`` for every item."""

    def __init__(self, client: Requester, path: str) -> None:
        self._client = client
        self._path = path

    def _item(self, ident: str | int, *action: str) -> str:
        return "/".join([self._path, quote(str(ident), safe=""), *action])

    def list(
        self, *, limit: int | None = None, cursor: str | None = None, **filters: Any
    ) -> Page[Record]:
        """One page; pass its ``next_cursor`` back as ``cursor`` for the next one."""
        body = self._client.request(
            "GET", self._path, params={"limit": limit, "cursor": cursor, **filters}
        )
        return Page.of(body)

    def iter(self, *, limit: int | None = None, **filters: Any) -> Iterator[Record]:
        """Every item, ``limit`` per request, fetching pages only as they are consumed."""
        return iterate(lambda cursor: self.list(limit=limit, cursor=cursor, **filters))

    def get(self, ident: str | int) -> Record:
        found: Record = self._client.request("GET", self._item(ident))
        return found


class Resource(Listing):
    """``list``/``iter``/``get`` plus ``create``/``update``/``delete`` on ``/api/v2/<name>``."""

    def create(self, **fields: Any) -> Record:
        created: Record = self._client.request("POST", self._path, json=fields)
        return created

    def update(self, ident: str | int, **fields: Any) -> Record:
        """Change only the fields given (``PATCH``)."""
        updated: Record = self._client.request("PATCH", self._item(ident), json=fields)
        return updated

    def delete(self, ident: str | int) -> Record | None:
        """Delete; returns the server's last view of the item, if it sends one."""
        deleted: Record | None = self._client.request("DELETE", self._item(ident))
        return deleted


class Records(Resource):
    """A kind of CRM record (clients, contacts, contracts, engagements): a ``Resource`` whose
    items carry ``external_ids``, and whose lists also filter by one of them and by change.

    ``list``/``iter`` take ``external_id`` (``"hubspot:123"`` or ``("hubspot", "123")``) and
    ``updated_since`` (an aware ``datetime``): the records changed since then, oldest change
    first, so an ``iter(updated_since=…)`` walk skips no change and repeats no version (a
    record changed during the walk comes again, later, as it is now).
    """

    def list(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        external_id: str | tuple[str, str] | None = None,
        updated_since: datetime | None = None,
        **filters: Any,
    ) -> Page[Record]:
        if isinstance(external_id, tuple):
            external_id = str(ExternalRef(*external_id))
        return super().list(
            limit=limit,
            cursor=cursor,
            external_id=external_id,
            updated_since=updated_since,
            **filters,
        )

    def find_by_external_id(self, system: str, external_id: str) -> Record | None:
        """The record whose ``system`` id is ``external_id``, or None (none in the key's scope)."""
        found = self.list(external_id=(system, external_id), limit=1).data
        return found[0] if found else None


class Keys(Resource):
    """Key management (``keys:manage``), plus ``self()`` for the calling key."""

    def __init__(self, client: Requester) -> None:
        super().__init__(client, "/api/v2/keys")

    def self(self) -> Record:
        """The calling key: ref, scope, permissions, limits, deadlines (any valid key)."""
        return self.get("self")

    def create(  # type: ignore[override]
        self,
        *,
        name: str,
        environment: str = "sandbox",
        permissions: Sequence[str] = (),
        **fields: Any,
    ) -> Record:
        """A new key; the secret is in the ``key`` field of the answer, and only there."""
        return super().create(
            name=name, environment=environment, permissions=list(permissions), **fields
        )

    def roll(self, ref: str, *, grace_seconds: int = 0) -> Record:
        """A new secret for ``ref``; the old one works ``grace_seconds`` more (0: voided now)."""
        rolled: Record = self._client.request(
            "POST", self._item(ref, "roll"), json={"grace_seconds": grace_seconds}
        )
        return rolled

    def revoke(self, ref: str, *, reason: str) -> Record:
        revoked: Record = self._client.request(
            "POST", self._item(ref, "revoke"), json={"reason": reason}
        )
        return revoked


class Usage:
    """Product usage events: push batches, read aggregates per client and period."""

    def __init__(self, client: Requester) -> None:
        self._client = client
        buckets = Listing(client, "/api/v2/usage")
        self.aggregate = buckets.list
        """One page of totals; filters: ``period``, ``client_id``, ``event``, ``since``, ``until``."""
        self.iter_aggregate = buckets.iter

    def push(self, events: Iterable[Mapping[str, Any]]) -> Record:
        """Send a batch of events; an ``id`` already received is reported as a duplicate."""
        pushed: Record = self._client.request(
            "POST", "/api/v2/usage", json={"events": [dict(e) for e in events]}
        )
        return pushed


class Pulse(Listing):
    """Client feedback (NPS 0-10 and a comment): submit, list, get, and the NPS summary."""

    def __init__(self, client: Requester) -> None:
        super().__init__(client, "/api/v2/pulse")
        summaries = Listing(client, "/api/v2/pulse/summary")
        self.summary = summaries.list
        """One page of NPS per client and period; filters as for ``list`` plus ``period``."""
        self.iter_summary = summaries.iter

    def submit(self, **fields: Any) -> Record:
        submitted: Record = self._client.request("POST", self._path, json=fields)
        return submitted


class Downloader(Requester, Protocol):
    def download(self, path: str, sink: BinaryIO) -> int: ...


EXPORT_UNDER_WAY = ("queued", "running")


class Exports(Listing):
    """Bulk exports (``exports:create``): ``create`` one, ``wait`` for it, then ``download``
    its file or ``iter_rows`` over it (a CSV row as a ``dict`` of text, an NDJSON line as
    its object). For the next incremental export pass ``updated_since`` the finished
    export's ``next_updated_since``: no change is skipped or repeated."""

    def __init__(self, client: Downloader) -> None:
        super().__init__(client, "/api/v2/exports")
        self._downloader = client

    def create(
        self,
        resource: str,
        *,
        format: str = "csv",
        gzip: bool = False,
        updated_since: datetime | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> Record:
        """Queue an export (``ConflictError`` while one of the same resource runs)."""
        body = {"resource": resource, "format": format, "gzip": gzip, "filters": filters or {}}
        if updated_since is not None:
            body["updated_since"] = updated_since
        created: Record = self._client.request("POST", self._path, json=body)
        return created

    def cancel(self, ident: str) -> Record:
        canceled: Record = self._client.request("POST", self._item(ident, "cancel"))
        return canceled

    def wait(self, ident: str, *, poll: float = 1.0, timeout: float | None = None) -> Record:
        """The export once it has ended (succeeded, failed, canceled), polling every ``poll`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found = self.get(ident)
            if found["status"] not in EXPORT_UNDER_WAY:
                return found
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"export {ident} is still {found['status']}")
            time.sleep(poll)

    def download(self, ident: str, sink: BinaryIO) -> int:
        """Write the file into ``sink`` as it streams; returns its bytes."""
        return self._downloader.download(self._item(ident, "download"), sink)

    def iter_rows(self, ident: str) -> Iterator[dict[str, Any]]:
        """Every row of a succeeded export. The file is spooled to a temporary file first, so
        memory stays flat and no request is held open while the rows are consumed."""
        export = self.get(ident)
        with tempfile.TemporaryFile() as spool:
            self.download(ident, spool)
            spool.seek(0)
            raw: BinaryIO = spool
            if export["gzip"]:
                raw = gzip_module.GzipFile(fileobj=spool)  # type: ignore[assignment]
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            if export["format"] == "csv":
                yield from csv.DictReader(text)
            else:
                for line in text:
                    if line.strip():
                        yield json.loads(line)
