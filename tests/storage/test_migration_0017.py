"""Migration 0017 (integration issues) on SQLite and PostgreSQL: its table comes with
heads and goes with its downgrade, leaving the integration tables it builds on."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from keyrack.storage.database import normalize_url
from keyrack.storage.migrate import alembic_config
from tests.storage.test_migration_0012 import blank_url  # noqa: F401 (a fixture)


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(normalize_url(url))
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_issues_table_comes_and_goes_with_0017(blank_url: str) -> None:  # noqa: F811
    config = alembic_config(blank_url)
    command.upgrade(config, "heads")
    assert "integration_issues" in _tables(blank_url)
    command.downgrade(config, "0017_integration_issues-1")
    left = _tables(blank_url)
    assert "integration_issues" not in left and "integrations" in left
    command.upgrade(config, "heads")
    assert "integration_issues" in _tables(blank_url)
