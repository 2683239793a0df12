"""Leaked keys are revoked with an audit record; logs are JSON and never carry a key."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from fastapi import FastAPI

from keyrack.domain.events import KeyChanged
from keyrack.domain.keys import Environment, generate
from keyrack.logging import REQUEST_ID, JsonFormatter, redact
from keyrack.services import audit, keys
from keyrack.services.leaks import revoke_leaked
from tests.conftest import OPERATOR, MutableClock, Seeded
from tests.gateway.conftest import Serve


def test_a_leaked_valid_key_is_revoked_once_with_a_key_leaked_audit(seeded: Seeded) -> None:
    events: list[object] = []
    seeded.ctx.bus.subscribe(events.append)
    assert revoke_leaked(seeded.ctx, seeded.secret, "a public gist") is True
    view = keys.get_key(seeded.ctx, seeded.scope, seeded.key.ref)
    assert view.status.value == "revoked" and view.revoked_reason == "leaked: a public gist"
    assert events == [KeyChanged(seeded.key.id, events[0].digests)]  # type: ignore[attr-defined]
    assert revoke_leaked(seeded.ctx, seeded.secret, "again") is False
    recorded = audit.list_events(seeded.ctx, seeded.org_id, audit.AuditFilter(action="key.leaked"))
    assert len(recorded.data) == 1 and recorded.data[0].target_ref == seeded.key.ref


def test_garbage_unknown_and_voided_secrets_are_not_revocations(
    seeded: Seeded, clock: MutableClock
) -> None:
    assert revoke_leaked(seeded.ctx, "kr_live_nonsense", "x") is False
    assert revoke_leaked(seeded.ctx, generate(Environment.SANDBOX).secret, "x") is False
    keys.roll_key(seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref, grace=timedelta(hours=1))
    clock.advance(timedelta(hours=1))
    assert revoke_leaked(seeded.ctx, seeded.secret, "x") is False
    assert keys.get_key(seeded.ctx, seeded.scope, seeded.key.ref).status.value == "active"


def test_a_where_holding_a_key_is_redacted_before_the_audit(seeded: Seeded) -> None:
    assert revoke_leaked(seeded.ctx, seeded.secret, f"https://x.test/?k={seeded.secret}")
    view = keys.get_key(seeded.ctx, seeded.scope, seeded.key.ref)
    assert view.revoked_reason == "leaked: https://x.test/?k=kr_test_[redacted]"


@pytest.mark.parametrize(
    "text",
    [
        "kr_live_4Jd8s0dK2m1qQx8aP0zR7y3tW5vB9nC1eF2gH3",
        "GET /api/v2/x?api_key=kr_test_abc HTTP/1.1",
        "kr%5Flive%5Fabcdef",
    ],
)
def test_redact_removes_anything_shaped_like_a_key(text: str) -> None:
    assert "abc" not in redact(text) and "4Jd8" not in redact(text)
    assert "[redacted]" in redact(text)


def test_json_log_lines_carry_the_request_id_and_no_key(seeded: Seeded) -> None:
    record = logging.LogRecord(
        "keyrack.test", logging.WARNING, __file__, 1, "saw %s", (seeded.secret,), None
    )
    record.header = f"Bearer {seeded.secret}"
    token = REQUEST_ID.set("req-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        REQUEST_ID.reset(token)
    assert seeded.secret not in line
    parsed = json.loads(line)
    assert parsed["request_id"] == "req-1" and parsed["level"] == "WARNING"
    assert parsed["message"] == "saw kr_test_[redacted]"


def test_access_log_lines_name_the_key_ref_never_the_secret_or_query(
    app: FastAPI, serve: Serve, seeded: Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="keyrack.access"), serve(app) as api:
        api.get("/api/v2/health", headers=seeded.headers())
        api.get("/api/v2/health", params={"api_key": seeded.secret})
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "keyrack.access"]
    assert len(lines) == 2
    assert all(seeded.secret not in line and "api_key" not in line for line in lines)
    first = json.loads(lines[0])
    assert first["key"] == seeded.key.ref and first["status"] == 200 and first["request_id"]


def test_the_fast_access_line_is_the_json_line_and_holds_no_secret(seeded: Seeded) -> None:
    import os

    from keyrack.logging import AccessLog

    read, write = os.pipe()
    try:
        access = AccessLog(write)
        access.write("GET", f'/api/v2/x/{seeded.secret}/"q"', 404, 0.0012345, None, "req-1")
        access.write("GET", "/api/v2/health", 200, 0.0005, seeded.key.ref, None)
        lines = os.read(read, 65536).decode().splitlines()
    finally:
        os.close(read)
        os.close(write)
    assert len(lines) == 2 and all(seeded.secret not in line for line in lines)
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == 'GET /api/v2/x/kr_test_[redacted]/"q" 404'
    assert first["request_id"] == "req-1" and first["key"] is None and first["status"] == 404
    assert first["duration_ms"] == 1.234 and first["logger"] == "keyrack.access"
    assert first["level"] == "INFO" and first["ts"].endswith("+00:00")
    assert second["key"] == seeded.key.ref and second["request_id"] is None
