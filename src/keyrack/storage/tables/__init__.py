"""SQLAlchemy tables. Importing this package registers every table on ``Base.metadata``."""

from keyrack.storage.tables import audit, keys, tenancy
from keyrack.storage.tables.base import Base

__all__ = ["Base", "audit", "keys", "tenancy"]
