"""The key format: shape, checksum, digest, masking."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyrack.domain import keys
from keyrack.domain.keys import ALPHABET, KEY_LENGTH, Environment


@pytest.mark.parametrize("env", list(Environment))
def test_generated_key_has_the_documented_shape(env: Environment) -> None:
    made = keys.generate(env)
    assert made.secret.startswith(env.prefix)
    assert len(made.secret) == KEY_LENGTH == 8 + 32 + 6
    assert set(made.secret[8:]) <= set(ALPHABET)
    assert made.digest == hashlib.sha256(made.secret.encode()).hexdigest()
    assert made.last4 == made.secret[-4:]
    assert keys.is_well_formed(made.secret)


def test_keys_are_unique_and_random() -> None:
    bodies = {keys.generate(Environment.PRODUCTION).secret[8:40] for _ in range(2000)}
    assert len(bodies) == 2000


@given(
    env=st.sampled_from(list(Environment)),
    body=st.text(alphabet=ALPHABET, min_size=32, max_size=32),
    position=st.integers(min_value=0, max_value=32 + 6 - 1),
    shift=st.integers(min_value=1, max_value=len(ALPHABET) - 1),
)
def test_any_single_character_typo_is_rejected_by_the_checksum(
    env: Environment, body: str, position: int, shift: int
) -> None:
    # Everything is drawn by hypothesis (a secret made outside it makes the strategy flaky);
    # the typo replaces one character after the prefix by a different one of the alphabet.
    payload = env.prefix + body
    secret = payload + keys.checksum(payload)
    assert keys.is_well_formed(secret)
    index = len(env.prefix) + position
    replacement = ALPHABET[(ALPHABET.index(secret[index]) + shift) % len(ALPHABET)]
    typo = secret[:index] + replacement + secret[index + 1 :]
    assert not keys.is_well_formed(typo)


@given(st.text(max_size=80))
def test_arbitrary_text_is_never_well_formed_by_accident(text: str) -> None:
    if keys.is_well_formed(text):  # only possible for a correctly checksummed string
        payload = text[:-6]
        assert keys.checksum(payload) == text[-6:]


def test_mask_shows_prefix_and_last_four_only() -> None:
    assert keys.mask("kr_live_", "abcd") == "kr_live_••••••••abcd"


def test_cidrs_are_normalized_and_garbage_refused() -> None:
    from keyrack.errors import InvalidInput

    assert keys.normalize_cidrs(["10.0.0.1/8", "192.168.1.7"]) == ("10.0.0.0/8", "192.168.1.7/32")
    with pytest.raises(InvalidInput):
        keys.normalize_cidrs(["not-an-ip"])
