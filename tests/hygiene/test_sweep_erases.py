"""The sweep erases sealed secrets whose time is up, even if nobody comes back for them."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from keyrack.domain.tenancy import Role
from keyrack.services import jobs, sessions, tenancy
from keyrack.storage.tables.console import ConsoleReveal
from tests.conftest import OPERATOR, MutableClock, Seeded


def test_sweep_erases_console_reveals_once_their_window_closes(
    seeded: Seeded, clock: MutableClock
) -> None:
    created = tenancy.create_user(
        seeded.ctx, OPERATOR, org_slug="acme", email="owner@acme.test", role=Role.OWNER
    )
    assert created.password
    signed_in = sessions.sign_in(seeded.ctx, "owner@acme.test", created.password, "127.0.0.1")
    view, secret = seeded.new_key(name="Fresh")
    sessions.keep_for_reveal(seeded.ctx, signed_in, view.ref, secret)

    def held() -> int:
        with seeded.ctx.db.session() as session:
            return session.scalar(select(func.count()).select_from(ConsoleReveal)) or 0

    assert jobs.sweep(seeded.ctx).reveals_erased == 0 and held() == 1
    clock.advance(timedelta(seconds=seeded.ctx.settings.reveal_window_seconds))
    assert jobs.sweep(seeded.ctx).reveals_erased == 1
    assert held() == 0
