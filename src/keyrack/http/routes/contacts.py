"""Contacts (``contacts:read`` / ``contacts:write``) of the caller's clients."""

from __future__ import annotations

from keyrack.http.routes.client_records import Service, client_records
from keyrack.http.schemas.crm import ContactCreate, ContactOut, ContactUpdate
from keyrack.services.crm import contacts

router = client_records(
    "contact",
    "contacts",
    Service(
        contacts.list_contacts,
        contacts.create_contact,
        contacts.get_contact,
        contacts.update_contact,
        contacts.delete_contact,
    ),
    create_body=ContactCreate,
    update_body=ContactUpdate,
    out=ContactOut,
)
