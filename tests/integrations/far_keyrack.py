"""A second, real Keyrack for the ``keyrack`` connector: its own database, its own app,
served by uvicorn on a loopback socket, with one organization and one API key.

The only thing in front of it is ``Faults``, which answers the next request with a
status a test asks for (a 5xx the far side would only give when it is in trouble);
everything else (keys, limits, 401s with their problem documents, 429s with
``Retry-After``) is the far Keyrack's own behaviour.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from keyrack.domain.crm import RecordType
from keyrack.domain.ids import new_ref
from keyrack.http.protocol import http_protocol
from keyrack.server import create_app
from keyrack.services import keys
from keyrack.services.context import Context
from keyrack.services.crm import clients, records
from keyrack.storage.database import Database
from keyrack.storage.tables.crm import Client
from tests.conftest import OPERATOR, Seeded, make_settings, seed_org
from tests.live import serve_in_thread

CRM = ("clients", "contacts", "contracts", "engagements")
PERMISSIONS = tuple(f"{kind}:{right}" for kind in CRM for right in ("read", "write"))


@dataclass
class Faults:
    """ASGI middleware: the next ``pending`` requests get these statuses instead."""

    app: ASGIApp
    pending: list[int] = field(default_factory=list)
    seen: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.pending:
            status = self.pending.pop(0)
            self.seen.append((scope["method"], scope["path"], status))
            body = json.dumps(
                {
                    "type": "about:blank",
                    "title": "Service Unavailable",
                    "status": status,
                    "detail": "the far Keyrack is in trouble",
                }
            ).encode()
            headers = [(b"content-type", b"application/problem+json")]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return

        async def recording(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.seen.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, recording)


@dataclass
class FarKeyrack:
    ctx: Context
    seeded: Seeded
    url: str
    faults: Faults
    secret: str

    @property
    def scope(self) -> Any:
        return self.seeded.scope

    def new_key(self, **options: Any) -> tuple[str, str]:
        """Another key of the far organization: (ref, secret)."""
        options.setdefault("permissions", PERMISSIONS)
        view, secret = self.seeded.new_key(**options)
        return view.ref, secret

    def seed_clients(self, count: int, per_transaction: int = 1) -> list[str]:
        """``count`` clients, ``per_transaction`` to a transaction (sharing a stamp)."""
        made: list[str] = []
        while len(made) < count:
            with self.ctx.db.transaction() as session:
                at = records.stamp(session, self.seeded.org_id, self.ctx.clock())
                for _ in range(min(per_transaction, count - len(made))):
                    row = Client(
                        ref=new_ref("cli"),
                        org_id=self.seeded.org_id,
                        location_id=None,
                        name=f"Client {len(made)}",
                        status="active",
                        owner_email=None,
                        arr_cents=0,
                        health=None,
                        custom_fields={},
                    )
                    records.created(
                        session, self.scope, RecordType.CLIENTS, row, at=at, external_id_changes={}
                    )
                    made.append(row.ref)
        return made

    def rename(self, ref: str, name: str) -> None:
        clients.update_client(self.ctx, OPERATOR, self.scope, ref, name=name)

    def client(self, ref: str) -> clients.ClientView:
        return clients.get_client(self.ctx, self.scope, ref)

    def all_clients(self) -> list[clients.ClientView]:
        found: list[clients.ClientView] = []
        cursor = None
        while True:
            page = clients.list_clients(self.ctx, self.scope, limit=500, cursor=cursor)
            found += page.data
            cursor = page.next_cursor
            if cursor is None:
                return found

    def revoke(self, ref: str | None = None) -> None:
        keys.revoke_key(self.ctx, OPERATOR, self.scope, ref or self.seeded.key.ref, reason="leaked")

    def limit(self, ref: str, rate_per_second: int) -> None:
        keys.update_key(self.ctx, OPERATOR, self.scope, ref, rate_per_second=rate_per_second)

    def spend(self, secret: str) -> None:
        """Use the key until the far side answers 429: its budget is spent for now."""
        with httpx.Client(base_url=self.url, headers={"X-API-Key": secret}) as http:
            for _ in range(20):
                if http.get("/api/v2/health").status_code == 429:
                    return
        raise AssertionError("the far Keyrack never answered 429")


@contextmanager
def far_keyrack(
    database_url: str, slug: str = "far", *, rate_per_second: int = 10_000
) -> Iterator[FarKeyrack]:
    """A Keyrack on ``database_url`` (migrated, empty) served on a loopback socket, with an
    organization and a key holding the CRM permissions at ``rate_per_second``."""
    settings = make_settings(database_url)
    ctx = Context(settings=settings, db=Database(settings.database_url))
    seeded = seed_org(ctx, slug, permissions=PERMISSIONS)
    ref, secret = seeded.key.ref, seeded.secret
    keys.update_key(ctx, OPERATOR, seeded.scope, ref, rate_per_second=rate_per_second)
    faults = Faults(create_app(ctx=ctx))
    try:
        with serve_in_thread(faults, http=http_protocol(settings)) as url:
            yield FarKeyrack(ctx, seeded, url, faults, secret)
    finally:
        ctx.db.dispose()


def sqlite_copy(template: Path, folder: Path, name: str = "far.db") -> str:
    """A migrated, empty SQLite database: a copy of the session's template."""
    target = folder / name
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"
