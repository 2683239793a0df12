"""Contracts: what a client pays, once and recurring. Amounts are integer cents."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select

from keyrack.domain import crm
from keyrack.domain.crm import UNSET, Interval, RecordType, Unset
from keyrack.domain.ids import new_ref
from keyrack.domain.tenancy import Scope, validate_name
from keyrack.errors import InvalidInput
from keyrack.services import audit
from keyrack.services.context import Actor, Context
from keyrack.services.crm import records
from keyrack.services.crm.records import ExternalIdChanges
from keyrack.services.crm.scoping import client_in_scope, in_scope, of_client, one_in_scope
from keyrack.storage.paging import Page
from keyrack.storage.tables.crm import Contract

RECORD_TYPE = RecordType.CONTRACTS

_PER_YEAR = {Interval.MONTH: 12, Interval.QUARTER: 4, Interval.YEAR: 1}


@dataclass(frozen=True, slots=True)
class ContractView:
    ref: str
    client_ref: str
    name: str
    amount_cents: int
    currency: str
    start_date: date
    end_date: date | None
    recurring_amount_cents: int | None
    recurring_interval: Interval | None
    external_ids: Mapping[str, str]
    created_at: datetime
    updated_at: datetime

    @property
    def annual_recurring_cents(self) -> int | None:
        """The recurring amount per year (12 months, 4 quarters or 1 year of it)."""
        if self.recurring_amount_cents is None or self.recurring_interval is None:
            return None
        return self.recurring_amount_cents * _PER_YEAR[self.recurring_interval]

    @classmethod
    def of(cls, row: Contract, external_ids: Mapping[str, str]) -> ContractView:
        return cls(
            ref=row.ref,
            client_ref=row.client.ref,
            name=row.name,
            amount_cents=row.amount_cents,
            currency=row.currency,
            start_date=row.start_date,
            end_date=row.end_date,
            recurring_amount_cents=row.recurring_amount_cents,
            recurring_interval=Interval(row.recurring_interval) if row.recurring_interval else None,
            external_ids=dict(external_ids),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "client_ref": self.client_ref,
            "name": self.name,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "start_date": self.start_date.isoformat(),
            "end_date": self.end_date.isoformat() if self.end_date else None,
            "recurring_amount_cents": self.recurring_amount_cents,
            "recurring_interval": self.recurring_interval,
            "external_ids": dict(self.external_ids),
        }


def _check(row: Contract) -> None:
    crm.check_contract_dates(row.start_date, row.end_date)
    crm.check_recurring(
        row.recurring_amount_cents,
        Interval(row.recurring_interval) if row.recurring_interval else None,
    )


def validated(
    *,
    name: Any = UNSET,
    amount_cents: Any = UNSET,
    currency: Any = UNSET,
    start_date: Any = UNSET,
    end_date: Any = UNSET,
    recurring_amount_cents: Any = UNSET,
    recurring_interval: Any = UNSET,
) -> dict[str, Any]:
    """The fields given, validated as ``create_contract`` and ``update_contract`` do (a bulk
    upload's rows); ``check`` then judges the contract they make."""
    checks: dict[str, Callable[[Any], Any]] = {
        "name": validate_name,
        "amount_cents": lambda v: crm.validate_cents(v, "amount_cents"),
        "currency": crm.validate_currency,
        "start_date": lambda v: v,
        "end_date": lambda v: v,
        "recurring_amount_cents": lambda v: crm.optional_cents(v, "recurring_amount_cents"),
        "recurring_interval": _interval,
    }
    given = {
        "name": name,
        "amount_cents": amount_cents,
        "currency": currency,
        "start_date": start_date,
        "end_date": end_date,
        "recurring_amount_cents": recurring_amount_cents,
        "recurring_interval": recurring_interval,
    }
    return {k: checks[k](v) for k, v in given.items() if not isinstance(v, Unset)}


def _interval(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return Interval(value).value
    except ValueError:
        known = ", ".join(i.value for i in Interval)
        raise InvalidInput(f"recurring_interval: {value!r} is not one of {known}") from None


check = _check
"""A contract's fields agree (dates in order, recurring amount with its interval)."""


def _contract(session: Any, scope: Scope, ref: str) -> Contract:
    row: Contract = one_in_scope(session, Contract, "ctr", "contract", scope, ref)
    return row


def create_contract(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    *,
    client_ref: str,
    name: str,
    amount_cents: int,
    currency: str,
    start_date: date,
    end_date: date | None = None,
    recurring_amount_cents: int | None = None,
    recurring_interval: Interval | None = None,
    external_ids: ExternalIdChanges | None = None,
) -> ContractView:
    with ctx.db.transaction() as session:
        at = records.stamp(session, scope.org_id, ctx.clock())
        client = client_in_scope(session, scope, client_ref)
        row = Contract(
            ref=new_ref("ctr"),
            org_id=scope.org_id,
            client=client,
            name=validate_name(name),
            amount_cents=crm.validate_cents(amount_cents, "amount_cents"),
            currency=crm.validate_currency(currency),
            start_date=start_date,
            end_date=end_date,
            recurring_amount_cents=crm.optional_cents(
                recurring_amount_cents, "recurring_amount_cents"
            ),
            recurring_interval=Interval(recurring_interval).value if recurring_interval else None,
        )
        _check(row)
        ids = records.created(
            session, scope, RECORD_TYPE, row, at=at, external_id_changes=external_ids
        )
        return ContractView.of(row, ids)


def list_contracts(
    ctx: Context,
    scope: Scope,
    *,
    client_ref: str | None = None,
    external_id: str | None = None,
    updated_since: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[ContractView]:
    """Newest first, or by change from ``updated_since`` (``records.page``); ``client_ref``
    narrows to one client (404 if out of scope)."""
    with ctx.db.session() as session:
        stmt = of_client(
            session, in_scope(select(Contract), Contract, scope), Contract, scope, client_ref
        )
        return records.page(
            session,
            stmt,
            RECORD_TYPE,
            scope,
            ContractView.of,
            external_id=external_id,
            updated_since=updated_since,
            limit=limit,
            cursor=cursor,
        )


def get_contract(ctx: Context, scope: Scope, ref: str) -> ContractView:
    with ctx.db.session() as session:
        return records.shown(session, RECORD_TYPE, _contract(session, scope, ref), ContractView.of)


def update_contract(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    ref: str,
    *,
    name: str | Unset = UNSET,
    amount_cents: int | Unset = UNSET,
    currency: str | Unset = UNSET,
    start_date: date | Unset = UNSET,
    end_date: date | Unset | None = UNSET,
    recurring_amount_cents: int | Unset | None = UNSET,
    recurring_interval: Interval | Unset | None = UNSET,
    external_ids: ExternalIdChanges | Unset = UNSET,
) -> ContractView:
    """Change the given fields; the result must still be a consistent contract."""
    with ctx.db.transaction() as session:
        at = records.stamp(session, scope.org_id, ctx.clock())
        row = _contract(session, scope, ref)
        before = records.state(row)
        if not isinstance(name, Unset):
            row.name = validate_name(name)
        if not isinstance(amount_cents, Unset):
            row.amount_cents = crm.validate_cents(amount_cents, "amount_cents")
        if not isinstance(currency, Unset):
            row.currency = crm.validate_currency(currency)
        if not isinstance(start_date, Unset):
            row.start_date = start_date
        if not isinstance(end_date, Unset):
            row.end_date = end_date
        if not isinstance(recurring_amount_cents, Unset):
            row.recurring_amount_cents = crm.optional_cents(
                recurring_amount_cents, "recurring_amount_cents"
            )
        if not isinstance(recurring_interval, Unset):
            row.recurring_interval = (
                Interval(recurring_interval).value if recurring_interval else None
            )
        _check(row)
        ids = records.updated(
            session, scope, RECORD_TYPE, row, before=before, at=at, external_id_changes=external_ids
        )
        return ContractView.of(row, ids)


def delete_contract(ctx: Context, actor: Actor, scope: Scope, ref: str) -> ContractView:
    with ctx.db.transaction() as session:
        row = _contract(session, scope, ref)
        view = records.shown(session, RECORD_TYPE, row, ContractView.of)
        records.deleted(session, RECORD_TYPE, row)
        audit.record(
            session,
            actor,
            "contract.deleted",
            now=ctx.clock(),
            org_id=scope.org_id,
            target_type="contract",
            target_ref=ref,
            before=view.snapshot(),
        )
    return view
