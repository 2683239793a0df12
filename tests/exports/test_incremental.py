"""An incremental export chain (each from the last one's ``next_updated_since``) over
changing data never skips a change nor repeats a version, whatever is written between
exports or while one runs, whatever the wall clock does."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyrack.domain.exports import Format, Resource, Status
from keyrack.domain.tenancy import Scope
from keyrack.services import exports
from keyrack.services.context import Actor, Context
from keyrack.services.crm import clients
from tests.conftest import MutableClock
from tests.crm.conftest import seed
from tests.exports.conftest import drain

ACTOR = Actor(label="test")
_slugs = itertools.count()
Step = tuple[str, int]


def _export(ctx: Context, scope: Scope, since: datetime | None) -> exports.ExportView:
    view = exports.create_export(
        ctx, ACTOR, scope, resource=Resource.CLIENTS, format=Format.NDJSON, updated_since=since
    )
    drain(ctx)
    return exports.get_export(ctx, scope, view.ref)


def _rows(ctx: Context, scope: Scope, view: exports.ExportView) -> list[dict[str, Any]]:
    if view.bytes == 0:
        return []
    data = b"".join(exports.open_download(ctx, scope, view.ref, None).chunks)
    return [json.loads(line) for line in data.decode().splitlines()]


steps = st.lists(
    st.one_of(
        st.tuples(st.just("export"), st.just(0)),
        st.tuples(st.just("export-while-writing"), st.integers(0, 9)),
        st.tuples(st.just("update"), st.integers(0, 9)),
        st.tuples(st.just("touch"), st.integers(0, 9)),  # writes back what it holds
        st.tuples(st.just("create"), st.just(0)),
        st.tuples(st.just("clock"), st.integers(-3, 3)),  # the wall clock moves, even back
    ),
    max_size=20,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(initial=st.integers(0, 5), plan=steps)
def test_an_export_chain_never_skips_nor_repeats_a_change(
    ctx: Context,
    clock: MutableClock,
    monkeypatch: pytest.MonkeyPatch,
    initial: int,
    plan: list[Step],
) -> None:
    scope = Scope(seed(ctx, f"x{next(_slugs)}").org.org_id)
    made = [clients.create_client(ctx, ACTOR, scope, name=f"C{i}").ref for i in range(initial)]
    seen: list[tuple[str, str]] = []
    since: datetime | None = None

    def change(action: str, value: int) -> None:
        if action == "create" or not made:
            made.append(clients.create_client(ctx, ACTOR, scope, name="New").ref)
            return
        ref = made[value % len(made)]
        name = f"U{value}" if action == "update" else clients.get_client(ctx, scope, ref).name
        clients.update_client(ctx, ACTOR, scope, ref, name=name)

    def export(during: Callable[[], None] | None = None) -> None:
        nonlocal since
        if during is not None:  # a write lands while the job is between two chunks
            report, fired = exports._report, []

            def report_then_write(*args: Any, **kwargs: Any) -> None:
                report(*args, **kwargs)
                if not fired and kwargs.get("rows_done"):
                    fired.append(True)
                    during()

            monkeypatch.setattr(exports, "_report", report_then_write)
            monkeypatch.setattr(exports, "CHUNK_ROWS", 1)
        view = _export(ctx, scope, since)
        monkeypatch.undo()
        assert view.status is Status.SUCCEEDED, view.error
        rows = _rows(ctx, scope, view)
        assert view.rows_done == len(rows)
        for row in rows:
            at = datetime.fromisoformat(row["updated_at"])
            assert since is None or at >= since
            assert view.next_updated_since is not None and at < view.next_updated_since
        seen.extend((row["id"], row["updated_at"]) for row in rows)
        since = view.next_updated_since

    for action, value in plan:
        if action == "export":
            export()
        elif action == "export-while-writing":
            export(lambda value=value: change("update" if value % 2 else "create", value))
        elif action == "clock":
            clock.advance(timedelta(seconds=value))
        else:
            change(action, value)
    export()  # then the chain catches up

    assert len(set(seen)) == len(seen), "a version was exported twice"
    final = {(v.ref, v.updated_at.isoformat()) for v in clients.list_clients(ctx, scope).data}
    assert final <= set(seen), "a change was skipped"
