"""Alembic, driven from code: ``keyrack migrate`` and the test fixtures use this."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from keyrack.storage.database import MIGRATIONS_DIR, database_errors, normalize_url


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Apply every migration (all heads) to the database at ``url``."""
    with database_errors():
        command.upgrade(alembic_config(url), "heads")
