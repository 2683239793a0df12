"""Keyrack's rules in plain Python: no web framework, database or cache imports."""
