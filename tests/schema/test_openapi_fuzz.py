"""Schemathesis over the served OpenAPI document: every operation, generated inputs,
no 5xx and every documented response matches its schema.

The server is real (uvicorn on a loopback socket) over a migrated SQLite
database, called with a key holding every permission. Examples per operation:
``EXAMPLES`` (hypothesis ``max_examples``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
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
API_PATHS = r"^/(api/v2/|healthz|readyz)"


@dataclass(frozen=True)
class Served:
    url: str
    headers: dict[str, str]


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
    with serve_in_thread(create_app(ctx=ctx)) as url:
        yield Served(url, {"X-API-Key": secret})
    ctx.db.dispose()


def fuzz(operation: APIOperation, mode: GenerationMode, served: Served) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case) -> None:
        case.call_and_validate(
            base_url=served.url,
            headers=served.headers,
            checks=[not_a_server_error, response_schema_conformance],
        )

    run()


@pytest.mark.timeout(600)  # every operation in one test: ~15 s here, far longer on a loaded box
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_answers_5xx_or_breaks_its_documented_schema(
    served: Served, mode: GenerationMode
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
