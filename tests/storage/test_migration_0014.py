"""Migration 0014 (integrations) on SQLite and PostgreSQL: its tables come with heads and
go with its downgrade, leaving the tables it builds on."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from keyrack.storage.database import normalize_url
from keyrack.storage.migrate import alembic_config
from tests.storage.test_migration_0012 import blank_url  # noqa: F401 (a fixture)

TABLES = {
    "integrations",
    "integration_syncs",
    "integration_changes",
    "sync_runs",
    "sync_run_records",
}


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(normalize_url(url))
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_integration_tables_come_and_go_with_0014(blank_url: str) -> None:  # noqa: F811
    config = alembic_config(blank_url)
    command.upgrade(config, "heads")
    assert _tables(blank_url) >= TABLES
    command.downgrade(config, "0014_integrations-1")
    left = _tables(blank_url)
    assert not TABLES & left
    assert {"crm_external_ids", "jobs", "webhook_endpoints"} <= left
    command.upgrade(config, "heads")
    assert _tables(blank_url) >= TABLES
