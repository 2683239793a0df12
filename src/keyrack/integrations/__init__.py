"""Integrations with other systems (SPEC §7).

``connector`` is the contract the sync engine knows; ``connectors`` holds one module per
provider and the registry of them. ``session``, ``oauth``, ``batching``, ``watermarks``
and ``redaction`` are what the connectors share.
"""
