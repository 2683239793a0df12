"""The registry maps each provider to a connector that keeps the contract's shape, and
each connector's default mappings are data the engine can apply."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from keyrack.integrations.connector import TRANSFORMS, Connector, Direction, RecordType
from keyrack.integrations.connectors import CONNECTORS, connector_for

CREDENTIALS = {
    "hubspot": {"api_key": "pat-na1-registry"},
    "salesforce": {
        "access_token": "00D!registry",
        "refresh_token": "5Aep861registry",
        "token_url": "https://login.salesforce.com/services/oauth2/token",
        "client_id": "id",
        "client_secret": "secret",
        "instance_url": "https://keyrack.my.salesforce.com",
    },
    "stripe": {"api_key": "sk_test_registry"},
    "keyrack": {"api_key": "kr_live_registry0000000000000000"},
    "webhook": {"signing_secret": "whsec_registry000000000000"},
}
BASE_URLS = {  # no default: another Keyrack, a receiver, is wherever it is
    "keyrack": "https://keyrack.example.com",
    "webhook": "https://hooks.example.com/keyrack",
}
LOCAL_FIELDS = {
    RecordType.CLIENTS: {"name", "status", "owner_email", "arr_cents", "health"},
    RecordType.CONTACTS: {"name", "email", "phone", "title"},
    RecordType.CONTRACTS: {
        "name",
        "amount_cents",
        "currency",
        "start_date",
        "end_date",
        "recurring_amount_cents",
        "recurring_interval",
    },
    RecordType.ENGAGEMENTS: {"occurred_at", "subject", "body", "kind"},
}


def test_the_registry_names_every_provider() -> None:
    assert sorted(CONNECTORS) == ["hubspot", "keyrack", "salesforce", "stripe", "webhook"]
    with pytest.raises(ValueError, match="no connector for provider 'pipedrive'"):
        connector_for("pipedrive")


@pytest.mark.parametrize("provider", sorted(CONNECTORS))
def test_each_connector_keeps_the_contract_and_defaults_to_the_real_service(
    provider: str,
) -> None:
    with httpx.Client() as http:
        connector = connector_for(provider)(
            credential=CREDENTIALS[provider], http=http, base_url=BASE_URLS.get(provider)
        )
    assert isinstance(connector, Connector)
    assert connector.provider == provider
    assert connector.stats.api_calls == 0
    shown = repr(connector)
    assert shown.startswith(type(connector).__name__)
    assert {
        "hubspot": "api.hubapi.com",
        "salesforce": "my.salesforce.com",
        "stripe": "api.stripe.com",
        "keyrack": "keyrack.example.com",
        "webhook": "hooks.example.com",
    }[provider] in shown
    assert not any(str(v) in shown for v in CREDENTIALS[provider].values() if "registry" in str(v))


@pytest.mark.parametrize("provider", sorted(CONNECTORS))
def test_default_mappings_use_the_vocabulary_and_keyracks_fields(provider: str) -> None:
    connector = CONNECTORS[provider]
    for (record_type, direction), mappings in connector.mappings.items():
        assert direction in connector.directions[record_type]
        assert mappings
        for mapping in mappings:
            assert mapping.transform is None or mapping.transform in TRANSFORMS
            assert mapping.local in LOCAL_FIELDS[record_type]
            assert mapping.kind is None or record_type is RecordType.ENGAGEMENTS
    for record_type, directions in connector.directions.items():
        assert {(record_type, d) for d in directions} <= set(connector.mappings)


def test_money_converts_one_way_out_and_back_the_other() -> None:
    mappings = CONNECTORS["hubspot"].mappings
    out = {m.local: m for m in mappings[(RecordType.CLIENTS, Direction.OUTBOUND)]}
    back = {m.local: m for m in mappings[(RecordType.CLIENTS, Direction.INBOUND)]}
    assert (out["arr_cents"].transform, back["arr_cents"].transform) == (
        "cents_to_units",
        "units_to_cents",
    )


@pytest.mark.parametrize(
    ("provider", "credential", "message"),
    [
        ("hubspot", {}, "needs an api_key, or an OAuth2 access_token"),
        ("hubspot", {"access_token": "CJb7x0secret", "expires_at": "soon"}, "expires_at"),
        ("salesforce", {"access_token": "00D!secret42"}, "base_url"),
        ("stripe", {"access_token": "sk_live_secret"}, "api_key"),
        ("keyrack", {"access_token": "kr_live_secret0000"}, "api_key"),
        ("webhook", {"api_key": "whsec_secret000000"}, "signing_secret"),
    ],
)
def test_a_credential_that_cannot_work_is_refused_without_quoting_it(
    provider: str, credential: dict, message: str
) -> None:
    base_url = BASE_URLS.get(provider)
    with httpx.Client() as http, pytest.raises(ValueError, match=message) as raised:
        connector_for(provider)(credential=credential, http=http, base_url=base_url)
    assert all(str(v) not in str(raised.value) for v in credential.values())


@pytest.mark.parametrize("provider", sorted(BASE_URLS))
def test_a_connection_without_a_real_service_needs_its_address(provider: str) -> None:
    with httpx.Client() as http, pytest.raises(ValueError, match="base_url"):
        connector_for(provider)(credential=CREDENTIALS[provider], http=http)


def test_importing_the_connectors_loads_no_server_dependency() -> None:
    code = "import sys, keyrack.integrations.connectors; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    assert not loaded & {"fastapi", "sqlalchemy", "redis", "starlette", "alembic"}
