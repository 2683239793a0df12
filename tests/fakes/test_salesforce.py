"""The Salesforce fake, driven by ``simple-salesforce`` (a client used against the real
Salesforce for years), over TLS as that client insists, and by plain httpx for OAuth."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator

import httpx
import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from tests.fakes.base import loopback_certificate
from tests.fakes.salesforce import SalesforceFake, salesforce_fake, with_checksum
from tests.fakes.soql import SoqlError, parse

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def fake() -> Iterator[SalesforceFake]:
    with salesforce_fake() as fake:
        yield fake


def sf(fake: SalesforceFake, token: str | None = None) -> Salesforce:
    session = requests.Session()
    session.verify = loopback_certificate()[0]
    session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides session.verify
    return Salesforce(
        instance_url=fake.base_url,
        session_id=token or fake.session(),
        version="59.0",
        session=session,
    )


def test_ids_are_18_characters_with_salesforces_checksum() -> None:
    assert with_checksum("001A0000006Vm9r") == "001A0000006Vm9rIAC"


def test_query_pages_with_next_records_url_until_done() -> None:
    with salesforce_fake(query_batch_size=200) as fake:
        ids = fake.seed(
            "Account",
            [{"Name": f"Acme {n}"} for n in range(450)],
            modified_at=START,
            step=dt.timedelta(seconds=1),
        )
        client = sf(fake)
        since = (START + dt.timedelta(seconds=49)).strftime("%Y-%m-%dT%H:%M:%SZ")
        soql = (
            f"SELECT Id, Name, SystemModstamp FROM Account WHERE SystemModstamp > {since} "
            "ORDER BY SystemModstamp, Id"
        )
        first = client.query(soql)
        assert first["totalSize"] == 400
        assert first["done"] is False
        assert len(first["records"]) == 200
        assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
        assert first["records"][0]["attributes"] == {
            "type": "Account",
            "url": f"/services/data/v59.0/sobjects/Account/{ids[50]}",
        }
        assert first["records"][0]["SystemModstamp"] == "2026-01-05T09:00:50.000+0000"
        everything = client.query_all(soql)
        assert [r["Id"] for r in everything["records"]] == ids[50:]
        assert everything["done"] is True

        limited = client.query(f"{soql} LIMIT 250")
        rest = client.query_more(limited["nextRecordsUrl"], identifier_is_url=True)
        assert (limited["totalSize"], len(rest["records"]), rest["done"]) == (250, 50, True)


def test_a_general_where_and_order_by_scan_with_nulls_first(fake: SalesforceFake) -> None:
    fake.seed(
        "Contact",
        [
            {"LastName": "Zed", "Email": "z@example.com", "Title": "CTO"},
            {"LastName": "Amy", "Email": "a@example.com", "Title": "CTO"},
            {"LastName": "Nil", "Title": "CTO"},
            {"LastName": "Other", "Title": "CEO"},
        ],
    )
    found = sf(fake).query(
        "select LastName, email from contact where Title = 'cto' and LastName != 'Nobody' "
        "order by Email asc limit 10"
    )
    assert [r["LastName"] for r in found["records"]] == ["Nil", "Amy", "Zed"]
    assert set(found["records"][0]) == {"attributes", "LastName", "Email"}


@pytest.mark.parametrize(
    ("soql", "code", "says"),
    [
        ("SELECT Id, Colour FROM Account", "INVALID_FIELD", "No such column 'Colour' on entity"),
        ("SELECT Id FROM Widget", "INVALID_TYPE", "sObject type 'Widget' is not supported"),
        (
            "SELECT Id FROM Account WHERE SystemModstamp > '2026-01-01T00:00:00Z'",
            "INVALID_QUERY_FILTER_OPERATOR",
            "must be of type dateTime and should not be enclosed in quotes",
        ),
        ("SELECT Id FROM Account WHERE Name = 'a' OR Name = 'b'", "MALFORMED_QUERY", "OR"),
        ("SELECT COUNT() FROM Account", "MALFORMED_QUERY", "unexpected token: ("),
        ("SELECT Account.Name FROM Contact", "MALFORMED_QUERY", "Account.Name"),
        ("SELECT Id FROM Account LIMIT 5 OFFSET 5", "MALFORMED_QUERY", "OFFSET"),
    ],
)
def test_queries_outside_the_subset_are_refused_as_salesforce_does(
    fake: SalesforceFake, soql: str, code: str, says: str
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf(fake).query(soql)
    (error,) = raised.value.content
    assert error["errorCode"] == code
    assert says in error["message"]
    assert "ERROR at Row:1:Column:" in error["message"]


def test_the_caret_points_at_the_bad_column() -> None:
    with pytest.raises(SoqlError) as raised:
        parse("SELECT Id FROM Account WHERE")
    assert raised.value.message == (
        "\nSELECT Id FROM Account WHERE\n"
        + " " * 28
        + "^\nERROR at Row:1:Column:29\nunexpected token: <EOF>"
    )


def test_system_changes_move_system_modstamp_but_not_last_modified_date(
    fake: SalesforceFake,
) -> None:
    (account,) = fake.seed("Account", [{"Name": "Quiet"}], modified_at=START)
    fake.system_touch("Account", account)
    record = fake.record("Account", account)
    assert record is not None
    assert record["LastModifiedDate"] == "2026-01-05T09:00:00.000+0000"
    assert record["SystemModstamp"] > record["LastModifiedDate"]
    client = sf(fake)
    by_modstamp = client.query(
        f"SELECT Id FROM Account WHERE SystemModstamp > 2026-01-05T09:00:00Z AND Id = '{account}'"
    )
    by_last_modified = client.query(
        f"SELECT Id FROM Account WHERE LastModifiedDate > 2026-01-05T09:00:00Z AND Id = '{account}'"
    )
    assert (by_modstamp["totalSize"], by_last_modified["totalSize"]) == (1, 0)


def test_upsert_by_external_id_creates_then_updates(fake: SalesforceFake) -> None:
    client = sf(fake)
    assert client.Account.upsert("External_Id__c/kr-1", {"Name": "Upserted"}) == 201
    created = client.Account.get_by_custom_id("External_Id__c", "kr-1")
    assert created["Name"] == "Upserted"
    raw = client.Account.upsert("External_Id__c/kr-1", {"Website": "u.example"}, raw_response=True)
    assert raw.status_code == 200
    assert raw.json() == {"id": created["Id"], "success": True, "errors": [], "created": False}
    assert fake.record("Account", created["Id"])["Website"] == "u.example"  # type: ignore[index]

    with pytest.raises(SalesforceResourceNotFound) as raised:
        client.Account.upsert("Name/x", {"Website": "w"})
    assert raised.value.content[0]["message"] == (
        "Provided external ID field does not exist or is not accessible: Name"
    )
    with pytest.raises(SalesforceMalformedRequest) as raised:
        client.Account.upsert("External_Id__c/kr-2", {"Website": "no name"})
    assert raised.value.content == [
        {
            "message": "Required fields are missing: [Name]",
            "errorCode": "REQUIRED_FIELD_MISSING",
            "fields": ["Name"],
        }
    ]


def test_create_update_delete_and_read_one(fake: SalesforceFake) -> None:
    client = sf(fake)
    made = client.Opportunity.create(
        {"Name": "Big", "StageName": "Prospecting", "CloseDate": "2026-03-01", "Amount": 1200}
    )
    assert made["success"] is True
    assert client.Opportunity.update(made["id"], {"Amount": 1500.5}) == 204
    got = client.Opportunity.get(made["id"])
    assert (got["Amount"], got["CloseDate"]) == (1500.5, "2026-03-01")
    with pytest.raises(SalesforceMalformedRequest) as raised:
        client.Opportunity.update(made["id"], {"SystemModstamp": "2026-01-01T00:00:00Z"})
    assert raised.value.content[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    with pytest.raises(SalesforceMalformedRequest) as raised:
        client.Opportunity.update(made["id"], {"Colour__c": "red"})
    assert raised.value.content == [
        {
            "message": "No such column 'Colour__c' on sobject of type Opportunity",
            "errorCode": "INVALID_FIELD",
        }
    ]
    assert client.Opportunity.delete(made["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound) as raised:
        client.Opportunity.get(made["id"])
    assert raised.value.content[0]["errorCode"] == "NOT_FOUND"


def test_composite_upsert_answers_per_record(fake: SalesforceFake) -> None:
    fake.seed("Account", [{"Name": "Taken", "External_Id__c": "dup-target"}])
    answer = sf(fake).restful(
        "composite/sobjects/Account/External_Id__c",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Account"}, "External_Id__c": "c-1", "Name": "One"},
                {"attributes": {"type": "Account"}, "External_Id__c": "c-2"},
                {"attributes": {"type": "Account"}, "External_Id__c": "c-1", "Name": "Again"},
                {"attributes": {"type": "Account"}, "External_Id__c": "dup-target", "Name": "T"},
            ],
        },
    )
    assert answer[0]["success"] is True
    assert answer[0]["created"] is True
    assert answer[1] == {
        "success": False,
        "errors": [
            {
                "statusCode": "REQUIRED_FIELD_MISSING",
                "message": "Required fields are missing: [Name]",
                "fields": ["Name"],
            }
        ],
    }
    assert answer[2]["errors"][0]["statusCode"] == "DUPLICATE_EXTERNAL_ID"
    assert answer[3]["success"] is True
    assert answer[3]["created"] is False


def test_composite_all_or_none_rolls_everything_back(fake: SalesforceFake) -> None:
    before = fake.count("Contact")
    answer = sf(fake).restful(
        "composite/sobjects",
        method="POST",
        json={
            "allOrNone": True,
            "records": [
                {"attributes": {"type": "Contact"}, "LastName": "Fine"},
                {"attributes": {"type": "Contact"}, "FirstName": "No last name"},
            ],
        },
    )
    assert [r["success"] for r in answer] == [False, False]
    assert answer[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert answer[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert fake.count("Contact") == before


def test_composite_refuses_more_than_200_records_and_unknown_fields(fake: SalesforceFake) -> None:
    client = sf(fake)
    records = [{"attributes": {"type": "Task"}, "Subject": str(n)} for n in range(201)]
    with pytest.raises(SalesforceMalformedRequest) as raised:
        client.restful("composite/sobjects", method="POST", json={"records": records})
    assert raised.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    fake.add_field("Task", "Keyrack_Engagement__c")
    fake.rename_field("Task", "Keyrack_Engagement__c", "Engagement_Ref__c")
    with pytest.raises(SalesforceMalformedRequest) as raised:
        client.restful(
            "composite/sobjects",
            method="POST",
            json={"records": [{"attributes": {"type": "Task"}, "Keyrack_Engagement__c": "e"}]},
        )
    assert raised.value.content[0]["errorCode"] == "INVALID_FIELD"


def test_an_expired_session_raises_salesforce_expired_session(fake: SalesforceFake) -> None:
    token = fake.session()
    client = sf(fake, token)
    client.query("SELECT Id FROM Event")
    fake.expire(token)
    with pytest.raises(SalesforceExpiredSession) as raised:
        client.query("SELECT Id FROM Event")
    assert raised.value.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


def test_refresh_flow_with_plain_httpx_and_revocation(fake: SalesforceFake) -> None:
    app = fake.connected_app("ck-1", "cs-1")
    refresh = fake.refresh_token(app.client_id)
    form = {
        "grant_type": "refresh_token",
        "client_id": "ck-1",
        "client_secret": "cs-1",
        "refresh_token": refresh,
    }
    verify = ssl.create_default_context(cafile=loopback_certificate()[0])
    answer = httpx.post(f"{fake.base_url}/services/oauth2/token", data=form, verify=verify)
    assert answer.status_code == 200
    tokens = answer.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["instance_url"] == fake.base_url
    assert "expires_in" not in tokens
    assert "refresh_token" not in tokens
    sf(fake, tokens["access_token"]).query("SELECT Id FROM Account LIMIT 1")

    fake.revoke(refresh)
    answer = httpx.post(f"{fake.base_url}/services/oauth2/token", data=form, verify=verify)
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_grant",
        "error_description": "expired access/refresh token",
    }
    with pytest.raises(SalesforceExpiredSession):
        sf(fake, tokens["access_token"]).query("SELECT Id FROM Account LIMIT 1")
    wrong = httpx.post(
        f"{fake.base_url}/services/oauth2/token",
        data=form | {"client_id": "nope"},
        verify=verify,
    )
    assert wrong.json()["error"] == "invalid_client_id"


def test_api_usage_header_and_request_limit_exceeded() -> None:
    with salesforce_fake(api_limit=2) as fake:
        client = sf(fake)
        client.query("SELECT Id FROM Account")
        assert client.api_usage["api-usage"].used == 1
        assert client.api_usage["api-usage"].total == 2
        client.query("SELECT Id FROM Account")
        with pytest.raises(SalesforceRefusedRequest) as raised:
            client.query("SELECT Id FROM Account")
    assert raised.value.content == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]


def test_an_injected_5xx_and_the_call_counts(fake: SalesforceFake) -> None:
    client = sf(fake)
    fake.fail_next(503)
    before = fake.calls["GET /services/data/vXX.X/query/"]
    with pytest.raises(Exception, match="503"):
        client.query("SELECT Id FROM Account")
    client.query("SELECT Id FROM Account")
    assert fake.calls["GET /services/data/vXX.X/query/"] == before + 2
