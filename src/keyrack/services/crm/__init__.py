"""CRM use cases behind the public API: clients, contacts, contracts, engagements, usage,
pulse. What the four kinds of record share (their change clock, external ids and lists
by change) is ``records``.

Every function takes the caller's ``Scope`` (an organization, or one location
of it). Anything outside the scope is ``NotFound`` — never a refusal that would
confirm it exists; but for an external id held outside the scope, whose claim is a
``Conflict`` that names nothing of its holder (``external_ids``). CRM data writes are not audited one by one (the audit trail
is for keys and settings); deletions are, with the record's snapshot.
"""
