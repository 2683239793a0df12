"""Secrets never reach the database files, a database dump, or the logs."""

from __future__ import annotations

import logging
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from keyrack.services import keys
from keyrack.services.context import Context
from tests.conftest import OPERATOR, Seeded


def database_image(ctx: Context) -> bytes:
    """Everything the database holds, as bytes: the SQLite files, or a pg_dump."""
    if ctx.db.dialect == "sqlite":
        ctx.db.dispose()  # let SQLite checkpoint; read the WAL too in case it did not
        database = Path(make_url(ctx.db.url).database or "")
        files = [database, *database.parent.glob(database.name + "-*")]
        return b"".join(path.read_bytes() for path in files if path.exists())
    with ctx.db.engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    if shutil.which("pg_dump") is None:
        pytest.fail("pg_dump is needed to dump the PostgreSQL test schema")
    url = make_url(ctx.db.url)
    dump = subprocess.run(
        [
            "pg_dump",
            "-h",
            url.host or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            "-n",
            schema,
            "--data-only",
            url.database or "test",
        ],
        capture_output=True,
        check=True,
    )
    return dump.stdout


def secret_fragments(secret: str) -> list[bytes]:
    """The whole key and its random body: neither may appear anywhere."""
    return [secret.encode(), secret[8:40].encode()]


def test_keys_leave_no_secret_in_the_database_or_logs(
    seeded: Seeded, api: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [seeded.secret]
    view, secret = seeded.new_key(name="Production", permissions=["keys:manage"])
    secrets.append(secret)
    _, rolled = keys.roll_key(
        seeded.ctx, OPERATOR, seeded.scope, view.ref, grace=timedelta(hours=1)
    )
    secrets.append(rolled)
    created = api.post("/api/v2/keys", headers=seeded.headers(), json={"name": "Via API"})
    secrets.append(created.json()["key"])
    for candidate in secrets:
        api.get("/api/v2/keys", headers={"X-API-Key": candidate})
    api.get("/api/v2/keys", headers={"X-API-Key": secret[:-1] + "x"})  # a typo, logged as failure

    image = database_image(seeded.ctx)
    assert len(image) > 1000  # the image really holds the tables
    assert view.ref.encode() in image  # the control: metadata is there
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for candidate in secrets:
        for fragment in secret_fragments(candidate):
            assert fragment not in image
            assert fragment.decode() not in logs
