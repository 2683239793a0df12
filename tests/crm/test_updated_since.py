"""``?updated_since=`` lists: oldest change first in ``(updated_at, id)`` order, paged by a
watermark cursor that never skips a change nor repeats a version, whatever is written
between pages, whatever the wall clock does, however many write at once."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from keyrack.domain.tenancy import Scope
from keyrack.services.context import Actor, Context
from keyrack.services.crm import clients, contacts
from keyrack.storage.paging import encode_watermark
from keyrack.storage.tables.crm import Client, Contact
from tests.conftest import MutableClock
from tests.crm.conftest import Crm, later, seed

URL = "/api/v2/clients"
ACTOR = Actor(label="test")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_slugs = itertools.count()


def test_a_sync_pages_by_change_and_sees_a_record_changed_between_pages_again(
    api: httpx.Client, crm: Crm, clock: MutableClock
) -> None:
    made = []
    for i in range(4):
        made.append(api.post(URL, json={"name": f"C{i}"}, headers=crm.agency).json())
        clock.advance(timedelta(seconds=1))
    since = made[1]["updated_at"]
    first = api.get(URL, params={"updated_since": since, "limit": 2}, headers=crm.agency)
    assert [c["name"] for c in first.json()["data"]] == ["C1", "C2"]
    assert 'rel="next"' in first.headers["link"]

    changed = api.patch(f"{URL}/{made[1]['id']}", json={"arr_cents": 5}, headers=crm.agency)
    assert later(changed.json(), made[1])
    params = {"updated_since": since, "limit": 2, "cursor": first.json()["next_cursor"]}
    rest = api.get(URL, params=params, headers=crm.agency).json()
    assert [(c["name"], c["arr_cents"]) for c in rest["data"]] == [("C3", 0), ("C1", 5)]
    assert rest["next_cursor"] is None
    everything = api.get(URL, params={"updated_since": "2000-01-01T00:00:00Z"}, headers=crm.agency)
    assert [c["name"] for c in everything.json()["data"]] == ["C0", "C2", "C3", "C1"]


def test_a_cursor_works_only_in_the_order_that_gave_it(api: httpx.Client, crm: Crm) -> None:
    for i in range(3):
        api.post(URL, json={"name": f"C{i}"}, headers=crm.agency)
    newest = api.get(URL, params={"limit": 1}, headers=crm.agency).json()["next_cursor"]
    by_change = api.get(
        URL, params={"limit": 1, "updated_since": "2000-01-01T00:00:00Z"}, headers=crm.agency
    ).json()["next_cursor"]
    mixed = (
        {"cursor": newest, "updated_since": "2000-01-01T00:00:00Z"},
        {"cursor": by_change},
    )
    for params in mixed:
        response = api.get(URL, params=params, headers=crm.agency)
        assert response.status_code == 400, response.text
        assert "for this order" in response.json()["detail"]


@pytest.mark.parametrize("resource", ["clients", "contacts", "contracts", "engagements"])
def test_every_record_list_filters_by_change(api: httpx.Client, crm: Crm, resource: str) -> None:
    client = api.post(URL, json={"name": "Globex"}, headers=crm.agency).json()
    bodies = {
        "clients": {"name": "Initech"},
        "contacts": {"client_id": client["id"], "name": "Hank"},
        "contracts": {
            "client_id": client["id"],
            "name": "Plan",
            "amount_cents": 1,
            "start_date": "2026-01-01",
        },
        "engagements": {"client_id": client["id"], "kind": "call"},
    }
    url = f"/api/v2/{resource}"
    record = api.post(url, json=bodies[resource], headers=crm.agency).json()
    params = {"updated_since": record["updated_at"]}
    assert api.get(url, params=params, headers=crm.agency).json()["data"] == [record]
    params = {"updated_since": "2999-01-01T00:00:00Z"}
    assert api.get(url, params=params, headers=crm.agency).json()["data"] == []


def test_a_client_moved_into_a_location_brings_its_records_to_that_locations_sync(
    api: httpx.Client, crm: Crm, clock: MutableClock
) -> None:
    ref = api.post(URL, json={"name": "Globex"}, headers=crm.agency).json()["id"]
    for resource, body in (
        ("contacts", {"name": "Hank"}),
        ("engagements", {"kind": "note"}),
    ):
        made = api.post(f"/api/v2/{resource}", json={"client_id": ref, **body}, headers=crm.agency)
        assert made.status_code == 201
    clock.advance(timedelta(hours=1))
    watermark = api.get(URL, headers=crm.agency).json()["data"][0]["updated_at"]
    watermark = (datetime.fromisoformat(watermark) + timedelta(minutes=30)).isoformat()
    moved = api.patch(f"{URL}/{ref}", json={"location_id": crm.org.location_id}, headers=crm.agency)
    assert moved.status_code == 200
    for resource in ("clients", "contacts", "engagements"):
        since = api.get(
            f"/api/v2/{resource}", params={"updated_since": watermark}, headers=crm.located
        )
        assert len(since.json()["data"]) == 1, resource


# -- interleavings -------------------------------------------------------------------------

Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("page"), st.integers(1, 3)),  # read a page of this size
        st.tuples(st.just("update"), st.integers(0, 9)),  # change a record (index mod count)
        st.tuples(st.just("touch"), st.integers(0, 9)),  # write back what it holds: no change
        st.tuples(st.just("create"), st.just(0)),
        st.tuples(st.just("clock"), st.integers(-3, 3)),  # the wall clock moves, even back
    ),
    max_size=25,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(initial=st.integers(0, 5), plan=steps)
def test_paging_by_change_never_skips_nor_repeats_whatever_happens_between_pages(
    ctx: Context, clock: MutableClock, initial: int, plan: list[Step]
) -> None:
    scope = Scope(seed(ctx, f"w{next(_slugs)}").org.org_id)
    made = [clients.create_client(ctx, ACTOR, scope, name=f"C{i}").ref for i in range(initial)]
    seen: list[tuple[datetime, int | str]] = []
    cursor: str | None = None
    done = False

    def read(size: int) -> None:
        nonlocal cursor, done
        page = clients.list_clients(ctx, scope, updated_since=EPOCH, limit=size, cursor=cursor)
        seen.extend((view.updated_at, view.ref) for view in page.data)
        if page.data:  # a sync keeps its position: the last record it read
            last = page.data[-1]
            cursor = encode_watermark(last.updated_at, _row_id(ctx, last.ref))
        done = page.next_cursor is None

    for action, value in plan:
        if action == "page":
            read(value)
        elif action == "create":
            made.append(clients.create_client(ctx, ACTOR, scope, name="New").ref)
        elif action == "clock":
            clock.advance(timedelta(seconds=value))
        elif made:
            ref = made[value % len(made)]
            name = f"U{value}" if action == "update" else clients.get_client(ctx, scope, ref).name
            clients.update_client(ctx, ACTOR, scope, ref, name=name)
    done = False  # then the sync reads on from where it is, to the end
    while not done:
        read(2)

    versions = [(at, ref) for at, ref in seen]
    assert len(set(versions)) == len(versions), "a version was read twice"
    order = [(at, _row_id(ctx, str(ref))) for at, ref in versions]
    assert order == sorted(order) and len(set(order)) == len(order), "out of order"
    final = {(view.updated_at, view.ref) for view in _all(ctx, scope)}
    assert final <= set(versions), "a change was skipped"


def _row_id(ctx: Context, ref: str, model: type[Client | Contact] = Client) -> int:
    """The row id of the record ``ref``: what a watermark holds beside ``updated_at``."""
    with ctx.db.session() as session:
        found = session.scalar(select(model.id).where(model.ref == ref))
    assert found is not None
    return found


def _all(ctx: Context, scope: Scope) -> list[clients.ClientView]:
    return clients.list_clients(ctx, scope, limit=500).data


# -- concurrent writers ------------------------------------------------------------------


def test_concurrent_writers_with_skewed_clocks_never_hide_a_change_from_a_sync(
    ctx: Context,
) -> None:
    """Three writers whose clocks lag by up to 50 ms (as instances' clocks do) change
    contacts while a sync walks by change; a stamp taken from the wall clock alone would
    commit behind the sync's position and be skipped."""
    ctx.clock = _skewed(timedelta(milliseconds=50))
    scope = Scope(seed(ctx, "concurrent").org.org_id)
    client = clients.create_client(ctx, ACTOR, scope, name="Globex")
    refs = [
        contacts.create_contact(ctx, ACTOR, scope, client_ref=client.ref, name=f"P{i}").ref
        for i in range(6)
    ]
    seen: list[tuple[datetime, str]] = []
    ids: dict[str, int] = {}
    failures: list[BaseException] = []

    def write(seed_value: int) -> None:
        chooser = random.Random(seed_value)
        try:
            for n in range(25):
                contacts.update_contact(
                    ctx, ACTOR, scope, chooser.choice(refs), title=f"v{seed_value}.{n}"
                )
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    def walk(cursor: str | None) -> str | None:
        while True:
            page = contacts.list_contacts(ctx, scope, updated_since=EPOCH, limit=4, cursor=cursor)
            for view in page.data:
                seen.append((view.updated_at, view.ref))
            if page.data:
                last = page.data[-1]
                ids.setdefault(last.ref, _row_id(ctx, last.ref, Contact))
                cursor = encode_watermark(last.updated_at, ids[last.ref])
            if page.next_cursor is None:
                return cursor

    writers = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for thread in writers:
        thread.start()
    cursor: str | None = None
    while any(thread.is_alive() for thread in writers):
        cursor = walk(cursor)
    for thread in writers:
        thread.join()
    walk(cursor)
    assert not failures, failures

    assert len(set(seen)) == len(seen), "a version was read twice"
    final = {(v.updated_at, v.ref) for v in contacts.list_contacts(ctx, scope, limit=500).data}
    assert final <= set(seen), "a change was skipped"
    assert len(seen) > len(refs)  # the walk ran while they wrote


def _skewed(lag: timedelta) -> Callable[[], datetime]:
    chooser = random.Random(7)
    lock = threading.Lock()

    def now() -> datetime:
        with lock:
            behind = chooser.random() * lag
        return datetime.now(UTC) - behind

    return now
