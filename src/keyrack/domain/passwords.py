"""Console passwords: argon2id hashes, generated passwords (issued to be changed)."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from keyrack.errors import InvalidInput

MIN_LENGTH = 12

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
_dummy_hash = _hasher.hash(secrets.token_urlsafe(16))


def use_parameters(*, time_cost: int, memory_cost_kib: int, parallelism: int = 1) -> None:
    """Change the argon2id cost for new hashes (the test suite makes it cheap).

    Verification reads the parameters stored in each hash, so existing hashes keep working.
    """
    global _hasher, _dummy_hash
    _hasher = PasswordHasher(
        time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism
    )
    _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))


def check_length(password: str) -> None:
    """Refuse a password a person chose that is shorter than ``MIN_LENGTH``."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"a password must be at least {MIN_LENGTH} characters")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant-time check; a missing hash still spends the same work."""
    try:
        return _hasher.verify(password_hash or _dummy_hash, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(18)
