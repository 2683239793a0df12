"""Integrations (SPEC §7): connections to providers (``connections``), their syncs per
record type and direction (``syncs``), runs and their per-record outcomes (``runs``), and
the engine that performs a run as a job (``engine``).

A connection belongs to an organization (and optionally one of its locations) and is
seen through the caller's ``Scope`` like any other resource. Its credential is sealed
and write-only: no view, change row, audit record, log line or error holds it. Every
change to a connection, its credential (that it changed) or a sync is an append-only
change row written in the same transaction as the change.
"""
