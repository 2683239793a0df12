"""PostgreSQL transactions are READ COMMITTED whatever the server's default: the change
clock (``records.stamp``) queues one organization's writers on its row, and the writer
let through after a wait must see, not be refused, what the one before it committed."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest
from sqlalchemy import text

from keyrack.services.context import Context
from keyrack.services.crm import records
from keyrack.storage.database import Database
from tests.conftest import Seeded

STRICT = "%20-cdefault_transaction_isolation%3Dserializable"  # appended to options=


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_writers_queue_on_the_clock_where_the_server_defaults_to_serializable(
    ctx: Context, seeded: Seeded, database_url: str
) -> None:
    strict = Database(database_url + STRICT)
    try:
        with strict.transaction() as session:
            assert session.scalar(text("SHOW transaction_isolation")) == "read committed"
        holding, release = threading.Event(), threading.Event()
        stamps: list[datetime] = []

        def first() -> None:
            with strict.transaction() as session:
                stamps.append(records.stamp(session, seeded.org_id, ctx.clock()))
                holding.set()
                release.wait(10)

        def second() -> None:
            with strict.transaction() as session:
                stamps.append(records.stamp(session, seeded.org_id, ctx.clock()))

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        threads[0].start()
        assert holding.wait(10)
        threads[1].start()
        time.sleep(0.2)  # the second waits on the clock's row
        assert len(stamps) == 1
        release.set()
        for thread in threads:
            thread.join(10)
        assert len(stamps) == 2 and stamps[0] < stamps[1]
    finally:
        strict.dispose()
