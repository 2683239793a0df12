"""The queue's place in the layout: it sits on storage and the domain, below every adapter."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_job_queue_imports_no_adapter_and_no_service() -> None:
    loaded = _modules_after("import keyrack.jobs, keyrack.jobs.admin")
    layers = {name.split(".")[1] for name in loaded if name.startswith("keyrack.")}
    assert not layers & {"http", "console", "cli", "services"}


def test_the_rules_of_a_job_are_plain_python() -> None:
    loaded = {name.split(".")[0] for name in _modules_after("import keyrack.domain.jobs")}
    assert not loaded & {"sqlalchemy", "fastapi", "redis", "psycopg", "prometheus_client"}
