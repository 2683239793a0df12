"""The HubSpot fake, driven by HubSpot's official Python client (``hubspot-api-client``).

The client is generated from the same OpenAPI documents the fake is built from; with
``client_side_validation`` on, its models refuse an answer that lacks a required field
or carries a value outside an enum, so every call here checks the fake's wire format.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.associations.v4 import AssociationSpec
from hubspot.crm.companies import ApiException as CompaniesApiException
from hubspot.crm.companies import (
    BatchInputSimplePublicObjectBatchInputForCreate,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.contacts import ApiException as ContactsApiException
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchReadInputSimplePublicObjectId,
)
from hubspot.crm.deals import ApiException as DealsApiException
from hubspot.crm.objects.notes import SimplePublicObjectInputForCreate as NoteInput
from hubspot.oauth import ApiException as OAuthApiException
from urllib3 import Retry

from tests.fakes.hubspot import SEARCH_CAP, HubSpotFake, hubspot_fake

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def fake() -> Iterator[HubSpotFake]:
    with hubspot_fake(rate_limit=(10_000, 10.0), search_rate_limit=(10_000, 1.0)) as fake:
        yield fake


def client(fake: HubSpotFake, token: str | None = None) -> HubSpot:
    """The official client; urllib3 would honour Retry-After on a 429 and retry by itself,
    so its retries are off here to let the 429 surface."""
    return HubSpot(
        access_token=token or fake.private_app_token(),
        host=fake.base_url,
        client_side_validation=True,
        retry=Retry(total=0, respect_retry_after_header=False),
    )


def body(error: Exception) -> dict[str, Any]:
    return json.loads(error.body)  # type: ignore[attr-defined]


def test_companies_basic_api_creates_reads_updates_and_pages(fake: HubSpotFake) -> None:
    api = client(fake).crm.companies.basic_api
    made = [
        api.create(
            SimplePublicObjectInputForCreate(
                properties={"name": f"Basic {n}", "domain": f"b{n}.example"}, associations=[]
            )
        )
        for n in range(3)
    ]
    assert made[0].properties["name"] == "Basic 0"
    assert made[0].properties["hs_object_id"] == made[0].id

    got = api.get_by_id(made[1].id, properties=["name", "industry", "no_such_property"])
    assert got.properties == {"name": "Basic 1", "industry": None}

    updated = api.update(made[1].id, SimplePublicObjectInput(properties={"industry": "Retail"}))
    assert updated.properties["industry"] == "Retail"
    assert updated.updated_at >= made[1].updated_at

    seen, after = [], None
    while True:
        page = api.get_page(limit=2, after=after, properties=["name"])
        seen += [r.properties["name"] for r in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    assert {"Basic 0", "Basic 1", "Basic 2"} <= set(seen)
    assert len(seen) == len(set(seen)) == fake.count("companies")


def test_get_of_a_missing_numeric_id_is_a_bare_404(fake: HubSpotFake) -> None:
    api = client(fake).crm.companies.basic_api
    with pytest.raises(CompaniesApiException) as raised:
        api.get_by_id("999999999")
    assert raised.value.status == 404
    assert raised.value.body == ""


def test_contacts_are_read_and_upserted_by_email_the_unique_property(fake: HubSpotFake) -> None:
    api = client(fake).crm.contacts
    (first,) = fake.seed("contacts", [{"email": "Ada@Example.com", "firstname": "Ada"}])
    got = api.basic_api.get_by_id("ada@example.com", id_property="email")
    assert got.id == first

    upserted = api.batch_api.upsert(
        BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[
                {"idProperty": "email", "id": "ada@example.com", "properties": {"lastname": "L"}},
                {"idProperty": "email", "id": "bob@example.com", "properties": {"firstname": "B"}},
            ]
        )
    )
    by_id = {r.id: r for r in upserted.results}
    assert by_id[first].new is False
    (created,) = [r for r in upserted.results if r.id != first]
    assert created.new is True
    assert fake.record("contacts", created.id)["email"] == "bob@example.com"  # type: ignore[index]

    read = api.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[{"id": first}, {"id": "424242424"}],
            properties=["lastname"],
            properties_with_history=[],
        )
    )
    assert [r.properties["lastname"] for r in read.results] == ["L"]
    assert read.num_errors == 1
    assert read.errors[0].category == "OBJECT_NOT_FOUND"
    assert read.errors[0].context == {"ids": ["424242424"]}


def test_a_contact_with_an_existing_email_is_a_409_conflict(fake: HubSpotFake) -> None:
    (existing,) = fake.seed("contacts", [{"email": "taken@example.com"}])
    with pytest.raises(ContactsApiException) as raised:
        client(fake).crm.contacts.basic_api.create(
            {"properties": {"email": "TAKEN@example.com"}, "associations": []}
        )
    assert raised.value.status == 409
    error = body(raised.value)
    assert error["category"] == "CONFLICT"
    assert error["message"] == f"Contact already exists. Existing ID: {existing}"


def test_a_batch_with_an_unknown_property_is_refused_whole(fake: HubSpotFake) -> None:
    api = client(fake).crm.companies.batch_api
    before = fake.count("companies")
    with pytest.raises(CompaniesApiException) as raised:
        api.create(
            BatchInputSimplePublicObjectBatchInputForCreate(
                inputs=[
                    {"properties": {"name": "Fine"}, "associations": []},
                    {"properties": {"name": "Bad", "colour": "red"}, "associations": []},
                ]
            )
        )
    assert raised.value.status == 400
    error = body(raised.value)
    assert error["status"] == "error"
    assert error["category"] == "VALIDATION_ERROR"
    assert error["message"].startswith("Property values were not valid: ")
    assert json.loads(error["message"].partition(": ")[2])[0]["error"] == "PROPERTY_DOESNT_EXIST"
    assert error["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    assert fake.count("companies") == before


def test_a_batch_with_trace_ids_answers_207_per_record(fake: HubSpotFake) -> None:
    api = client(fake).crm.companies.batch_api
    answer = api.create(
        BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[
                {"properties": {"name": "Kept"}, "associations": [], "objectWriteTraceId": "t1"},
                {"properties": {"colour": "x"}, "associations": [], "objectWriteTraceId": "t2"},
            ]
        )
    )
    assert answer.status == "COMPLETE"
    assert [r.properties["name"] for r in answer.results] == ["Kept"]
    assert answer.num_errors == 1
    (error,) = answer.errors
    assert error.category == "VALIDATION_ERROR"
    assert error.context["objectWriteTraceId"] == ["t2"]


def test_batch_over_100_inputs_is_refused(fake: HubSpotFake) -> None:
    inputs = [{"properties": {"name": str(n)}, "associations": []} for n in range(101)]
    with pytest.raises(CompaniesApiException) as raised:
        client(fake).crm.companies.batch_api.create({"inputs": inputs})
    assert raised.value.status == 400
    assert body(raised.value)["category"] == "VALIDATION_ERROR"


def test_a_deleted_property_makes_every_write_fail_with_the_real_error(fake: HubSpotFake) -> None:
    fake.add_property("deals", "keyrack_contract_id", unique=True)
    api = client(fake).crm.deals.basic_api
    made = api.create({"properties": {"dealname": "D", "keyrack_contract_id": "c-1"}})
    fake.delete_property("deals", "keyrack_contract_id")
    with pytest.raises(DealsApiException) as raised:
        api.update(made.id, {"properties": {"keyrack_contract_id": "c-2"}})
    assert raised.value.status == 400
    assert body(raised.value)["errors"][0]["context"] == {"propertyName": ["keyrack_contract_id"]}
    fake.add_property("deals", "keyrack_contract_id", unique=True)


def test_search_pages_changes_since_a_watermark_in_modification_order(fake: HubSpotFake) -> None:
    ids = fake.seed(
        "deals",
        [{"dealname": f"S{n}", "amount": str(n)} for n in range(25)],
        modified_at=START,
        step=dt.timedelta(seconds=1),
    )
    since = START + dt.timedelta(seconds=5)
    request = {
        "filterGroups": [
            {
                "filters": [
                    {
                        "propertyName": "hs_lastmodifieddate",
                        "operator": "GTE",
                        "value": str(int(since.timestamp() * 1000)),
                    },
                    {
                        "propertyName": "hs_lastmodifieddate",
                        "operator": "LT",
                        "value": (START + dt.timedelta(seconds=25)).isoformat(),
                    },
                ]
            }
        ],
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["dealname", "hs_lastmodifieddate"],
        "limit": 7,
    }
    api = client(fake).crm.deals.search_api
    seen, after = [], None
    while True:
        page = api.do_search({**request, "after": after})
        assert page.total == 20
        seen += [r.id for r in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    assert seen == ids[5:]


def test_search_filters_by_other_properties_and_sorts_descending(fake: HubSpotFake) -> None:
    fake.seed("companies", [{"name": f"Sort {n}", "industry": "Zinc"} for n in range(3)])
    page = (
        client(fake)
        .crm.companies.search_api.do_search(
            {
                "filterGroups": [
                    {"filters": [{"propertyName": "industry", "operator": "EQ", "value": "zinc"}]}
                ],
                "sorts": [{"propertyName": "name", "direction": "DESCENDING"}],
                "limit": 10,
            }
        )
        .to_dict()
    )
    assert [r["properties"]["name"] for r in page["results"]] == ["Sort 2", "Sort 1", "Sort 0"]
    assert "paging" not in page or page["paging"] is None


def test_search_on_an_unknown_property_is_a_validation_error(fake: HubSpotFake) -> None:
    with pytest.raises(CompaniesApiException) as raised:
        client(fake).crm.companies.search_api.do_search(
            {"filterGroups": [{"filters": [{"propertyName": "nope", "operator": "HAS_PROPERTY"}]}]}
        )
    assert raised.value.status == 400
    assert body(raised.value)["category"] == "VALIDATION_ERROR"


def test_search_stops_at_hubspots_10000_result_cap() -> None:
    with hubspot_fake(search_rate_limit=(10_000, 1.0)) as fake:
        fake.seed("contacts", ({"firstname": str(n)} for n in range(SEARCH_CAP + 50)))
        api = client(fake).crm.contacts.search_api
        last = api.do_search({"limit": 200, "after": str(SEARCH_CAP - 200)})
        assert last.total == SEARCH_CAP + 50
        assert last.paging.next.after == str(SEARCH_CAP)
        with pytest.raises(ContactsApiException) as raised:
            api.do_search({"limit": 200, "after": last.paging.next.after})
        assert raised.value.status == 400
        assert body(raised.value)["category"] == "VALIDATION_ERROR"


def test_associations_on_create_and_through_v4(fake: HubSpotFake) -> None:
    hubspot = client(fake)
    (company,) = fake.seed("companies", [{"name": "Assoc"}])
    contact = hubspot.crm.contacts.basic_api.create(
        {
            "properties": {"email": "assoc@example.com"},
            "associations": [
                {
                    "to": {"id": company},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}],
                }
            ],
        }
    )
    got = hubspot.crm.contacts.basic_api.get_by_id(contact.id, associations=["companies"])
    assert got.associations["companies"].results[0].to_dict() == {
        "id": company,
        "type": "contact_to_company_unlabeled",
    }
    assert fake.associated("companies", company, "contacts") == {contact.id: {280}}

    (deal,) = fake.seed("deals", [{"dealname": "Assoc deal"}])
    default = hubspot.crm.associations.v4.basic_api.create_default(
        "deals", deal, "companies", company
    )
    assert {r.association_spec.association_type_id for r in default.results} == {341, 342}
    labelled = hubspot.crm.associations.v4.basic_api.create(
        "deals",
        deal,
        "companies",
        company,
        [AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=5)],
    )
    assert labelled.to_object_type_id == "0-2"
    page = hubspot.crm.associations.v4.basic_api.get_page("companies", company, "deals")
    assert page.results[0].to_object_id == deal
    assert {t.type_id for t in page.results[0].association_types} == {6, 342}

    note = hubspot.crm.objects.notes.basic_api.create(
        NoteInput(
            properties={"hs_note_body": "Called", "hs_timestamp": "2026-01-05T10:00:00Z"},
            associations=[
                {
                    "to": {"id": contact.id},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}],
                }
            ],
        )
    )
    assert fake.associated("contacts", contact.id, "notes") == {note.id: {201}}


def test_an_association_type_of_the_wrong_pair_is_refused(fake: HubSpotFake) -> None:
    (company,) = fake.seed("companies", [{"name": "Wrong pair"}])
    with pytest.raises(DealsApiException) as raised:
        client(fake).crm.deals.basic_api.create(
            {
                "properties": {"dealname": "x"},
                "associations": [
                    {
                        "to": {"id": company},
                        "types": [
                            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}
                        ],
                    }
                ],
            }
        )
    assert raised.value.status == 400


def test_oauth_code_exchange_refresh_and_revocation(fake: HubSpotFake) -> None:
    app = fake.oauth_app(client_id="cid-1", client_secret="secret-1")
    tokens = client(fake).oauth.tokens_api
    issued = tokens.create(
        grant_type="authorization_code",
        code=fake.authorization_code("cid-1"),
        redirect_uri=app.redirect_uri,
        client_id="cid-1",
        client_secret="secret-1",
    )
    assert issued.token_type == "bearer"
    assert issued.expires_in == 1800
    refreshed = tokens.create(
        grant_type="refresh_token",
        refresh_token=issued.refresh_token,
        client_id="cid-1",
        client_secret="secret-1",
    )
    assert refreshed.refresh_token == issued.refresh_token
    assert refreshed.access_token != issued.access_token
    assert client(fake, refreshed.access_token).crm.companies.basic_api.get_page(limit=1)

    fake.revoke(issued.refresh_token)
    with pytest.raises(OAuthApiException) as raised:
        tokens.create(
            grant_type="refresh_token",
            refresh_token=issued.refresh_token,
            client_id="cid-1",
            client_secret="secret-1",
        )
    assert raised.value.status == 400
    error = body(raised.value)
    assert (error["status"], error["error"]) == ("BAD_REFRESH_TOKEN", "invalid_grant")
    with pytest.raises(CompaniesApiException) as raised:
        client(fake, refreshed.access_token).crm.companies.basic_api.get_page(limit=1)
    assert body(raised.value)["category"] == "INVALID_AUTHENTICATION"


def test_a_wrong_client_secret_is_refused(fake: HubSpotFake) -> None:
    fake.oauth_app(client_id="cid-2", client_secret="right")
    refresh = fake.refresh_token("cid-2")
    with pytest.raises(OAuthApiException) as raised:
        client(fake).oauth.tokens_api.create(
            grant_type="refresh_token", refresh_token=refresh, client_id="cid-2", client_secret="no"
        )
    assert body(raised.value)["status"] == "BAD_CLIENT_SECRET"


def test_an_expired_access_token_is_a_401_with_hubspots_body() -> None:
    with hubspot_fake(access_token_ttl=1.0) as fake:
        fake.oauth_app(client_id="cid")
        token = fake.access_token(fake.refresh_token("cid"))
        api = client(fake, token).crm.companies.basic_api
        api.get_page(limit=1)
        time.sleep(1.1)
        with pytest.raises(CompaniesApiException) as raised:
            api.get_page(limit=1)
    assert raised.value.status == 401
    error = body(raised.value)
    assert error["category"] == "EXPIRED_AUTHENTICATION"
    assert error["message"] == "The OAuth token used to make this call expired 0 second(s) ago."
    assert list(error["context"]) == ["expire time"]


def test_an_unknown_token_and_a_missing_scope(fake: HubSpotFake) -> None:
    with pytest.raises(CompaniesApiException) as raised:
        client(fake, "pat-na1-not-a-token").crm.companies.basic_api.get_page()
    assert raised.value.status == 401
    assert body(raised.value)["category"] == "INVALID_AUTHENTICATION"

    narrow = fake.private_app_token(scopes=["crm.objects.contacts.read"])
    with pytest.raises(CompaniesApiException) as raised:
        client(fake, narrow).crm.companies.basic_api.get_page()
    assert raised.value.status == 403
    error = body(raised.value)
    assert error["category"] == "MISSING_SCOPES"
    assert error["errors"][0]["context"] == {
        "requiredGranularScopes": ["crm.objects.companies.read"]
    }


def test_rate_limit_headers_and_the_429_body() -> None:
    with hubspot_fake(rate_limit=(2, 10.0)) as fake:
        api = client(fake).crm.companies.basic_api
        _, status, headers = api.get_page_with_http_info(limit=1)
        assert status == 200
        assert headers["X-HubSpot-RateLimit-Max"] == "2"
        assert headers["X-HubSpot-RateLimit-Remaining"] == "1"
        assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        assert headers["X-HubSpot-RateLimit-Daily-Remaining"] == str(250_000 - 1)
        api.get_page(limit=1)
        with pytest.raises(CompaniesApiException) as raised:
            api.get_page(limit=1)
    assert raised.value.status == 429
    assert raised.value.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert 1 <= int(raised.value.headers["Retry-After"]) <= 10
    error = body(raised.value)
    assert error["errorType"] == "RATE_LIMIT"
    assert error["policyName"] == "TEN_SECONDLY_ROLLING"
    assert error["message"] == "You have reached your ten_secondly_rolling limit."


def test_search_has_its_own_secondly_limit_and_no_rate_headers() -> None:
    with hubspot_fake(search_rate_limit=(1, 1.0)) as fake:
        api = client(fake).crm.companies.search_api
        _, _, headers = api.do_search_with_http_info({"limit": 1})
        assert not any(h.lower().startswith("x-hubspot-ratelimit") for h in headers)
        with pytest.raises(CompaniesApiException) as raised:
            api.do_search({"limit": 1})
    assert raised.value.status == 429
    error = body(raised.value)
    assert (error["policyName"], error["message"]) == (
        "SECONDLY",
        "You have reached your secondly limit.",
    )


def test_an_injected_5xx_and_the_call_counts(fake: HubSpotFake) -> None:
    fake.fail_next(503, path_contains="/crm/v3/objects/companies")
    api = client(fake).crm.companies.basic_api
    before = fake.calls["GET /crm/v3/objects/companies"]
    with pytest.raises(CompaniesApiException) as raised:
        api.get_page(limit=1)
    assert raised.value.status == 503
    api.get_page(limit=1)
    assert fake.calls["GET /crm/v3/objects/companies"] == before + 2


def test_plain_http_sees_the_same_wire_format(fake: HubSpotFake) -> None:
    token = fake.private_app_token()
    answer = httpx.get(
        f"{fake.base_url}/crm/v3/objects/0-3",
        params={"limit": 1},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    wrong = httpx.get(
        f"{fake.base_url}/crm/v3/objects/widgets", headers={"Authorization": f"Bearer {token}"}
    )
    assert wrong.status_code == 400
    assert wrong.json()["message"] == "Unable to infer object type from: widgets"


def test_a_sync_reads_past_the_cap_by_restarting_at_the_last_modification_time() -> None:
    """The pattern connector authors need: sort by the modification time, and before
    ``after`` reaches 10,000 start a new search from the last time seen (GTE, so records
    sharing that millisecond come again: dedupe by id)."""
    with hubspot_fake(search_rate_limit=(10_000, 1.0)) as fake:
        ids = fake.seed(
            "contacts",
            ({"firstname": str(n)} for n in range(SEARCH_CAP + 2_500)),
            modified_at=START,
            step=dt.timedelta(milliseconds=1),
        )
        ids += fake.seed("contacts", ({"firstname": "tied"} for _ in range(300)), modified_at=START)
        token = fake.private_app_token()
        seen: dict[str, None] = {}
        watermark, after, searches = "0", 0, 0
        with httpx.Client(
            base_url=fake.base_url, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            while True:
                searches += 1
                page = http.post(
                    "/crm/v3/objects/contacts/search",
                    json={
                        "filterGroups": [
                            {
                                "filters": [
                                    {
                                        "propertyName": "lastmodifieddate",
                                        "operator": "GTE",
                                        "value": watermark,
                                    }
                                ]
                            }
                        ],
                        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
                        "properties": ["lastmodifieddate"],
                        "limit": 200,
                        "after": str(after),
                    },
                ).json()
                for result in page["results"]:
                    seen[result["id"]] = None
                following = page.get("paging", {}).get("next", {}).get("after")
                if following is None:
                    break
                if int(following) >= SEARCH_CAP:
                    watermark = page["results"][-1]["properties"]["lastmodifieddate"]
                    after = 0
                else:
                    after = int(following)
    assert set(seen) == set(ids)
    assert searches > (len(ids) // 200)
