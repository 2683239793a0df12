"""The connector contract, run against every provider's peer (see
``keyrack.integrations.connector``): HubSpot and Salesforce fakes, localstripe, and
another real Keyrack."""

from __future__ import annotations

import logging
import random
import time

import pytest

from keyrack.integrations.connector import (
    KEYRACK,
    ConnectorError,
    ProbeStatus,
    ProviderUnavailable,
    RecordType,
    WriteResult,
)
from tests.integrations.peers import Peer, WritablePeer

CLIENTS = RecordType.CLIENTS


def ids(records) -> list[str]:
    return [r.remote_id for r in records]


# ---- probe ---------------------------------------------------------------------------


def test_probe_of_a_working_credential_is_active(peer: Peer) -> None:
    probe = peer.connector().probe()
    assert (probe.status, probe.reason, probe.failure) == (ProbeStatus.ACTIVE, "ok", None)


def test_probe_of_a_refused_credential_says_so_with_the_providers_message(peer: Peer) -> None:
    connector = peer.connector()
    refusal = peer.refuse()
    probe = connector.probe()
    assert probe.status in refusal.statuses
    assert probe.failure is not None
    assert probe.failure.message == refusal.message
    assert probe.failure.http_status == refusal.http_status
    assert probe.exchange is not None and probe.exchange.status == refusal.http_status


def test_a_5xx_on_probe_is_unreachable_and_says_nothing_of_the_credential(peer: Peer) -> None:
    connector = peer.connector()
    peer.fail_next(503)
    probe = connector.probe()
    assert probe.status is ProbeStatus.UNREACHABLE
    assert probe.reason == "server-error"
    assert probe.failure is not None and probe.failure.http_status == 503
    assert connector.probe().status is ProbeStatus.ACTIVE


def test_a_provider_that_cannot_be_reached_is_unreachable(peer: Peer) -> None:
    connector = peer.connector()
    peer.base_url = "http://127.0.0.1:9"  # discard: nothing listens
    probe = peer.connector().probe()
    assert (probe.status, probe.reason) == (ProbeStatus.UNREACHABLE, "connection-failed")
    assert probe.failure is not None and probe.failure.http_status is None
    assert connector.probe().status is ProbeStatus.ACTIVE


# ---- OAuth2 --------------------------------------------------------------------------


def test_an_expired_access_token_is_refreshed_transparently_and_handed_over(
    oauth: WritablePeer,
) -> None:
    credential = oauth.oauth_credential()
    connector = oauth.connector(credential)
    oauth.expire(credential)
    assert connector.probe().status is ProbeStatus.ACTIVE
    (issued,) = oauth.issued
    assert issued["access_token"] != credential["access_token"]
    assert issued["refresh_token"] == credential["refresh_token"]
    assert {k: issued[k] for k in ("token_url", "client_id", "client_secret")} == {
        k: credential[k] for k in ("token_url", "client_id", "client_secret")
    }
    calls = connector.stats.api_calls
    assert connector.probe().status is ProbeStatus.ACTIVE
    assert connector.stats.api_calls == calls + 1  # the new token is used: no refresh
    assert len(oauth.issued) == 1


def test_an_access_token_past_its_expiry_is_refreshed_before_it_is_sent(
    oauth: WritablePeer,
) -> None:
    credential = oauth.oauth_credential() | {"expires_at": int(time.time()) - 5}
    connector = oauth.connector(credential)
    assert connector.probe().status is ProbeStatus.ACTIVE
    assert connector.stats.api_calls == 2  # the token request, then the probe
    expires_at = oauth.issued[0]["expires_at"]
    assert expires_at is None or expires_at > time.time()  # Salesforce tells no expiry


def test_a_refused_refresh_makes_the_credential_revoked(oauth: WritablePeer) -> None:
    credential = oauth.oauth_credential()
    connector = oauth.connector(credential)
    message, code = oauth.revoke_refresh(credential)
    probe = connector.probe()
    assert (probe.status, probe.reason) == (ProbeStatus.REVOKED, "refresh-refused")
    assert probe.failure is not None
    assert (probe.failure.message, probe.failure.code) == (message, code)
    assert probe.failure.http_status == 400
    assert oauth.issued == []


def test_an_expired_token_that_cannot_be_refreshed_is_expired(oauth: WritablePeer) -> None:
    credential = oauth.oauth_credential() | {"expires_at": int(time.time()) - 5}
    del credential["refresh_token"]
    oauth.expire(credential)
    probe = oauth.connector(credential).probe()
    assert (probe.status, probe.reason) == (ProbeStatus.EXPIRED, "token-expired")
    assert probe.failure is not None and probe.failure.http_status == 401


# ---- reading -------------------------------------------------------------------------


def test_changed_since_streams_every_record_across_pages_in_watermark_order(
    peer: Peer,
) -> None:
    seeded = peer.seed_clients(260)
    connector = peer.connector()
    records = list(connector.changed_since(CLIENTS, None))
    assert sorted(ids(records)) == sorted(seeded)
    assert len(set(r.watermark for r in records)) == len(records)
    assert connector.stats.api_calls >= 2  # pages of at most 200 (100 for Stripe)
    assert all(r.name for r in records)
    assert list(connector.changed_since(CLIENTS, records[-1].watermark)) == []


def test_changed_since_resumes_from_any_watermark_without_skipping_or_repeating(
    peer: Peer,
) -> None:
    peer.seed_clients(260)
    connector = peer.connector()
    records = list(connector.changed_since(CLIENTS, None))
    order = ids(records)
    edges = {0, 1, 99, 100, 199, 200, 201, len(records) - 2, len(records) - 1}  # at pages' ends
    sample = edges | set(random.Random(7).sample(range(len(records)), 2))
    for n in sorted(sample):
        resumed = ids(connector.changed_since(CLIENTS, records[n].watermark))
        assert resumed == order[n + 1 :], n


def test_a_record_changed_after_the_watermark_comes_again(peer: Peer) -> None:
    seeded = peer.seed_clients(5)
    connector = peer.connector()
    last = list(connector.changed_since(CLIENTS, None))[-1].watermark
    time.sleep(0.002)  # a later millisecond than the seeding's
    changed = peer.change(seeded[1])
    again = list(connector.changed_since(CLIENTS, last))
    assert ids(again) == [changed]
    assert list(connector.changed_since(CLIENTS, again[0].watermark)) == []


def test_a_malformed_watermark_is_refused(peer: Peer) -> None:
    with pytest.raises(ValueError, match="not a watermark"):
        next(iter(peer.connector().changed_since(CLIENTS, "somewhere=else")))


def test_get_reads_one_record_and_none_for_an_unknown_id(peer: Peer) -> None:
    _, second = peer.seed_clients(2)
    connector = peer.connector()
    found = connector.get(CLIENTS, second)
    assert found is not None
    assert found.remote_id == second
    assert found.name
    streamed = {r.remote_id: r for r in connector.changed_since(CLIENTS, None)}
    assert found.fields == streamed[second].fields
    assert connector.get(CLIENTS, "999999999") is None
    assert connector.get(CLIENTS, "no-such-record") is None


# ---- writing -------------------------------------------------------------------------


def test_upsert_creates_then_updates_then_leaves_unchanged_by_keyrack_id(
    writable: WritablePeer,
) -> None:
    connector = writable.connector()
    keys = [f"cli_{n:03d}" for n in range(5)]
    created = connector.upsert(CLIENTS, writable.clients(keys))
    assert [o.result for o in created] == [WriteResult.CREATED] * 5
    assert [o.keyrack_id for o in created] == keys
    assert writable.count() == 5
    remote = [o.remote_id for o in created]

    changed = writable.clients(keys[:2], " (renamed)") + writable.clients(keys[2:])
    updated = connector.upsert(CLIENTS, changed)
    assert [o.result for o in updated] == [WriteResult.UPDATED] * 2 + [WriteResult.UNCHANGED] * 3
    assert [o.remote_id for o in updated] == remote
    assert all(o.exchange is not None for o in updated[:2])
    assert all(o.exchange is None for o in updated[2:])

    found = connector.get(CLIENTS, str(remote[0]))
    assert found is not None
    assert found.external_ids == {KEYRACK: keys[0]}
    assert found.name == "Client cli_000 (renamed)"
    assert writable.count() == 5


def test_writing_the_same_batch_twice_writes_nothing_new(writable: WritablePeer) -> None:
    connector = writable.connector()
    batch = writable.clients([f"cli_{n:03d}" for n in range(connector.batch_size)])
    first = connector.upsert(CLIENTS, batch)
    assert {o.result for o in first} == {WriteResult.CREATED}
    stamps = [writable.stamp(str(o.remote_id)) for o in first]
    calls = connector.stats.api_calls
    time.sleep(0.002)

    second = connector.upsert(CLIENTS, batch)
    assert {o.result for o in second} == {WriteResult.UNCHANGED}
    assert [o.remote_id for o in second] == [o.remote_id for o in first]
    assert [writable.stamp(str(o.remote_id)) for o in second] == stamps
    reads = connector.batch_size if writable.per_record else 1
    assert connector.stats.api_calls == calls + reads  # the read-back only
    assert writable.count() == connector.batch_size


def test_more_records_than_a_batch_are_written_in_provider_sized_batches(
    writable: WritablePeer,
) -> None:
    connector = writable.connector()
    count = connector.batch_size * 2 + 7
    outcomes = connector.upsert(CLIENTS, writable.clients([f"k{n}" for n in range(count)]))
    assert [o.keyrack_id for o in outcomes] == [f"k{n}" for n in range(count)]
    assert {o.result for o in outcomes} == {WriteResult.CREATED}
    writes = count if writable.per_record else 3  # per batch (or record): read-back, write
    assert connector.stats.api_calls == writes * 2
    assert writable.count() == count


def test_one_bad_record_in_a_batch_of_100_fails_alone_with_the_providers_exact_error(
    writable: WritablePeer,
) -> None:
    connector = writable.connector()
    batch = writable.clients([f"cli_{n:03d}" for n in range(100)])
    bad, message, code = writable.bad_client("cli_bad")
    batch[37] = bad
    outcomes = connector.upsert(CLIENTS, batch)
    failed = [o for o in outcomes if o.result is WriteResult.FAILED]
    assert [o.keyrack_id for o in failed] == ["cli_bad"]
    (outcome,) = failed
    assert outcome.failure is not None
    assert outcome.failure.message.startswith(message)
    assert outcome.failure.code == code
    assert outcome.failure.http_status is not None
    assert outcome.exchange is not None
    assert "cli_bad" in (outcome.exchange.request_body or "")
    assert outcome.remote_id is None
    assert sum(o.result is WriteResult.CREATED for o in outcomes) == 99
    assert writable.count() == 99


@pytest.mark.parametrize("how", ["delete", "rename"])
def test_a_remote_field_gone_fails_every_write_with_the_providers_exact_error(
    writable: WritablePeer, how: str
) -> None:
    if writable.fixed_fields:
        pytest.skip(f"{writable.name}'s fields are fixed: none can be deleted or renamed")
    connector = writable.connector()
    keys = [f"cli_{n:03d}" for n in range(4)]
    connector.upsert(CLIENTS, writable.clients(keys[:2]))
    _, message, code = writable.remove_field(how)
    calls = connector.stats.api_calls
    outcomes = connector.upsert(CLIENTS, writable.clients(keys, " again"))
    assert [o.result for o in outcomes] == [WriteResult.FAILED] * 4
    assert {o.failure.code for o in outcomes if o.failure} == {code}
    assert all(o.failure and o.failure.message.startswith(message) for o in outcomes)
    assert connector.stats.api_calls - calls <= 4  # narrowed by the field, not split


# ---- rate limits, counts, secrets ----------------------------------------------------


def test_a_429_is_waited_out_and_the_wait_counted(peer: Peer) -> None:
    connector = peer.connector()
    assert connector.probe().status is ProbeStatus.ACTIVE
    peer.rate_limit()
    assert connector.probe().status is ProbeStatus.ACTIVE
    assert connector.probe().status is ProbeStatus.ACTIVE
    assert connector.stats.rate_limit_wait_seconds >= 1.0
    assert connector.stats.api_calls >= 4  # three probes and at least one refused send


def test_a_call_that_fails_raises_with_the_provider_failure(peer: Peer) -> None:
    connector = peer.connector()
    peer.fail_next(502)
    with pytest.raises(ProviderUnavailable) as raised:
        list(connector.changed_since(CLIENTS, None))
    assert isinstance(raised.value, ConnectorError)
    assert raised.value.failure.http_status == 502
    assert raised.value.exchange is not None


def test_no_secret_in_any_outcome_exception_log_or_repr(
    peer: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[object] = []
    peer.seed_clients(3)
    connector = peer.connector()
    seen += [connector, connector.probe(), *connector.changed_since(CLIENTS, None)]
    if isinstance(peer, WritablePeer) and peer.oauth:
        credential = peer.oauth_credential()
        oauth = peer.connector(credential)
        bad, _, _ = peer.bad_client("cli_bad")
        seen += oauth.upsert(CLIENTS, [*peer.clients(["cli_1"]), bad])
        peer.expire(credential)
        seen.append(oauth.probe())
        seen.append(oauth.upsert(CLIENTS, peer.clients(["cli_2"])))
    elif isinstance(peer, WritablePeer):
        bad, _, _ = peer.bad_client("cli_bad")
        seen += connector.upsert(CLIENTS, [*peer.clients(["cli_1"]), bad])
    peer.fail_next(503)
    with pytest.raises(ConnectorError) as raised:
        list(connector.changed_since(CLIENTS, None))
    seen += [raised.value, str(raised.value), raised.value.failure, raised.value.exchange]
    peer.refuse()
    seen.append(peer.connector().probe())

    text = repr(seen) + caplog.text
    assert peer.secrets
    for secret in peer.secrets:
        assert secret not in text
    assert "[redacted]" in text  # the Authorization headers of the exchanges
