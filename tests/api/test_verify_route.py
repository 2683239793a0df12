"""POST /api/v2/keys/verify: other services check keys presented to them."""

from __future__ import annotations

import httpx
import pytest

from keyrack.domain.keys import Environment, generate
from keyrack.services import keys, tenancy
from tests.conftest import OPERATOR, Seeded, seed_org


@pytest.fixture
def verifier_headers(seeded: Seeded) -> dict[str, str]:
    _, secret = seeded.new_key(
        name="Billing service", permissions=["keys:verify"], rate_per_second=1000, concurrency=100
    )
    return {"X-API-Key": secret}


def verify(api: httpx.Client, headers: dict[str, str], **body: object) -> dict[str, object]:
    response = api.post("/api/v2/keys/verify", headers=headers, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def test_a_valid_key_is_valid_with_its_identity_and_never_its_secret(
    api: httpx.Client, seeded: Seeded, verifier_headers: dict[str, str]
) -> None:
    view, secret = seeded.new_key(name="Presented", permissions=["clients:read"])
    result = verify(api, verifier_headers, key=secret, permissions=["clients:read"])
    assert result["valid"] is True and result["code"] == "VALID"
    assert isinstance(result["key"], dict) and result["key"]["ref"] == view.ref
    assert secret not in str(result)


@pytest.mark.parametrize(
    ("presented", "code"),
    [("kr_live_garbage", "NOT_FOUND"), (generate(Environment.SANDBOX).secret, "NOT_FOUND")],
    ids=["malformed", "unknown"],
)
def test_unknown_and_malformed_keys_are_not_found(
    api: httpx.Client, verifier_headers: dict[str, str], presented: str, code: str
) -> None:
    result = verify(api, verifier_headers, key=presented)
    assert (result["valid"], result["code"], result["key"]) == (False, code, None)


def test_missing_permissions_are_reported(
    api: httpx.Client, seeded: Seeded, verifier_headers: dict[str, str]
) -> None:
    _, secret = seeded.new_key(permissions=["clients:read"])
    result = verify(api, verifier_headers, key=secret, permissions=["clients:write"])
    assert (result["valid"], result["code"]) == (False, "INSUFFICIENT_PERMISSIONS")


def test_a_revoked_key_is_revoked(
    api: httpx.Client, seeded: Seeded, verifier_headers: dict[str, str]
) -> None:
    view, secret = seeded.new_key()
    keys.revoke_key(seeded.ctx, OPERATOR, seeded.scope, view.ref, reason="test")
    assert verify(api, verifier_headers, key=secret)["code"] == "REVOKED"


def test_verification_consumes_the_presented_keys_rate(
    api: httpx.Client, seeded: Seeded, verifier_headers: dict[str, str]
) -> None:
    _, secret = seeded.new_key(rate_per_second=2)
    codes = [verify(api, verifier_headers, key=secret)["code"] for _ in range(3)]
    assert codes == ["VALID", "VALID", "RATE_LIMITED"]


def test_another_organizations_key_is_not_found_even_if_valid(
    api: httpx.Client, seeded: Seeded, verifier_headers: dict[str, str]
) -> None:
    other = seed_org(seeded.ctx, "globex")
    result = verify(api, verifier_headers, key=other.secret)
    assert (result["valid"], result["code"], result["key"]) == (False, "NOT_FOUND", None)


def test_a_caller_without_keys_verify_is_403(api: httpx.Client, seeded: Seeded) -> None:
    response = api.post("/api/v2/keys/verify", headers=seeded.headers(), json={"key": "x"})
    assert response.status_code == 403


def test_unknown_required_permissions_are_a_validation_problem(
    api: httpx.Client, seeded: Seeded, verifier_headers: dict[str, str]
) -> None:
    response = api.post(
        "/api/v2/keys/verify",
        headers=verifier_headers,
        json={"key": seeded.secret, "permissions": ["everything"]},
    )
    assert response.status_code == 400
    assert seeded.secret not in response.text


def test_staff_callers_see_every_org_and_a_disabled_orgs_key_is_disabled(
    api: httpx.Client, seeded: Seeded, verifier_headers: dict[str, str]
) -> None:
    other = seed_org(seeded.ctx, "globex")
    tenancy.update_org(seeded.ctx, OPERATOR, "globex", api_enabled=False)
    staff_user = tenancy.create_user(
        seeded.ctx, OPERATOR, org_slug="acme", email="ops@acme.test", staff=True
    ).user
    _, staff_secret = seeded.new_key(permissions=["keys:verify"], owner_id=staff_user.id)
    result = verify(api, {"X-API-Key": staff_secret}, key=other.secret)
    assert (result["valid"], result["code"]) == (False, "DISABLED")


def test_a_location_key_verifies_only_its_own_locations_keys(
    api: httpx.Client, seeded: Seeded
) -> None:
    other = tenancy.create_location(seeded.ctx, OPERATOR, org_slug="acme", name="B", slug="b")
    _, caller = seeded.new_key(
        permissions=["keys:verify"], location_id=seeded.location_id, rate_per_second=1000
    )
    _, same = seeded.new_key(location_id=seeded.location_id)
    _, elsewhere = seeded.new_key(location_id=other.id)
    headers = {"X-API-Key": caller}
    assert verify(api, headers, key=same)["code"] == "VALID"
    assert verify(api, headers, key=elsewhere)["code"] == "NOT_FOUND"
    assert verify(api, headers, key=seeded.secret)["code"] == "NOT_FOUND"  # an agency key
