"""The diagnostics rules (``keyrack.domain.diagnosis``): a record's outcome from its
steps, the causes of issues, which recent change could explain a sync's trouble, the scrubbing of secrets, the bundle's Markdown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keyrack.domain.diagnosis import (
    REDACTED,
    Change,
    Step,
    SyncFacts,
    SyncRunFacts,
    SyncSymptoms,
    causes,
    could_explain,
    markdown,
    record_outcome,
    scrub,
    scrub_value,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_a_record_fails_skips_or_would_sync() -> None:
    ok = [Step("credential", "ok", ""), Step("filter", "passed", "")]
    assert record_outcome(ok, dry_run=True) == "would-sync"
    assert record_outcome(ok, dry_run=False) == "synced"
    assert record_outcome([*ok, Step("filter", "skipped", "")], dry_run=True) == "skipped"
    assert record_outcome([*ok, Step("request", "failed", "")], dry_run=False) == "failed"


def test_a_step_keeps_its_name_over_the_data_it_carries() -> None:
    step = Step("load", "ok", "loaded", {"name": "Acme", "record_name": "Acme"})
    assert step.as_dict()["name"] == "load"


def facts(*runs: SyncRunFacts, enabled: bool = True, **more: object) -> SyncFacts:
    return SyncFacts("clients", "outbound", enabled, runs, **more)  # type: ignore[arg-type]


def test_a_credential_not_active_is_one_cause() -> None:
    [cause] = causes("revoked", "refresh-refused", [])
    assert (cause.key, cause.kind) == ("credential", "credential")
    assert "revoked" in cause.summary
    assert causes("active", "ok", []) == []


def test_runs_that_keep_failing_are_an_issue_only_when_they_persist() -> None:
    failing = SyncRunFacts(0, 0, 3)
    assert causes("active", "ok", [facts(failing)]) == []  # one run is not persisting
    [cause] = causes("active", "ok", [facts(failing, failing)])
    assert cause.key == "failing:clients:outbound"
    assert causes("active", "ok", [facts(SyncRunFacts(1, 0, 3), failing)]) == []


def test_a_filter_that_skipped_everything_in_the_last_runs_is_named() -> None:
    a = SyncRunFacts(0, 4, 0, {"1:annualrevenue": 4})
    b = SyncRunFacts(0, 2, 0, {"1:annualrevenue": 2})
    [cause] = causes("active", "ok", [facts(a, b)])
    assert cause.key == "filter-skips-all:clients:outbound:1:annualrevenue"
    mixed = SyncRunFacts(0, 2, 0, {"0:name": 2})
    assert causes("active", "ok", [facts(a, mixed)]) == []
    assert causes("active", "ok", [facts(a, SyncRunFacts(1, 2, 0, {"1:annualrevenue": 2}))]) == []


def test_a_direction_turned_off_right_after_it_worked_is_an_issue() -> None:
    off = facts(
        enabled=False,
        last_success_at=T0,
        disabled_at=T0 + timedelta(hours=3),
        disabled_by="dana@acme.test",
    )
    [cause] = causes("active", "ok", [off])
    assert cause.kind == "direction-off" and "dana@acme.test" in cause.summary
    long_off = facts(
        enabled=False,
        last_success_at=T0,
        disabled_at=T0 + timedelta(days=2),
        disabled_by="dana@acme.test",
    )
    assert causes("active", "ok", [long_off]) == []
    never_worked = facts(enabled=False, disabled_at=T0, disabled_by="dana@acme.test")
    assert causes("active", "ok", [never_worked]) == []


THIS_SYNC = "sync:clients:outbound"
ARR = {"field": "arr_cents", "op": "gt", "value": 0}
NAME = {"field": "name", "op": "exists", "value": True}
MAP_A = {"local": "name", "remote": "name", "transform": None}
MAP_B = {"local": "arr_cents", "remote": "annualrevenue", "transform": "cents_to_units"}
OFF = SyncSymptoms("clients", "outbound", False, synced=0, failed=0, last_worked_at=T0)
SKIPPED_BY_ARR = SyncSymptoms(
    "clients", "outbound", True, synced=0, failed=0, skipped_fields=frozenset({"arr_cents"})
)
FAILING = SyncSymptoms("clients", "outbound", True, synced=0, failed=3, last_worked_at=T0)
FAILING_SOME = SyncSymptoms("clients", "outbound", True, synced=2, failed=1)
WORKED_BEFORE = SyncSymptoms(
    "clients",
    "outbound",
    True,
    synced=0,
    failed=0,
    skipped_fields=frozenset({"arr_cents"}),
    last_worked_at=T0 - timedelta(hours=1),
)


@pytest.mark.parametrize(
    ("what", "before", "after", "sync", "explains"),
    [
        # turning the direction off explains that it is off, not what an enabled one shows
        (THIS_SYNC, {"enabled": True}, {"enabled": False}, OFF, True),
        (THIS_SYNC, {"enabled": True}, {"enabled": False}, SKIPPED_BY_ARR, False),
        ("sync:contacts:outbound", {"enabled": True}, {"enabled": False}, OFF, False),
        # a filter added or altered on the field that skipped records
        (THIS_SYNC, {"filters": []}, {"filters": [ARR]}, SKIPPED_BY_ARR, True),
        (
            THIS_SYNC,
            {"filters": [{**ARR, "value": -1}]},
            {"filters": [ARR]},
            SKIPPED_BY_ARR,
            True,
        ),
        (THIS_SYNC, {"filters": [ARR]}, {"filters": [ARR, NAME]}, SKIPPED_BY_ARR, False),
        (THIS_SYNC, {"filters": [ARR, NAME]}, {"filters": [ARR]}, SKIPPED_BY_ARR, False),
        (THIS_SYNC, {"filters": [NAME, ARR]}, {"filters": [ARR, NAME]}, SKIPPED_BY_ARR, False),
        (THIS_SYNC, {"filters": []}, {"filters": [ARR]}, FAILING, False),
        # mappings that changed explain failed records, not skips
        (THIS_SYNC, {"field_mappings": [MAP_A]}, {"field_mappings": [MAP_B]}, FAILING, True),
        (THIS_SYNC, {"field_mappings": [MAP_A]}, {"field_mappings": [MAP_B]}, FAILING_SOME, True),
        (
            THIS_SYNC,
            {"field_mappings": [MAP_A, MAP_B]},
            {"field_mappings": [MAP_B, MAP_A]},
            FAILING,
            False,
        ),
        (
            THIS_SYNC,
            {"field_mappings": [MAP_A]},
            {"field_mappings": [MAP_B]},
            SKIPPED_BY_ARR,
            False,
        ),
        # turning it on is its setup, unless it had worked before and not since
        (THIS_SYNC, {"enabled": False}, {"enabled": True}, SKIPPED_BY_ARR, False),
        (
            THIS_SYNC,
            {"enabled": False, "filters": []},
            {"enabled": True, "filters": [ARR]},
            SKIPPED_BY_ARR,
            False,
        ),
        (
            THIS_SYNC,
            {"enabled": False, "field_mappings": [MAP_A]},
            {"enabled": True, "field_mappings": [MAP_B]},
            FAILING,
            False,
        ),
        (
            THIS_SYNC,
            {"enabled": False, "filters": []},
            {"enabled": True, "filters": [ARR]},
            WORKED_BEFORE,
            True,
        ),
        (THIS_SYNC, {"schedule_seconds": 900}, {"schedule_seconds": 60}, FAILING, False),
        # the credential or the connection, when the sync failed and synced nothing
        ("credential", {"credential": "set"}, {"credential": "replaced"}, FAILING, True),
        ("connection", {"base_url": None}, {"base_url": "https://x.test"}, FAILING, True),
        ("credential", {"credential": "set"}, {"credential": "replaced"}, FAILING_SOME, False),
        ("credential", {"credential": "set"}, {"credential": "replaced"}, SKIPPED_BY_ARR, False),
    ],
)
def test_a_change_could_explain_only_what_it_could_have_caused(
    what: str,
    before: dict[str, object],
    after: dict[str, object],
    sync: SyncSymptoms,
    explains: bool,
) -> None:
    assert could_explain(Change(what, T0, before, after), sync) is explains


@pytest.mark.parametrize(
    "secret",
    [
        "pat-na1-0a1b2c3d-4e5f-0123456789ab",
        "kr_live_7L1VV3nJqppuGTi1u8LSfsf7vjABKs0q43jPCM",
        "sk_live_51H8abcdefGHIJKL",
        "whsec_abcdefghijklmnop",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    ],
)
def test_scrub_removes_what_is_shaped_like_a_key_or_token(secret: str) -> None:
    text = f"the provider said: bad {secret} here"
    assert secret not in scrub(text) and REDACTED in scrub(text)


def test_scrub_removes_passwords_bearer_tokens_userinfo_and_the_given_secrets() -> None:
    text = (
        'Authorization: Bearer abcdefgh12345678 {"password": "hunter22", "client_secret": "s3cr3t"} '
        "https://bob:pw123@crm.example.com/x and the-connection-own-value"
    )
    clean = scrub(text, ["the-connection-own-value"])
    for secret in ("abcdefgh12345678", "hunter22", "s3cr3t", "pw123", "the-connection-own-value"):
        assert secret not in clean
    assert "crm.example.com" in clean
    assert scrub_value({"nested": ["x hunter22", {"token=abcd1234": 1}]}, ["hunter22"]) == {
        "nested": [f"x {REDACTED}", {f"token={REDACTED}": 1}]
    }


def test_markdown_holds_the_six_facts() -> None:
    bundle = {
        "integration": {
            "id": "int_1",
            "name": "HubSpot",
            "provider": "hubspot",
            "base_url": None,
            "status": "active",
            "status_reason": "ok",
        },
        "affected": [
            {
                "record_type": "clients",
                "direction": "outbound",
                "enabled": True,
                "last_worked_at": "2026-01-05T09:00:00+00:00",
                "last_worked_run": "run_1",
            }
        ],
        "last_worked_at": "2026-01-05T09:00:00+00:00",
        "examples": [
            {
                "record_type": "clients",
                "direction": "outbound",
                "local_id": "cli_1",
                "remote_id": "42",
                "name": "A|B",
                "why": "failed",
            }
        ],
        "error": {
            "message": "Property does not exist",
            "code": "VALIDATION_ERROR",
            "http_status": 400,
            "at": None,
        },
        "recent_changes": [
            {
                "occurred_at": "2026-01-05T08:00:00+00:00",
                "actor": "dana",
                "what": "sync:clients:outbound",
                "before": {"enabled": True},
                "after": {"enabled": False},
            }
        ],
        "checks": [{"name": "credentials", "verdict": "ok", "summary": "fine"}],
        "generated_at": "2026-01-05T10:00:00+00:00",
    }
    text = markdown(bundle)
    for fact in (
        "int_1",
        "clients outbound",
        "2026-01-05T09:00:00+00:00",
        "cli_1",
        "42",
        "Property does not exist",
        "VALIDATION_ERROR",
        "HTTP 400",
        "**dana**",
    ):
        assert fact in text
    assert "A\\|B" in text  # a name cannot break the table
