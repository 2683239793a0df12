"""SQLAlchemy tables. Importing this package registers every table on ``Base.metadata``."""

from keyrack.storage.tables import (
    audit,
    console,
    crm,
    exports,
    integration_issues,
    integrations,
    jobs,
    key_usage,
    keys,
    notices,
    requests,
    retired,
    tenancy,
    webhooks,
)
from keyrack.storage.tables.base import Base

__all__ = [
    "Base",
    "audit",
    "console",
    "crm",
    "exports",
    "integration_issues",
    "integrations",
    "jobs",
    "key_usage",
    "keys",
    "notices",
    "requests",
    "retired",
    "tenancy",
    "webhooks",
]
