"""Alembic environment: runs migrations against the URL set by keyrack.storage.migrate."""

from alembic import context
from sqlalchemy import pool

from keyrack.storage.database import make_engine
from keyrack.storage.tables import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url is set by keyrack.storage.migrate.alembic_config"

engine = make_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
