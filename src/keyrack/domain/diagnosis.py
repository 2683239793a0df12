"""Sync diagnostics (SPEC §7): a record's pipeline as steps, the four checks' verdicts,
the causes of issues, and the support bundle's Markdown. Pure: no I/O.

A **step** is one stage of the pipeline for one record (``credential``, ``load``,
``filter``, ``mapping``, ``links``, ``request``, ``write-back``) with an ``outcome``:
``ok``, ``passed`` / ``skipped`` (a filter), ``failed``, or ``not-run`` (a dry run stops
before the write; a stage after a failure or a skip never runs).

A **check** is one of the four of the troubleshooting article, in its order:
``credentials`` (is the connection's credential active), ``direction-and-filters`` (is
the direction enabled, which filters skip how many records), ``recent-changes`` (what
changed around the time it stopped) and ``single-record`` (the pipeline for a record
that should have synced). Its verdict is ``ok``, ``warning`` (worth a look, not
proven to be the cause), ``problem`` (this is why) or ``not-run``.

An **issue** is a persisting problem, one per cause: the credential is not active; a
record type and direction whose last ``PERSIST_RUNS`` runs each failed records and
synced none; a filter that skipped every record of those runs; a direction disabled
within ``DISABLED_NEAR`` of its last successful run. ``causes`` computes them from
facts; the service opens what is new and resolves what is gone.

No bundle carries a secret: ``scrub`` replaces what looks like a key, a token or a
password, and the service also replaces the connection's own credential values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

STEP_OUTCOMES = ("ok", "passed", "skipped", "failed", "not-run")
VERDICTS = ("ok", "warning", "problem", "not-run")
CHECKS = ("credentials", "direction-and-filters", "recent-changes", "single-record")
PERSIST_RUNS = 2
"""A problem seen in this many runs in a row persists: it is an issue."""
DISABLED_NEAR = timedelta(days=1)
REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    outcome: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.data, "name": self.name, "outcome": self.outcome, "detail": self.detail}


def record_outcome(steps: Sequence[Step], *, dry_run: bool) -> str:
    """The whole record's outcome: ``failed``, ``skipped``, ``would-sync`` (a dry run that
    went to the write) or ``synced``."""
    if any(s.outcome == "failed" for s in steps):
        return "failed"
    if any(s.outcome == "skipped" for s in steps):
        return "skipped"
    return "would-sync" if dry_run else "synced"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    verdict: str
    summary: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict, "summary": self.summary, **self.data}


# issues


@dataclass(frozen=True, slots=True)
class SyncRunFacts:
    """One run's counts for one record type and direction."""

    synced: int
    skipped: int
    failed: int
    skip_filters: Mapping[str, int] = field(default_factory=dict)
    """Skipped records per filter (``"<index>:<field>"``)."""


@dataclass(frozen=True, slots=True)
class SyncFacts:
    record_type: str
    direction: str
    enabled: bool
    runs: Sequence[SyncRunFacts]
    """The runs that touched it, newest first."""
    last_success_at: datetime | None = None
    """The end of the last run that synced a record of it."""
    disabled_at: datetime | None = None
    disabled_by: str | None = None
    """When and by whom it was last turned off (if it is off)."""


@dataclass(frozen=True, slots=True)
class Cause:
    key: str
    kind: str
    record_type: str | None
    direction: str | None
    summary: str


def causes(status: str, status_reason: str | None, syncs: Iterable[SyncFacts]) -> list[Cause]:
    """The persisting problems of a connection, one per cause (see the module docstring)."""
    found = []
    if status != "active":
        found.append(
            Cause(
                "credential",
                "credential",
                None,
                None,
                f"the credential is {status} ({status_reason or 'no reason given'})",
            )
        )
    for sync in syncs:
        where = f"{sync.record_type}:{sync.direction}"
        label = f"{sync.record_type} {sync.direction}"
        if not sync.enabled:
            if (
                sync.disabled_at is not None
                and sync.last_success_at is not None
                and sync.disabled_at - sync.last_success_at <= DISABLED_NEAR
            ):
                found.append(
                    Cause(
                        f"direction-off:{where}",
                        "direction-off",
                        sync.record_type,
                        sync.direction,
                        f"{label} was turned off by {sync.disabled_by} at "
                        f"{sync.disabled_at.isoformat()}, within a day of its last successful run",
                    )
                )
            continue
        last = list(sync.runs[:PERSIST_RUNS])
        if len(last) < PERSIST_RUNS:
            continue
        if all(r.failed > 0 and r.synced == 0 for r in last):
            found.append(
                Cause(
                    f"failing:{where}",
                    "failing",
                    sync.record_type,
                    sync.direction,
                    f"the last {len(last)} runs of {label} failed every record they synced",
                )
            )
        elif all(r.skipped > 0 and r.synced == 0 and r.failed == 0 for r in last):
            shared = set.intersection(*(set(r.skip_filters) for r in last))
            for which in sorted(shared):
                found.append(
                    Cause(
                        f"filter-skips-all:{where}:{which}",
                        "filter-skips-all",
                        sync.record_type,
                        sync.direction,
                        f"the filter {which} skipped every record of {label} in the last "
                        f"{len(last)} runs",
                    )
                )
    return found


# recent changes


@dataclass(frozen=True, slots=True)
class Change:
    """One row of a connection's change history: ``what`` is ``connection``,
    ``credential``, ``status`` or ``sync:<record_type>:<direction>``; ``before`` and
    ``after`` hold what changed (a sync's: ``enabled``, ``filters``, ``field_mappings``,
    ``schedule_seconds``)."""

    what: str
    occurred_at: datetime
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class SyncSymptoms:
    """What the checks found for one sync over the recent runs."""

    record_type: str
    direction: str
    enabled: bool
    synced: int
    failed: int
    skipped_fields: frozenset[str] = frozenset()
    """The fields of the filters that skipped records (not other skips)."""
    last_worked_at: datetime | None = None


def could_explain(change: Change, sync: SyncSymptoms) -> bool:
    """Whether ``change`` could explain what ``sync`` shows, as a support engineer
    weighs it: turning the direction off explains that it is off; filters that changed
    explain skips by a filter on a field they added or altered (removing or reordering
    filters skips nothing more); field mappings that changed explain failed records; a
    credential or connection change explains failures when none synced.

    A change that turned the sync on is its setup: the filters and mappings set with it
    are those it has run with since, so they are a suspect only when the sync had worked
    before that change and synced nothing after it."""
    if change.what in ("credential", "connection"):
        return sync.failed > 0 and sync.synced == 0
    if change.what != f"sync:{sync.record_type}:{sync.direction}":
        return False
    before, after = change.before or {}, change.after or {}
    if before.get("enabled") is True and after.get("enabled") is False and not sync.enabled:
        return True
    if before.get("enabled") is False and after.get("enabled") is True:
        worked_before = sync.last_worked_at is not None and sync.last_worked_at < change.occurred_at
        if not worked_before:
            return False
    if "filters" in after:
        kept = _canonical(before.get("filters"))
        new_on = {
            str(f.get("field"))
            for f in after.get("filters") or ()
            if isinstance(f, Mapping) and _item_key(f) not in kept
        }
        if new_on & sync.skipped_fields:
            return True
    if "field_mappings" in after and sync.failed > 0:
        return _canonical(before.get("field_mappings")) != _canonical(after["field_mappings"])
    return False


def _canonical(items: Any) -> frozenset[str]:
    """Filters or mappings as a set: their order changes nothing (every filter must
    match; each field is mapped once)."""
    return frozenset(_item_key(i) for i in items or ())


def _item_key(item: Any) -> str:
    return json.dumps(item, sort_keys=True, default=str)


# secrets

_SHAPES = (
    re.compile(r"\bkr_(?:live|test|sandbox|prod|[a-z]+)_[A-Za-z0-9]{8,}"),
    re.compile(r"\b(?:pat|sk|rk|pk|whsec|xox[abp])[-_][A-Za-z0-9_-]{8,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    re.compile(
        r"(?i)(\"?(?:password|passwd|secret|client_secret|api_key|apikey|access_token|"
        r"refresh_token|token|authorization)\"?\s*[:=]\s*\"?)([^\s\",}&]{4,})"
    ),
    re.compile(r"(?i)(https?://)[^/\s:@]+:[^/\s@]+@"),
)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` and anything shaped like a key, token or password
    replaced by ``[redacted]``."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for shape in _SHAPES:
        if shape.groups >= 2:
            text = shape.sub(lambda m: m.group(1) + REDACTED, text)
        elif shape.groups == 1:
            text = shape.sub(lambda m: m.group(1) + REDACTED + "@", text)
        else:
            text = shape.sub(REDACTED, text)
    return text


def scrub_value(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A JSON value with every string scrubbed (keys too)."""
    held = tuple(secrets)
    return json.loads(scrub(json.dumps(value, default=str), held))


# the bundle in Markdown


def _when(value: Any) -> str:
    return str(value) if value else "never"


def markdown(bundle: Mapping[str, Any]) -> str:
    """The support bundle as Markdown, for pasting into a ticket."""
    conn = bundle["integration"]
    lines = [
        f"# Sync problem: {conn['name']} ({conn['provider']})",
        "",
        f"- Integration: `{conn['id']}` — {conn['name']}, provider {conn['provider']}"
        + (f", {conn['base_url']}" if conn.get("base_url") else ""),
        f"- Status: {conn['status']}"
        + (f" ({conn['status_reason']})" if conn.get("status_reason") else ""),
        "- Affected: "
        + (
            ", ".join(
                f"{a['record_type']} {a['direction']}" + ("" if a["enabled"] else " (turned off)")
                for a in bundle["affected"]
            )
            or "none found"
        ),
        f"- Last worked: {_when(bundle.get('last_worked_at'))}",
        f"- Generated: {bundle['generated_at']}",
        "",
        "## Checks",
        "",
    ]
    for check in bundle["checks"]:
        lines.append(
            f"{CHECKS.index(check['name']) + 1}. **{check['name']}**: "
            f"{check['verdict']} — {check['summary']}"
        )
    lines += ["", "## Last worked", ""]
    for a in bundle["affected"]:
        lines.append(
            f"- {a['record_type']} {a['direction']}: {_when(a.get('last_worked_at'))}"
            + (f" (run `{a['last_worked_run']}`)" if a.get("last_worked_run") else "")
        )
    lines += ["", "## The exact error", ""]
    error = bundle.get("error")
    if error:
        code = ", ".join(
            part
            for part in (
                f"code {error['code']}" if error.get("code") else "",
                f"HTTP {error['http_status']}" if error.get("http_status") else "",
                f"at {error['at']}" if error.get("at") else "",
            )
            if part
        )
        lines += ["```", str(error["message"]), "```"]
        if code:
            lines.append(f"({code})")
    else:
        lines.append("No error recorded.")
    lines += ["", "## Records that should have synced but did not", ""]
    examples = bundle.get("examples") or []
    if examples:
        lines += [
            "| name | Keyrack id | provider id | type | why |",
            "| --- | --- | --- | --- | --- |",
        ]
        for ex in examples:
            lines.append(
                f"| {_cell(ex.get('name'))} | {_cell(ex.get('local_id'))} | "
                f"{_cell(ex.get('remote_id'))} | {ex['record_type']} {ex['direction']} | "
                f"{_cell(ex.get('why'))} |"
            )
    else:
        lines.append("None found.")
    lines += ["", "## Recent changes", ""]
    changes = bundle.get("recent_changes") or []
    if changes:
        for c in changes:
            lines.append(
                f"- {c['occurred_at']} — **{c['actor']}** changed `{c['what']}`: "
                f"{compact(c.get('before'))} → {compact(c.get('after'))}"
            )
    else:
        lines.append("No change in the window.")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return "—" if value in (None, "") else str(value).replace("|", "\\|").replace("\n", " ")


def compact(value: Any) -> str:
    return "—" if value is None else json.dumps(value, sort_keys=True, default=str)
