"""Schemathesis over the served OpenAPI document: every operation, generated inputs,
no 5xx, every documented response matches its schema, and every status observed is
one the operation documents.

The server is real (uvicorn on a loopback socket) over a migrated SQLite
database, called with a key holding every permission (positive and negative
inputs), and, for the refusals, with no key, a key holding no permission and a key
allowed one request a second. Examples per operation: ``EXAMPLES`` (hypothesis
``max_examples``).
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import response_schema_conformance

from keyrack.domain.permissions import PERMISSIONS
from keyrack.server import create_app
from keyrack.services import keys
from keyrack.services.context import Context
from keyrack.storage.database import Database
from tests.conftest import OPERATOR, make_settings, seed_org
from tests.live import serve_in_thread

EXAMPLES = 25
REFUSAL_EXAMPLES = 3
API_PATHS = r"^/(api/v2/|healthz|readyz)"


@dataclass(frozen=True)
class Served:
    url: str
    headers: dict[str, str]
    refused: tuple[dict[str, str], ...]
    """Headers the gateway refuses or throttles: no key, no permission, 1 request/s."""
    observed: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    """Each operation's statuses seen by every test of the module."""


@pytest.fixture(scope="module")
def served(_sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    target = tmp_path_factory.mktemp("fuzz") / "keyrack.db"
    shutil.copyfile(_sqlite_template, target)
    settings_ = make_settings(f"sqlite:///{target}")
    ctx = Context(settings=settings_, db=Database(settings_.database_url))
    org = seed_org(ctx, "fuzz")
    _, secret = keys.create_key(
        ctx,
        OPERATOR,
        org.scope,
        name="Fuzzer",
        permissions=PERMISSIONS,
        rate_per_second=100_000,
        concurrency=1_000,
    )
    _, powerless = keys.create_key(ctx, OPERATOR, org.scope, name="No permission")
    _, slow = keys.create_key(
        ctx, OPERATOR, org.scope, name="Slow", permissions=PERMISSIONS, rate_per_second=1
    )
    refused = ({}, {"X-API-Key": powerless}, {"X-API-Key": slow}, {"X-API-Key": slow})
    with serve_in_thread(create_app(ctx=ctx)) as url:
        yield Served(url, {"X-API-Key": secret}, refused)
    ctx.db.dispose()


CHECKS = [not_a_server_error, response_schema_conformance]


def fuzz(operation: APIOperation, mode: GenerationMode | None, served: Served) -> None:
    """``EXAMPLES`` cases of ``mode`` with the fuzzer's key; with None, ``REFUSAL_EXAMPLES``
    positive cases, each sent with every header set of ``served.refused``."""
    seen = served.observed[operation.label]

    @given(case=operation.as_strategy(generation_mode=mode or GenerationMode.POSITIVE))
    @settings(
        max_examples=EXAMPLES if mode else REFUSAL_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case) -> None:
        for headers in (served.headers,) if mode else served.refused:
            response = case.call_and_validate(base_url=served.url, headers=headers, checks=CHECKS)
            seen.add(response.status_code)

    run()


def undocumented(operations: list[APIOperation], served: Served) -> dict[str, list[int]]:
    """Per operation, the statuses observed that its document does not list."""
    missing = {}
    for operation in operations:
        documented = {int(status) for status in operation.definition.raw["responses"]}
        if extra := sorted(served.observed[operation.label] - documented):
            missing[operation.label] = extra
    return missing


@pytest.mark.timeout(600)  # every operation in one test: ~15 s here, far longer on a loaded box
@pytest.mark.parametrize(
    "mode",
    [GenerationMode.POSITIVE, GenerationMode.NEGATIVE, None],
    ids=["positive", "negative", "refusals"],
)
def test_no_operation_answers_5xx_an_undocumented_status_or_outside_its_schema(
    served: Served, mode: GenerationMode | None
) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/api/v2/openapi.json")
    operations = [
        result.ok() for result in schema.include(path_regex=API_PATHS).get_all_operations()
    ]
    assert len(operations) >= 30
    failures: dict[str, str] = {}
    for operation in operations:
        try:
            fuzz(operation, mode, served)
        except Unsatisfiable:  # nothing to negate: e.g. no parameters, or only a string path
            continue
        except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure
            failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    assert not failures, "\n\n".join(f"FAILED {label}: {text}" for label, text in failures.items())
    mismatches = undocumented(operations, served)
    count = sum(len(statuses) for statuses in mismatches.values())
    assert count == 0, f"{count} observed statuses not documented: {mismatches}"
