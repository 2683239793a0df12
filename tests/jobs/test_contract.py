"""The queue's contract, run on SQLite and PostgreSQL with an injected clock (no sleeping).

Each test drives the statements a worker runs (claim, heartbeat, finish,
rescue) by hand, as two or more workers would interleave them.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from keyrack.domain.jobs import Backoff, Every, Priority, State, periodic_key
from keyrack.errors import Conflict, InvalidInput, NotFound
from keyrack.jobs import admin, enqueue, queue, wakeup
from keyrack.jobs.queue import JobView
from keyrack.jobs.schedules import Schedule, enqueue_due
from keyrack.storage.database import Database
from keyrack.storage.tables.jobs import Job
from keyrack.storage.tables.tenancy import Organization
from tests.conftest import MutableClock
from tests.jobs.conftest import KIND, LEASE, Add


def claim(
    db: Database,
    clock: MutableClock,
    worker: str = "w1",
    *,
    limit: int = 10,
    bulk_limit: int = 0,
    kinds: tuple[str, ...] = (KIND,),
) -> list[JobView]:
    return queue.claim(
        db,
        worker_id=worker,
        kinds=kinds,
        now=clock(),
        lease=LEASE,
        limit=limit,
        bulk_limit=bulk_limit,
    )


def job(db: Database, job_id: int) -> JobView:
    return admin.get_job(db, job_id)


def retry(db: Database, job_id: int, now: datetime) -> JobView:
    with db.transaction() as session:
        return admin.retry(session, job_id, now)


def cancel(db: Database, job_id: int, now: datetime) -> JobView:
    with db.transaction() as session:
        return admin.cancel(session, job_id, now)


def count_jobs(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


# -- enqueue, claim, succeed --------------------------------------------------------------


def test_a_job_is_claimed_by_one_worker_and_succeeds(
    db: Database, clock: MutableClock, add: Add
) -> None:
    added = add(payload={"delivery_id": 7})
    assert added.created and added.job.state is State.AVAILABLE and added.job.attempt == 0

    [taken] = claim(db, clock, "w1")
    assert (taken.id, taken.state, taken.attempt, taken.locked_by) == (
        added.job.id,
        State.RUNNING,
        1,
        "w1",
    )
    assert taken.payload == {"delivery_id": 7}
    assert taken.lease_expires_at == clock() + LEASE
    assert claim(db, clock, "w2") == []  # held: nobody else gets it

    clock.advance(timedelta(seconds=2))
    assert queue.succeed(db, taken.id, "w1", clock())
    done = job(db, taken.id)
    assert done.state is State.SUCCEEDED
    assert done.started_at == clock() - timedelta(seconds=2)
    assert done.finished_at == clock() and done.lease_expires_at is None
    assert claim(db, clock, "w2") == []


def test_a_job_waits_for_its_run_at(db: Database, clock: MutableClock, add: Add) -> None:
    later = add(run_at=clock() + timedelta(minutes=5)).job
    assert later.state is State.SCHEDULED
    clock.advance(timedelta(minutes=4, seconds=59))
    assert claim(db, clock) == []
    clock.advance(timedelta(seconds=1))
    assert [j.id for j in claim(db, clock)] == [later.id]


def test_enqueue_refuses_a_bad_kind_or_attempt_count(db: Database, add: Add) -> None:
    with pytest.raises(InvalidInput):
        add(kind="")
    with pytest.raises(InvalidInput):
        add(max_attempts=0)
    with pytest.raises(InvalidInput):
        add(unique_key="k" * 201)
    assert count_jobs(db) == 0


# -- unique keys ---------------------------------------------------------------------------


def test_a_unique_key_admits_one_queued_or_running_job(
    db: Database, clock: MutableClock, add: Add
) -> None:
    first = add(unique_key="sync:connection:4")
    again = add(unique_key="sync:connection:4", payload={"other": True})
    assert first.created and not again.created
    assert again.job.id == first.job.id and again.job.payload == {}

    [running] = claim(db, clock)
    while_running = add(unique_key="sync:connection:4")
    assert not while_running.created and while_running.job.state is State.RUNNING

    queue.succeed(db, running.id, "w1", clock())
    after = add(unique_key="sync:connection:4")
    assert after.created and after.job.id != first.job.id
    assert add(unique_key="sync:connection:5").created


def test_a_replacing_job_takes_a_waiting_ones_place_but_not_a_running_ones(
    db: Database, clock: MutableClock, add: Add
) -> None:
    waiting = add(unique_key="deliver:9", run_at=clock() + timedelta(minutes=10)).job
    replaced = add(unique_key="deliver:9", payload={"fresh": True}, replace=True)
    assert replaced.created and replaced.job.id != waiting.id
    assert (replaced.job.state, replaced.job.run_at) == (State.AVAILABLE, clock())
    gone = job(db, waiting.id)
    assert (gone.state, gone.last_error) == (State.CANCELED, "replaced by a newer job")

    [running] = claim(db, clock)
    while_running = add(unique_key="deliver:9", replace=True)
    assert not while_running.created and while_running.job.id == running.id
    assert job(db, running.id).state is State.RUNNING


def test_the_database_itself_refuses_a_second_active_job_per_unique_key(
    db: Database, clock: MutableClock, add: Add
) -> None:
    add(unique_key="export:clients")
    row = {
        "kind": KIND,
        "payload": {},
        "priority": 10,
        "state": "available",
        "attempt": 0,
        "max_attempts": 3,
        "run_at": clock(),
        "unique_key": "export:clients",
        "created_at": clock(),
    }
    with pytest.raises(IntegrityError), db.transaction() as session:
        session.execute(insert(Job).values(**row))
    with db.transaction() as session:  # a finished job does not hold its key
        session.execute(insert(Job).values(**{**row, "state": "succeeded"}))
    assert count_jobs(db) == 2


# -- order ---------------------------------------------------------------------------------


def test_jobs_run_by_priority_then_run_at_then_id(
    db: Database, clock: MutableClock, add: Add
) -> None:
    probe = add(priority=Priority.PROBE).job
    routine_late = add(priority=Priority.ROUTINE).job
    routine_early = add(priority=Priority.ROUTINE, run_at=clock() - timedelta(seconds=5)).job
    delivery = add(priority=Priority.DELIVERY).job
    taken = [claim(db, clock, limit=1)[0].id for _ in range(4)]
    assert taken == [delivery.id, routine_early.id, routine_late.id, probe.id]


def test_bulk_jobs_take_only_the_bulk_slots(db: Database, clock: MutableClock, add: Add) -> None:
    export = add(priority=Priority.BULK).job
    delivery = add(priority=Priority.DELIVERY).job
    assert [j.id for j in claim(db, clock, limit=5)] == [delivery.id]
    assert [j.id for j in claim(db, clock, limit=0, bulk_limit=1)] == [export.id]


def test_only_kinds_the_worker_handles_are_claimed(
    db: Database, clock: MutableClock, add: Add
) -> None:
    add(kind="unknown.kind")
    mine = add().job
    assert [j.id for j in claim(db, clock)] == [mine.id]
    assert claim(db, clock, kinds=()) == []


# -- retries -------------------------------------------------------------------------------


def test_a_failing_job_is_retried_with_backoff_then_ends_failed_with_its_error(
    db: Database, clock: MutableClock, add: Add
) -> None:
    backoff = Backoff(base=timedelta(seconds=10), cap=timedelta(seconds=25))
    added = add(max_attempts=3).job
    waits = []
    for attempt in (1, 2, 3):
        [taken] = claim(db, clock)
        assert taken.attempt == attempt
        delay = backoff.delay(attempt, draw=lambda: 1.0)  # the longest wait full jitter allows
        state = queue.fail(
            db, taken, "w1", clock(), f"ConnectError: attempt {attempt}", retry_in=delay
        )
        if attempt < 3:
            assert state is State.SCHEDULED
            waiting = job(db, added.id)
            assert waiting.run_at == clock() + delay and waiting.lease_expires_at is None
            waits.append(delay)
            clock.advance(delay - timedelta(seconds=1))
            assert claim(db, clock) == []
            clock.advance(timedelta(seconds=1))
    assert waits == [timedelta(seconds=10), timedelta(seconds=20)]
    assert state is State.FAILED
    failed = job(db, added.id)
    assert failed.state is State.FAILED and failed.attempt == 3
    assert failed.last_error == "ConnectError: attempt 3"
    assert failed.finished_at == clock()
    clock.advance(timedelta(days=1))
    assert claim(db, clock) == []


def test_a_stored_error_holds_no_secret_and_is_bounded(
    db: Database, clock: MutableClock, add: Add
) -> None:
    add()
    [taken] = claim(db, clock)
    error = (
        "SMTPAuthenticationError: smtp://mailer:hunter2@mail.test refused; "
        "key kr_live_AbCdEf0123456789abcdef0123456789xyz; secret whsec_s3cr3t-Value_1 " + "x" * 5000
    )
    queue.fail(db, taken, "w1", clock(), error, retry_in=None)
    stored = job(db, taken.id).last_error or ""
    assert "hunter2" not in stored and "AbCdEf0123" not in stored and "s3cr3t" not in stored
    assert "smtp://[redacted]@mail.test" in stored and "kr_live_[redacted]" in stored
    assert len(stored) == 2000


def test_backoff_has_full_jitter_under_a_doubling_capped_ceiling() -> None:
    backoff = Backoff(base=timedelta(seconds=10), cap=timedelta(minutes=1))
    assert [backoff.ceiling(n).total_seconds() for n in (1, 2, 3, 4, 5, 50)] == [
        10,
        20,
        40,
        60,
        60,
        60,
    ]
    assert backoff.delay(3, draw=lambda: 0.0) == timedelta(0)
    assert backoff.delay(3, draw=lambda: 0.5) == timedelta(seconds=20)
    assert all(timedelta(0) <= backoff.delay(2) <= timedelta(seconds=20) for _ in range(200))


def test_a_snoozed_job_runs_later_without_counting_the_attempt(
    db: Database, clock: MutableClock, add: Add
) -> None:
    added = add(max_attempts=1).job
    [taken] = claim(db, clock)
    assert queue.snooze(db, taken.id, "w1", clock(), timedelta(seconds=30), "429: Retry-After 30")
    snoozed = job(db, added.id)
    assert (snoozed.state, snoozed.attempt, snoozed.last_error) == (
        State.SCHEDULED,
        0,
        "429: Retry-After 30",
    )
    clock.advance(timedelta(seconds=30))
    [again] = claim(db, clock)
    assert again.attempt == 1  # its only attempt is still there
    assert queue.succeed(db, again.id, "w1", clock())


# -- leases --------------------------------------------------------------------------------


def test_a_job_whose_worker_died_runs_again_after_its_lease_and_not_before(
    db: Database, clock: MutableClock, add: Add
) -> None:
    added = add().job
    [taken] = claim(db, clock, "doomed")  # ... and the worker is killed here
    clock.advance(LEASE - timedelta(milliseconds=1))
    assert queue.rescue(db, clock()) == 0
    assert claim(db, clock, "w2") == []

    clock.advance(timedelta(milliseconds=1))
    assert queue.rescue(db, clock()) == 1
    [again] = claim(db, clock, "w2")
    assert (again.id, again.attempt, again.locked_by) == (added.id, 2, "w2")
    assert "doomed" in (again.last_error or "")

    # the first worker, had it only stalled, can no longer finish or renew the job
    assert not queue.succeed(db, taken.id, "doomed", clock())
    assert queue.heartbeat(db, "doomed", [taken.id], clock(), LEASE) == set()
    assert queue.succeed(db, again.id, "w2", clock())
    assert job(db, added.id).state is State.SUCCEEDED


def test_a_heartbeat_keeps_a_running_job_from_being_taken(
    db: Database, clock: MutableClock, add: Add
) -> None:
    add()
    [taken] = claim(db, clock, "w1")
    for _ in range(5):
        clock.advance(LEASE / 3)
        assert queue.heartbeat(db, "w1", [taken.id], clock(), LEASE) == {taken.id}
    clock.advance(LEASE - timedelta(seconds=1))
    queue.rescue(db, clock())
    assert claim(db, clock, "w2") == []
    assert job(db, taken.id).lease_expires_at == clock() + timedelta(seconds=1)


def test_a_lease_running_out_on_the_last_attempt_fails_the_job(
    db: Database, clock: MutableClock, add: Add
) -> None:
    added = add(max_attempts=1).job
    claim(db, clock, "doomed")
    clock.advance(LEASE)
    assert queue.rescue(db, clock()) == 1
    failed = job(db, added.id)
    assert failed.state is State.FAILED and "lease" in (failed.last_error or "")
    assert claim(db, clock, "w2") == []


def test_a_stopping_worker_hands_its_jobs_back_at_once(
    db: Database, clock: MutableClock, add: Add
) -> None:
    first, second = add().job, add().job
    claim(db, clock, "stopping")
    assert queue.release(db, "stopping", [first.id, second.id], clock()) == 2
    back = job(db, first.id)
    assert (back.state, back.attempt, back.locked_by, back.lease_expires_at) == (
        State.AVAILABLE,
        0,
        None,
        None,
    )
    assert {j.id for j in claim(db, clock, "w2")} == {first.id, second.id}  # no lease to wait for


def test_progress_is_saved_while_the_job_is_held(
    db: Database, clock: MutableClock, add: Add
) -> None:
    add()
    [taken] = claim(db, clock, "w1")
    assert queue.report_progress(db, taken.id, "w1", {"rows_done": 500, "rows_total": 2000})
    assert job(db, taken.id).progress == {"rows_done": 500, "rows_total": 2000}
    assert not queue.report_progress(db, taken.id, "someone-else", {"rows_done": 1})


# -- operators: cancel and retry -----------------------------------------------------------


def test_a_canceled_waiting_job_never_runs(db: Database, clock: MutableClock, add: Add) -> None:
    added = add().job
    canceled = cancel(db, added.id, clock())
    assert canceled.state is State.CANCELED and canceled.finished_at == clock()
    assert claim(db, clock) == []
    with pytest.raises(Conflict):
        cancel(db, added.id, clock())
    with pytest.raises(NotFound):
        cancel(db, 999_999, clock())


def test_a_canceled_running_job_is_no_longer_its_workers(
    db: Database, clock: MutableClock, add: Add
) -> None:
    add()
    [taken] = claim(db, clock, "w1")
    cancel(db, taken.id, clock())
    assert queue.heartbeat(db, "w1", [taken.id], clock(), LEASE) == set()  # the worker is told
    assert not queue.succeed(db, taken.id, "w1", clock())
    assert job(db, taken.id).state is State.CANCELED


def test_retrying_a_failed_job_gives_it_one_more_attempt(
    db: Database, clock: MutableClock, add: Add
) -> None:
    added = add(max_attempts=1).job
    [taken] = claim(db, clock)
    queue.fail(db, taken, "w1", clock(), "boom", retry_in=timedelta(seconds=1))
    assert job(db, added.id).state is State.FAILED

    retried = retry(db, added.id, clock())
    assert (retried.state, retried.max_attempts, retried.finished_at) == (State.AVAILABLE, 2, None)
    [again] = claim(db, clock)
    assert again.attempt == 2
    queue.succeed(db, again.id, "w1", clock())
    with pytest.raises(Conflict):
        retry(db, added.id, clock())


def test_a_scheduled_job_retried_runs_now(db: Database, clock: MutableClock, add: Add) -> None:
    added = add(run_at=clock() + timedelta(hours=1)).job
    assert retry(db, added.id, clock()).run_at == clock()
    assert [j.id for j in claim(db, clock)] == [added.id]
    with pytest.raises(Conflict):  # running
        retry(db, added.id, clock())


def test_a_failed_job_is_not_retried_while_another_holds_its_unique_key(
    db: Database, clock: MutableClock, add: Add
) -> None:
    old = add(unique_key="probe:connection:1", max_attempts=1).job
    [taken] = claim(db, clock)
    queue.fail(db, taken, "w1", clock(), "boom", retry_in=None)
    add(unique_key="probe:connection:1")
    with pytest.raises(Conflict, match="unique key"):
        retry(db, old.id, clock())
    assert job(db, old.id).state is State.FAILED


# -- periodic ------------------------------------------------------------------------------


def test_a_periodic_job_is_enqueued_once_per_period_by_racing_workers(
    database_url: str, db: Database, clock: MutableClock
) -> None:
    schedule = Schedule("sweep", KIND, Every(timedelta(minutes=1)))
    racers = [Database(database_url) for _ in range(4)]
    start = threading.Barrier(len(racers))
    results: list[JobView | None] = []

    def race(database: Database) -> None:
        start.wait()
        results.append(enqueue_due(database, schedule, clock()))

    try:
        for period in range(3):
            results.clear()
            threads = [threading.Thread(target=race, args=(r,)) for r in racers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            [enqueued] = [r for r in results if r is not None]
            assert enqueued.unique_key == periodic_key(
                "sweep", Every(timedelta(minutes=1)).start(clock())
            )
            assert enqueued.run_at <= clock() and count_jobs(db) == period + 1
            # the job runs and finishes quickly; later looks within the period add nothing
            [taken] = claim(db, clock)
            queue.succeed(db, taken.id, "w1", clock())
            clock.advance(timedelta(seconds=30))
            assert enqueue_due(db, schedule, clock()) is None
            clock.advance(timedelta(seconds=30))
    finally:
        for racer in racers:
            racer.dispose()


def test_a_daily_period_starts_at_its_time_of_day() -> None:
    from datetime import UTC, datetime, time

    daily = Every.daily(time(3, 0))
    assert daily.start(datetime(2026, 1, 5, 2, 59, tzinfo=UTC)) == datetime(
        2026, 1, 4, 3, 0, tzinfo=UTC
    )
    assert daily.start(datetime(2026, 1, 5, 3, 0, tzinfo=UTC)) == datetime(
        2026, 1, 5, 3, 0, tzinfo=UTC
    )
    assert daily.next_start(datetime(2026, 1, 5, 3, 0, tzinfo=UTC)) == datetime(
        2026, 1, 6, 3, 0, tzinfo=UTC
    )


# -- transactional enqueue -----------------------------------------------------------------


def _org(clock: MutableClock, slug: str) -> Organization:
    return Organization(
        slug=slug,
        name=slug.title(),
        kind="customer",
        api_enabled=True,
        plan_rate_per_second=5,
        plan_concurrency=1,
        created_at=clock(),
    )


def test_a_job_commits_with_the_change_that_asked_for_it_or_not_at_all(
    db: Database, clock: MutableClock
) -> None:
    woken = threading.Event()
    wakeup.subscribe(db.engine.url, woken)
    try:
        with pytest.raises(RuntimeError), db.transaction() as session:
            session.add(_org(clock, "rolled"))
            enqueue(session, KIND, {"org": "rolled"}, now=clock())
            raise RuntimeError("the business write failed after the enqueue")
        assert count_jobs(db) == 0 and not woken.is_set()
        with db.session() as session:
            assert session.scalar(select(func.count()).select_from(Organization)) == 0

        with db.transaction() as session:
            session.add(_org(clock, "kept"))
            enqueue(session, KIND, {"org": "kept"}, now=clock())
            assert not woken.is_set()  # not before the commit
        assert woken.is_set() and count_jobs(db) == 1
    finally:
        wakeup.unsubscribe(db.engine.url, woken)


# -- seeing the queue ----------------------------------------------------------------------


def test_jobs_are_listed_newest_first_in_pages_and_filtered(
    db: Database, clock: MutableClock, add: Add
) -> None:
    ids = [add(kind="a" if n % 2 else "b").job.id for n in range(7)]
    first = admin.list_jobs(db, limit=3)
    second = admin.list_jobs(db, limit=3, cursor=first.next_cursor)
    third = admin.list_jobs(db, limit=3, cursor=second.next_cursor)
    assert [j.id for j in first.data + second.data + third.data] == ids[::-1]
    assert third.next_cursor is None
    assert [j.id for j in admin.list_jobs(db, kind="a").data] == [ids[5], ids[3], ids[1]]
    assert admin.list_jobs(db, state=State.RUNNING).data == []
    with pytest.raises(InvalidInput):
        admin.parse_state("stuck")
    with pytest.raises(InvalidInput):
        admin.list_jobs(db, limit=501)


def test_stats_count_states_and_show_the_oldest_waiting_job_and_failures(
    db: Database, clock: MutableClock, add: Add
) -> None:
    oldest = add(kind="old", run_at=clock() - timedelta(minutes=2)).job
    add(kind=KIND, max_attempts=1)
    add(run_at=clock() + timedelta(hours=1))
    [taken] = claim(db, clock, kinds=(KIND,), limit=1)
    queue.fail(db, taken, "w1", clock(), "HTTP 500", retry_in=None)
    stats = admin.stats(db, clock())
    assert stats.counts == {
        "available": 1,
        "scheduled": 1,
        "running": 0,
        "succeeded": 0,
        "failed": 1,
        "canceled": 0,
    }
    assert stats.oldest_waiting is not None and stats.oldest_waiting.id == oldest.id
    assert stats.oldest_waiting_seconds == 120
    assert [(j.id, j.last_error) for j in stats.recent_failures] == [(taken.id, "HTTP 500")]


def test_finished_jobs_are_pruned_after_the_retention(
    db: Database, clock: MutableClock, add: Add
) -> None:
    done, waiting = add().job, add(run_at=clock() + timedelta(days=30)).job
    claim(db, clock, limit=1)
    queue.succeed(db, done.id, "w1", clock())
    assert queue.prune(db, clock()) == 0
    clock.advance(timedelta(days=15))
    assert queue.prune(db, clock() - timedelta(days=14), batch=1) == 1
    assert [j.id for j in admin.list_jobs(db).data] == [waiting.id]
