"""Architecture boundaries: the SDK import is light and the domain is pure."""

from __future__ import annotations

import subprocess
import sys

import pytest

SERVER_DEPS = ("fastapi", "sqlalchemy", "redis", "starlette", "alembic")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


def test_import_keyrack_loads_no_server_dependency() -> None:
    loaded = _modules_after("import keyrack")
    assert not loaded & set(SERVER_DEPS)


@pytest.mark.parametrize(
    "module",
    ["keys", "verification", "permissions", "tenancy", "limits", "ids", "passwords", "authority"],
)
def test_domain_modules_import_no_framework_database_or_cache(module: str) -> None:
    loaded = _modules_after(f"import keyrack.domain.{module}")
    assert not loaded & set(SERVER_DEPS)


def test_public_names_are_sorted_and_complete() -> None:
    import keyrack

    assert keyrack.__all__ == sorted(keyrack.__all__)
    assert all(hasattr(keyrack, name) for name in keyrack.__all__)
