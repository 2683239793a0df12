"""An attacker's regression tests: each names the rule a past hole broke.

Every test runs against the real app on a socket, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from pydantic import ValidationError

from keyrack import outbound
from keyrack.config import Settings
from keyrack.domain.tenancy import Role
from keyrack.logging import JsonFormatter
from keyrack.server import create_app
from keyrack.services import jobs, keys, tenancy, webhooks
from keyrack.services.context import Context
from tests.conftest import OPERATOR, Seeded
from tests.live import serve_in_thread

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _login_form(client: httpx.Client) -> str:
    page = client.get("/console/login")
    found = _CSRF.search(page.text)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v2/keys", {"name": "a\x00b"}),
        ("GET", "/api/v2/keys/key_%00x", None),
        ("POST", "/api/v2/webhooks", {"url": "https://hooks.example/\x00"}),
        ("GET", "/api/v2/apps/%00", None),
    ],
)
def test_a_nul_character_anywhere_is_a_validation_problem_not_a_500(
    api: httpx.Client, seeded: Seeded, method: str, path: str, body: object
) -> None:
    response = api.request(method, path, headers=seeded.headers(), json=body)
    assert response.status_code == 400, response.text
    assert response.json()["type"].endswith("/validation-error")


def test_a_nul_character_in_the_sign_in_email_is_a_page_not_a_500(api: httpx.Client) -> None:
    token = _login_form(api)
    response = api.post(
        "/console/login", data={"email": "a\x00@x.test", "password": "x", "csrf_token": token}
    )
    assert response.status_code == 400
    assert "text/html" in response.headers["content-type"]


def _still_valid(api: httpx.Client, seeded: Seeded) -> bool:
    return api.get("/api/v2/health", headers=seeded.headers()).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/console/login?next=/console&key={secret}"),
        ("GET", "/healthz?x={secret}"),
        ("POST", "/api/v2/handoffs/open?api_key={secret}"),
    ],
)
def test_a_key_in_any_url_query_is_refused_and_revoked_not_only_under_the_api(
    api: httpx.Client, seeded: Seeded, method: str, path: str
) -> None:
    assert _still_valid(api, seeded)
    response = api.request(method, path.format(secret=seeded.secret), json={"token": "x"})
    assert response.status_code == 400
    assert response.json()["type"].endswith("/key-in-url")
    assert seeded.secret not in response.text
    refused = api.get("/api/v2/health", headers=seeded.headers())
    assert refused.json()["type"].endswith("/revoked-key")


def test_a_query_without_a_key_shaped_value_leaves_console_pages_alone(
    api: httpx.Client, seeded: Seeded
) -> None:
    assert api.get("/console/login?next=/console/audit&token=abc").status_code == 200
    assert _still_valid(api, seeded)


def test_an_instance_host_with_a_trailing_dot_is_still_bound_to_its_tenant(
    api: httpx.Client, seeded: Seeded
) -> None:
    for host in ("other.localhost", "other.localhost.", "OTHER.localhost.:8000"):
        response = api.get("/api/v2/health", headers={**seeded.headers(), "Host": host})
        assert response.status_code == 403, host
        assert response.json()["type"].endswith("/wrong-tenant")


def test_api_responses_are_never_stored_by_caches(api: httpx.Client, seeded: Seeded) -> None:
    created = api.post("/api/v2/keys", headers=seeded.headers(), json={"name": "Zapier"})
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    assert api.post("/api/v2/leaks", json=[{"token": "x"}]).headers["cache-control"] == "no-store"


def test_a_hand_off_link_token_never_reaches_the_access_log(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    token = "Zx9capabilityToken0123456789abcdefghijklmnop"
    with (
        caplog.at_level(logging.INFO, logger="keyrack.access"),
        serve_in_thread(create_app(ctx=ctx)) as url,  # stopped: every line is written
        httpx.Client(base_url=url) as api,
    ):
        assert api.get(f"/console/handoff/{token}").status_code == 200
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "keyrack.access"]
    assert any("/console/handoff/[redacted]" in line for line in lines)
    assert not any(token in line for line in lines)


@pytest.fixture
def team(ctx: Context) -> dict[str, int]:
    """An organization with one user of each role, all with PASSWORD."""
    tenancy.create_org(ctx, OPERATOR, name="Acme", slug="acme")
    return {
        role.value: tenancy.create_user(
            ctx,
            OPERATOR,
            org_slug="acme",
            email=f"{role.value}@acme.test",
            role=role,
            password=PASSWORD,
        ).user.id
        for role in Role
    }


def _signed_in(api: httpx.Client, email: str) -> str:
    """Sign ``api`` in as ``email``; the CSRF token of its session."""
    token = _login_form(api)
    response = api.post(
        "/console/login", data={"email": email, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 303
    found = _CSRF.search(api.get("/console/settings/team").text)
    assert found is not None
    return found.group(1)


def test_an_admin_cannot_deactivate_the_owner(
    api: httpx.Client, ctx: Context, team: dict[str, int]
) -> None:
    csrf = _signed_in(api, "admin@acme.test")
    response = api.post(
        f"/console/settings/team/users/{team['owner']}/active",
        data={"csrf_token": csrf, "active": "false"},
    )
    assert response.status_code == 403
    assert tenancy.authenticate(ctx, "owner@acme.test", PASSWORD) is not None
    member = api.post(
        f"/console/settings/team/users/{team['member']}/active",
        data={"csrf_token": csrf, "active": "false"},
    )
    assert member.status_code == 303


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/console/settings/api", {"name": "a", "owner": "99999999999999999999"}),
        ("/console/settings/api", {"name": "a", "owner": "9999999999"}),
        ("/console/settings/api", {"name": "a", "scope": "9999999999"}),
        ("/console/settings/team/users/99999999999999999999/active", {"active": "true"}),
        ("/console/settings/team/users/9999999999/active", {"active": "true"}),
    ],
)
def test_out_of_range_ids_in_console_forms_are_a_page_not_a_500(
    api: httpx.Client, team: dict[str, int], path: str, form: dict[str, str]
) -> None:
    csrf = _signed_in(api, "owner@acme.test")
    response = api.post(path, data={"csrf_token": csrf, **form})
    assert 400 <= response.status_code < 500, response.text
    assert "text/html" in response.headers["content-type"]


def test_an_audit_filter_at_the_end_of_time_is_a_page_not_a_500(
    api: httpx.Client, team: dict[str, int]
) -> None:
    _signed_in(api, "owner@acme.test")
    response = api.get("/console/audit?until=9999-12-31")
    assert response.status_code == 400
    assert "text/html" in response.headers["content-type"]


@pytest.fixture
def strict_ctx(ctx: Context) -> Context:
    """``ctx`` with the production default: webhooks may not reach internal addresses."""
    settings = ctx.settings.model_copy(update={"webhook_allow_private_targets": False})
    return Context(settings=settings, db=ctx.db, clock=ctx.clock, bus=ctx.bus)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost:9000/",
        "http://metadata.localhost./",
        "http://100.64.0.1/",
    ],
)
def test_a_webhook_url_naming_an_internal_address_is_refused_by_default(
    strict_ctx: Context, seeded: Seeded, url: str
) -> None:
    with (
        serve_in_thread(create_app(ctx=strict_ctx)) as base,
        httpx.Client(base_url=base) as api,
    ):
        response = api.post("/api/v2/webhooks", headers=seeded.headers(), json={"url": url})
        assert response.status_code == 400, response.text
        assert "KEYRACK_WEBHOOK_ALLOW_PRIVATE_TARGETS" in response.json()["detail"]
        public = api.post(
            "/api/v2/webhooks", headers=seeded.headers(), json={"url": "https://hooks.example/x"}
        )
        assert public.status_code == 201


def test_a_delivery_to_a_host_resolving_to_loopback_is_never_sent(
    strict_ctx: Context, seeded: Seeded
) -> None:
    # 2130706433 is 127.0.0.1 as one number. Registration refuses it now, so the endpoint
    # is one registered while private targets were allowed: the delivery still checks.
    view, _ = webhooks.create_endpoint(
        seeded.ctx, OPERATOR, seeded.org_id, url="http://2130706433:9/hook"
    )
    keys.revoke_key(strict_ctx, OPERATOR, seeded.scope, seeded.key.ref, reason="test")
    report = jobs.sweep(strict_ctx)
    assert report.webhooks_delivered == 0
    [delivery] = webhooks.list_deliveries(strict_ctx, seeded.org_id, view.id).data
    assert delivery.last_status_code is None
    assert delivery.last_error is not None and "non-public address" in delivery.last_error


def test_a_forged_first_x_forwarded_for_entry_does_not_pass_the_ip_allow_list(
    seeded: Seeded,
) -> None:
    _, secret = seeded.new_key(permissions=["keys:manage"], allowed_cidrs=["203.0.113.0/24"])
    seeded.ctx.settings.trust_forwarded_for = True
    with serve_in_thread(create_app(ctx=seeded.ctx), proxy_headers=False) as url:
        # the client wrote 203.0.113.5; the proxy appended the address it saw
        forged = {"X-API-Key": secret, "X-Forwarded-For": "203.0.113.5, 198.51.100.7"}
        response = httpx.get(f"{url}/api/v2/health", headers=forged)
    assert response.status_code == 403
    assert response.json()["type"].endswith("/ip-not-allowed")


@pytest.mark.parametrize("weak", ["a" * 64, "ab" * 32, "0123456" * 6, "changeme"])
def test_a_guessable_secret_key_is_refused(weak: str) -> None:
    with pytest.raises(ValidationError, match="KEYRACK_SECRET_KEY"):
        Settings(secret_key=weak)


@pytest.mark.parametrize(
    "path",
    ["/api/v2/keys/{secret}", "/api/v2/clients/{secret}", "/console/settings/api/keys/{secret}"],
)
def test_a_key_in_the_url_path_is_never_echoed_and_is_revoked(
    api: httpx.Client, seeded: Seeded, path: str
) -> None:
    response = api.get(path.format(secret=seeded.secret), headers=seeded.headers())
    assert response.status_code == 400
    assert response.json()["type"].endswith("/key-in-url")
    assert seeded.secret not in response.text
    assert not _still_valid(api, seeded)


def test_a_revocation_reason_with_braces_is_text_not_a_format_template(
    api: httpx.Client, seeded: Seeded
) -> None:
    victim, _ = seeded.new_key(name="Victim")
    reason = "{boom} {ref.__class__} {0}"
    response = api.post(
        f"/api/v2/keys/{victim.ref}/revoke", headers=seeded.headers(), json={"reason": reason}
    )
    assert response.status_code == 200, response.text
    notes = api.get("/api/v2/notifications", headers=seeded.headers()).json()["data"]
    assert any(note["body"].endswith(f"Reason: {reason}") for note in notes)


def test_a_leaked_key_is_revoked_even_when_the_report_url_has_braces(
    api: httpx.Client, seeded: Seeded
) -> None:
    report = [{"token": seeded.secret, "url": "https://gist.example/{id}/{0}"}]
    assert api.post("/api/v2/leaks", json=report).status_code == 202
    assert not _still_valid(api, seeded)


def test_a_refused_setting_is_not_echoed_in_the_error() -> None:
    candidate = "short-but-real-Secret-9f8e7d"
    with pytest.raises(ValidationError) as refused:
        Settings(secret_key=candidate)
    assert candidate not in str(refused.value)


def test_an_org_admin_key_cannot_mint_a_key_acting_as_a_staff_member_of_its_org(
    api: httpx.Client, ctx: Context, seeded: Seeded
) -> None:
    # the first-run owner is both an org owner and platform staff
    staff = tenancy.create_user(
        ctx, OPERATOR, org_slug="acme", email="ops@acme.test", role=Role.OWNER, staff=True
    ).user
    response = api.post(
        "/api/v2/keys",
        headers=seeded.headers(),
        json={"name": "Escalate", "owner_id": staff.id, "permissions": ["keys:manage"]},
    )
    assert response.status_code == 403, response.text
    listed = api.get("/api/v2/keys", headers=seeded.headers()).json()["data"]
    assert [k["name"] for k in listed] == ["Seed key"]


def test_a_key_pasted_into_a_field_is_not_echoed_in_the_problem(
    api: httpx.Client, seeded: Seeded
) -> None:
    _, other = seeded.new_key(name="Pasted")
    response = api.post(
        "/api/v2/keys",
        headers=seeded.headers(),
        json={"name": "Office only", "allowed_cidrs": [other]},
    )
    assert response.status_code == 400, response.text
    assert other not in response.text
    assert "kr_test_[redacted]" in response.text


def test_a_delivery_goes_to_the_address_that_was_checked_keeping_the_name() -> None:
    """DNS rebinding: the name is resolved once, and that very address is connected to."""
    answers = iter([["93.184.216.34", "2606:2800:220:1::1"], ["127.0.0.1"]])
    lookups: list[tuple[str, int]] = []

    def rebinding_dns(host: str, port: int) -> list[str]:
        lookups.append((host, port))
        return next(answers)

    target = outbound.public_target("https://hooks.example:8443/in?x=1", rebinding_dns)
    assert target.url == "https://93.184.216.34:8443/in?x=1"
    assert target.headers == {"Host": "hooks.example:8443"}
    assert target.extensions == {"sni_hostname": "hooks.example"}  # and its certificate
    assert lookups == [("hooks.example", 8443)]
    with pytest.raises(outbound.TargetRefused, match="non-public"):
        outbound.public_target("http://hooks.example/in", rebinding_dns)


@pytest.mark.parametrize(
    "answer", [["93.184.216.34", "10.0.0.7"], [], OSError("no such host")], ids=str
)
def test_a_name_with_any_internal_address_or_none_is_refused(answer: object) -> None:
    def dns(host: str, port: int) -> list[str]:
        if isinstance(answer, OSError):
            raise answer
        return list(answer)  # type: ignore[call-overload]

    with pytest.raises(outbound.TargetRefused, match="refused"):
        outbound.public_target("http://hooks.example/in", dns)
