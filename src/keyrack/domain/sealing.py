"""Encryption at rest for the few secrets Keyrack must read back later.

Hand-off links and webhook signing secrets are sealed with AES-256-GCM under a
key derived (HKDF-SHA256) from ``KEYRACK_SECRET_KEY`` and a purpose label, so a
sealed value for one purpose cannot be opened as another.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12


class SealError(Exception):
    """The sealed value was tampered with, or sealed under another key or purpose."""


class Sealer:
    def __init__(self, secret_key: str, purpose: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"keyrack-sealing-v1", info=purpose.encode()
        ).derive(secret_key.encode())
        self._aead = AESGCM(derived)
        self._aad = purpose.encode()

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plaintext.encode(), self._aad)
        return base64.urlsafe_b64encode(sealed).decode()

    def open(self, sealed: str) -> str:
        try:
            raw = base64.urlsafe_b64decode(sealed.encode())
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._aad).decode()
        except (InvalidTag, ValueError) as exc:
            raise SealError("cannot open sealed value") from exc
