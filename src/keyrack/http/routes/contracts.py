"""Contracts (``contracts:read`` / ``contracts:write``) of the caller's clients."""

from __future__ import annotations

from keyrack.http.routes.client_records import Service, client_records
from keyrack.http.schemas.crm import ContractCreate, ContractOut, ContractUpdate
from keyrack.services.crm import contracts

router = client_records(
    "contract",
    "contracts",
    Service(
        contracts.list_contracts,
        contracts.create_contract,
        contracts.get_contract,
        contracts.update_contract,
        contracts.delete_contract,
    ),
    create_body=ContractCreate,
    update_body=ContractUpdate,
    out=ContractOut,
)
