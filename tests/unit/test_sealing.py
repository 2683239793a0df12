"""Sealing: round trip, tamper detection, purpose separation."""

from __future__ import annotations

import pytest

from keyrack.domain.sealing import Sealer, SealError

SECRET = "unit-test-secret-key-0123456789abcdef"


def test_sealed_values_open_to_the_plaintext_and_never_contain_it() -> None:
    sealer = Sealer(SECRET, "handoff")
    sealed = sealer.seal("kr_live_example")
    assert "kr_live_example" not in sealed
    assert sealer.open(sealed) == "kr_live_example"
    assert sealer.seal("same") != sealer.seal("same")  # fresh nonce each time


def test_a_tampered_value_does_not_open() -> None:
    sealer = Sealer(SECRET, "handoff")
    sealed = bytearray(sealer.seal("payload").encode())
    sealed[-5] = ord("A") if sealed[-5] != ord("A") else ord("B")
    with pytest.raises(SealError):
        sealer.open(sealed.decode())


def test_a_value_sealed_for_one_purpose_does_not_open_for_another() -> None:
    sealed = Sealer(SECRET, "handoff").seal("payload")
    with pytest.raises(SealError):
        Sealer(SECRET, "webhook-secret").open(sealed)
    with pytest.raises(SealError):
        Sealer(SECRET + "x", "handoff").open(sealed)
