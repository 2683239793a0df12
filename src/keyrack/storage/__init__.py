"""Persistence: SQLAlchemy engine and sessions, tables, and migrations."""
