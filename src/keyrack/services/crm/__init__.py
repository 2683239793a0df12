"""CRM use cases behind the public API: clients, contacts, contracts, usage, pulse.

Every function takes the caller's ``Scope`` (an organization, or one location
of it). Anything outside the scope is ``NotFound`` — never a refusal that would
confirm it exists. CRM data writes are not audited one by one (the audit trail
is for keys and settings); deletions are, with the record's snapshot.
"""
