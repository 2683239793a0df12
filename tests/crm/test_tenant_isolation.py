"""Tenant isolation as a property: for generated organizations, locations, keys and
records, a key reads and writes exactly what its scope holds; anything else is a
404 without data (never a 403 that would confirm it exists). An external id held out
of scope is found by no list, and a claim on it is refused without naming its holder."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyrack.services.context import Context
from keyrack.services.tenancy import create_location
from tests.conftest import OPERATOR
from tests.crm.conftest import CRM, Crm, seed

_slugs = itertools.count()


@dataclass(frozen=True)
class Key:
    org: int
    location: int | None  # index into the org's locations; None: an agency key
    headers: dict[str, str]


@dataclass(frozen=True)
class Record:
    org: int
    location: int | None
    client: str
    contact: str
    pulse: str
    engagement: str
    hubspot_id: str

    def visible_to(self, key: Key) -> bool:
        if key.org != self.org:
            return False
        return key.location is None or key.location == self.location


# per org: how many extra locations (0-1, the seed's "main" is location 0);
# records: (org index, location index or None), created by the narrowest key that may
worlds = st.integers(min_value=1, max_value=2).flatmap(
    lambda orgs: st.tuples(
        st.lists(st.integers(0, 1), min_size=orgs, max_size=orgs),
        st.lists(
            st.tuples(st.integers(0, orgs - 1), st.one_of(st.none(), st.integers(0, 1))),
            min_size=1,
            max_size=3,
        ),
    )
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds)
def test_no_key_reaches_outside_its_scope(
    api: httpx.Client, ctx: Context, world: tuple[list[int], list[tuple[int, int | None]]]
) -> None:
    extra_locations, wanted = world
    orgs: list[Crm] = []
    location_ids: dict[tuple[int, int], int] = {}
    keys: list[Key] = []
    for o, extra in enumerate(extra_locations):
        crm = seed(ctx, f"org{next(_slugs)}")
        orgs.append(crm)
        location_ids[(o, 0)] = crm.org.location_id
        keys += [Key(o, None, crm.agency), Key(o, 0, crm.located)]
        if extra:
            loc = create_location(ctx, OPERATOR, org_slug=crm.org.org_slug, name="B", slug="b")
            location_ids[(o, 1)] = loc.id
            keys.append(Key(o, 1, crm.key(*CRM, location_id=loc.id)))

    records: list[Record] = []
    for o, loc in wanted:
        if loc is not None and (o, loc) not in location_ids:
            loc = 0
        creator = next(k for k in keys if k.org == o and k.location == loc)
        client = api.post("/api/v2/clients", json={"name": "Tenant data"}, headers=creator.headers)
        assert client.status_code == 201
        ref = client.json()["id"]
        hubspot_id = f"c{len(records)}"
        claimed = api.patch(
            f"/api/v2/clients/{ref}",
            json={"external_ids": {"hubspot": hubspot_id}},
            headers=creator.headers,
        )
        assert claimed.status_code == 200, claimed.text
        expected_location = location_ids[(o, loc)] if loc is not None else None
        assert client.json()["location_id"] == expected_location
        contact = api.post(
            "/api/v2/contacts",
            json={"client_id": ref, "name": "Tenant person"},
            headers=creator.headers,
        ).json()["id"]
        pulse = api.post(
            "/api/v2/pulse",
            json={"client_id": ref, "score": 9, "comment": "Tenant words"},
            headers=creator.headers,
        ).json()["id"]
        engagement = api.post(
            "/api/v2/engagements",
            json={"client_id": ref, "kind": "note", "body": "Tenant notes"},
            headers=creator.headers,
        ).json()["id"]
        records.append(Record(o, loc, ref, contact, pulse, engagement, hubspot_id))

    for key in keys:
        visible = {r.client for r in records if r.visible_to(key)}
        listed = api.get("/api/v2/clients", params={"limit": 500}, headers=key.headers).json()
        assert {c["id"] for c in listed["data"]} == visible
        contacts = api.get("/api/v2/contacts", params={"limit": 500}, headers=key.headers).json()
        assert {c["client_id"] for c in contacts["data"]} == visible
        pulses = api.get("/api/v2/pulse", params={"limit": 500}, headers=key.headers).json()
        assert {p["client_id"] for p in pulses["data"]} == visible
        summary = api.get("/api/v2/pulse/summary", headers=key.headers).json()
        assert {s["client_id"] for s in summary["data"]} == visible
        logged = api.get("/api/v2/engagements", params={"limit": 500}, headers=key.headers)
        assert {e["client_id"] for e in logged.json()["data"]} == visible
        for record in records:
            if record.visible_to(key):
                assert (
                    api.get(f"/api/v2/clients/{record.client}", headers=key.headers).status_code
                    == 200
                )
                continue
            for response in (
                api.get(f"/api/v2/clients/{record.client}", headers=key.headers),
                api.patch(
                    f"/api/v2/clients/{record.client}", json={"name": "Pwned"}, headers=key.headers
                ),
                api.delete(f"/api/v2/clients/{record.client}", headers=key.headers),
                api.get(f"/api/v2/contacts/{record.contact}", headers=key.headers),
                api.delete(f"/api/v2/contacts/{record.contact}", headers=key.headers),
                api.get(f"/api/v2/pulse/{record.pulse}", headers=key.headers),
                api.get(f"/api/v2/engagements/{record.engagement}", headers=key.headers),
                api.post(
                    "/api/v2/contacts",
                    json={"client_id": record.client, "name": "Spy"},
                    headers=key.headers,
                ),
                api.post(
                    "/api/v2/pulse",
                    json={"client_id": record.client, "score": 0},
                    headers=key.headers,
                ),
                api.post(
                    "/api/v2/usage",
                    json={
                        "events": [
                            {
                                "id": f"x{record.client}",
                                "client_id": record.client,
                                "event": "login",
                                "timestamp": "2026-01-01T00:00:00Z",
                            }
                        ]
                    },
                    headers=key.headers,
                ),
            ):
                assert response.status_code == 404, response.request.url
                assert "Tenant" not in response.text and "Pwned" not in response.text
            held = f"hubspot:{record.hubspot_id}"
            found = api.get("/api/v2/clients", params={"external_id": held}, headers=key.headers)
            assert found.json()["data"] == []
            if key.org == record.org:  # the id is taken in this organization: that much shows
                claim = api.post(
                    "/api/v2/clients",
                    json={"name": "Spy", "external_ids": {"hubspot": record.hubspot_id}},
                    headers=key.headers,
                )
                assert claim.status_code == 409
                assert claim.json()["detail"] == (
                    f"{held} is already held by another client of this organization"
                )

    for record in records:  # nothing out of scope was changed
        owner = next(k for k in keys if k.org == record.org and k.location is None)
        assert (
            api.get(f"/api/v2/clients/{record.client}", headers=owner.headers).json()["name"]
            == "Tenant data"
        )
        assert (
            api.get(f"/api/v2/contacts/{record.contact}", headers=owner.headers).status_code == 200
        )
        engagement = api.get(f"/api/v2/engagements/{record.engagement}", headers=owner.headers)
        assert engagement.json()["body"] == "Tenant notes"
