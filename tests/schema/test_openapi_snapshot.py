"""The served OpenAPI document, byte for byte, against the committed ``openapi.json``.

A change to the API changes the document on purpose: regenerate the snapshot then,
and review its diff with the change::

    KEYRACK_WRITE_OPENAPI=1 .venv/bin/python -m pytest tests/schema/test_openapi_snapshot.py
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

SNAPSHOT = Path(__file__).with_name("openapi.json")


def test_the_served_openapi_document_is_the_committed_snapshot(api: httpx.Client) -> None:
    served = api.get("/api/v2/openapi.json")
    assert served.status_code == 200
    if os.environ.get("KEYRACK_WRITE_OPENAPI"):
        SNAPSHOT.write_bytes(served.content)
    assert served.content == SNAPSHOT.read_bytes(), (
        "the OpenAPI document differs from tests/schema/openapi.json; if the API changed on "
        "purpose, regenerate it with KEYRACK_WRITE_OPENAPI=1 .venv/bin/python -m pytest "
        "tests/schema/test_openapi_snapshot.py and review the diff"
    )
