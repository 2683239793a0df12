"""Console sign-in: server-side sessions, sign-in throttling, and the reveal window.

The browser holds a random session token in an HttpOnly cookie; the database
holds only its SHA-256 digest. A just-issued key secret is kept for the
session that issued it, sealed with AES-GCM, until the reveal window ends.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, case, delete, func, select, update
from sqlalchemy.orm import Session

from keyrack.domain import passwords
from keyrack.domain.sealing import Sealer, SealError
from keyrack.domain.tenancy import UserKind
from keyrack.errors import AuthenticationFailed, InvalidInput, NotFound, Throttled
from keyrack.services import audit, tenancy
from keyrack.services.context import Actor, Context
from keyrack.storage.database import insert_for
from keyrack.storage.tables.console import ConsoleReveal, ConsoleSession, ConsoleSignInCount
from keyrack.storage.tables.tenancy import User

SESSION_LIFETIME = timedelta(hours=12)
IDLE_TIMEOUT = timedelta(hours=2)
TOUCH_EVERY = timedelta(minutes=1)
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES = 5
"""Failures allowed for one email from one address within the window."""
MAX_FAILURES_PER_EMAIL = 20
"""...for one email from anywhere (guessing one account from many addresses)."""
MAX_FAILURES_PER_ADDRESS = 50
"""...from one address for any email (one password tried on many accounts)."""
REVEAL_PURPOSE = "console-reveal"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _subjects(email: str, ip: str | None) -> list[tuple[str, int, bool]]:
    """The throttling subjects of a sign-in attempt: their digest, their limit, and whether a
    successful sign-in clears them (the account's do; the address keeps its count). Sorted,
    so concurrent attempts lock shared subjects in one order and never deadlock."""
    email = email.strip().lower()
    return sorted(
        [
            (_digest(f"{email}|{ip or '-'}"), MAX_FAILURES, True),
            (_digest(f"{email}|*"), MAX_FAILURES_PER_EMAIL, True),
            (_digest(f"*|{ip or '-'}"), MAX_FAILURES_PER_ADDRESS, False),
        ]
    )


def _count_attempt(session: Session, subject: str, now: datetime) -> tuple[int, datetime]:
    """Count one attempt of ``subject`` and return its count and window start, in one
    ``INSERT … ON CONFLICT DO UPDATE … RETURNING``: the row lock makes concurrent
    attempts count one after another, so none decides on a stale count."""
    count = ConsoleSignInCount
    expired = count.window_started_at <= now - FAILURE_WINDOW
    stmt = (
        insert_for(session)(count)
        .values(subject_digest=subject, attempts=1, window_started_at=now)
        .on_conflict_do_update(
            index_elements=[count.subject_digest],
            set_={
                "attempts": case((expired, 1), else_=count.attempts + 1),
                "window_started_at": case((expired, now), else_=count.window_started_at),
            },
        )
        .returning(count.attempts, count.window_started_at)
    )
    attempts, started = session.execute(stmt).one()
    return int(attempts), started


def _admit(ctx: Context, subjects: list[tuple[str, int, bool]], now: datetime) -> None:
    """Count this attempt against every subject before the password is checked, or refuse it
    (``Throttled``, nothing counted) when a subject is over its limit.

    Counting first and deciding on the count just taken is one atomic step per subject: of
    any number of simultaneous guesses, no more than the limit get to try a password.
    """
    with ctx.db.transaction() as session:
        for subject, limit, _ in subjects:
            attempts, started = _count_attempt(session, subject, now)
            if attempts > limit:  # raising rolls every count of this attempt back
                retry = started + FAILURE_WINDOW - now
                raise Throttled(
                    "too many failed sign-in attempts; try again later",
                    retry_after=max(1.0, retry.total_seconds()),
                )


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A user in a live console session. ``token`` is set only right after sign-in."""

    session_id: int
    csrf_token: str
    user: User
    token: str | None = None

    def actor(self, ip: str | None) -> Actor:
        return tenancy.actor_for_user(self.user, ip)


def sign_in(ctx: Context, email: str, password: str, ip: str | None) -> SignedIn:
    """Check the credentials and open a session, refusing after repeated failures.

    Within 15 minutes of the first of them, five attempts for one email from one
    address, twenty for one email from anywhere, or fifty from one address for any
    emails refuse further attempts (429) until that window ends. Each attempt is
    counted before its password is checked (``_admit``), so attempts sent at once are
    throttled like attempts sent one by one; a successful sign-in clears the account's
    counts and takes its own attempt off the address's. (The per-email limit lets
    someone lock an account out for a while: the price of stopping guesses spread over
    many addresses.)
    """
    now = ctx.clock()
    subjects = _subjects(email, ip)
    _admit(ctx, subjects, now)
    user = tenancy.authenticate(ctx, email, password)
    if user is None:
        raise AuthenticationFailed("wrong email or password", code="unauthenticated")
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(
        token_digest=_digest(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        last_seen_at=now,
        expires_at=now + SESSION_LIFETIME,
    )
    count = ConsoleSignInCount
    with ctx.db.transaction() as session:
        session.execute(
            delete(count).where(
                count.subject_digest.in_([digest for digest, _, clears in subjects if clears])
                | (count.window_started_at <= now - FAILURE_WINDOW)
            )
        )
        session.execute(
            update(count)
            .where(
                count.subject_digest.in_([digest for digest, _, clears in subjects if not clears]),
                count.attempts > 0,
            )
            .values(attempts=count.attempts - 1)
        )
        session.execute(delete(ConsoleReveal).where(ConsoleReveal.expires_at <= now))
        session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
        session.add(row)
        session.flush()
        audit.record(
            session,
            tenancy.actor_for_user(user, ip),
            "console.signed_in",
            now=now,
            org_id=user.org_id,
            target_type="user",
            target_ref=user.email,
        )
    return SignedIn(row.id, row.csrf_token, user, token)


def resolve(ctx: Context, token: str | None) -> SignedIn | None:
    """The live session for a cookie token, or None (unknown, expired or idle, user inactive)."""
    if not token:
        return None
    now = ctx.clock()
    with ctx.db.session() as session:
        found = session.execute(
            select(ConsoleSession, User)
            .join(User, ConsoleSession.user_id == User.id)
            .where(ConsoleSession.token_digest == _digest(token))
        ).first()
    if found is None:
        return None
    row, user = found
    if not user.active or now >= row.expires_at or now - row.last_seen_at >= IDLE_TIMEOUT:
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        with ctx.db.transaction() as session:
            session.execute(
                update(ConsoleSession).where(ConsoleSession.id == row.id).values(last_seen_at=now)
            )
    return SignedIn(row.id, row.csrf_token, user)


def sign_out(ctx: Context, current: SignedIn, ip: str | None) -> None:
    """End the session and erase anything it was still allowed to reveal."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        _end_sessions(session, ConsoleSession.id == current.session_id)
        audit.record(
            session,
            current.actor(ip),
            "console.signed_out",
            now=now,
            org_id=current.user.org_id,
            target_type="user",
            target_ref=current.user.email,
        )


def _end_sessions(session: Session, *which: ColumnElement[bool]) -> None:
    """Delete the sessions matching ``which``, and what they were still allowed to reveal."""
    ended = select(ConsoleSession.id).where(*which)
    session.execute(delete(ConsoleReveal).where(ConsoleReveal.session_id.in_(ended)))
    session.execute(delete(ConsoleSession).where(*which))


def change_password(ctx: Context, current: SignedIn, old: str, new: str, ip: str | None) -> None:
    """Replace the signed-in user's password; every other session of theirs ends.

    The current password is asked for again, so a session left open is not enough to
    take the account over. A password Keyrack issued is void from then on, and the
    account is no longer held to the password page (audited with ``issued: true``).
    """
    passwords.check_length(new)
    if new == old:
        raise InvalidInput("the new password must differ from the current one")
    now = ctx.clock()
    with ctx.db.transaction() as session:
        user = session.get(User, current.user.id, with_for_update=True)
        if user is None or not passwords.verify_password(user.password_hash, old):
            raise AuthenticationFailed("the current password is wrong", code="unauthenticated")
        issued = user.password_must_change
        user.password_hash = passwords.hash_password(new)
        user.password_must_change = False
        _end_sessions(
            session, ConsoleSession.user_id == user.id, ConsoleSession.id != current.session_id
        )
        audit.record(
            session,
            current.actor(ip),
            "user.password_changed",
            now=now,
            org_id=user.org_id,
            target_type="user",
            target_ref=user.email,
            after={"issued": issued},
        )


def reset_password(ctx: Context, actor: Actor, email: str) -> str:
    """Issue a new password to a person (it must be changed at the next sign-in), and end
    their sessions. Returns it, once."""
    password = passwords.generate_password()
    now = ctx.clock()
    with ctx.db.transaction() as session:
        user = session.scalar(
            select(User).where(User.email == email.strip().lower()).with_for_update()
        )
        if user is None or user.kind != UserKind.HUMAN.value:
            raise NotFound(f"no person with email {email!r} (service users have no password)")
        user.password_hash = passwords.hash_password(password)
        user.password_must_change = True
        _end_sessions(session, ConsoleSession.user_id == user.id)
        audit.record(
            session,
            actor,
            "user.password_reset",
            now=now,
            org_id=user.org_id,
            target_type="user",
            target_ref=user.email,
        )
    return password


def _sealer(ctx: Context) -> Sealer:
    return Sealer(ctx.settings.secret_key, REVEAL_PURPOSE)


def keep_for_reveal(ctx: Context, current: SignedIn, ref: str, secret: str) -> None:
    """Keep ``secret`` (sealed) for this session until the reveal window ends."""
    window = timedelta(seconds=ctx.settings.reveal_window_seconds)
    if not window:
        return
    with ctx.db.transaction() as session:
        session.execute(
            delete(ConsoleReveal).where(
                ConsoleReveal.session_id == current.session_id, ConsoleReveal.key_ref == ref
            )
        )
        session.add(
            ConsoleReveal(
                session_id=current.session_id,
                key_ref=ref,
                sealed_secret=_sealer(ctx).seal(secret),
                expires_at=ctx.clock() + window,
            )
        )


def forget_reveal(ctx: Context, current: SignedIn, ref: str) -> None:
    """Erase a pending reveal at once (e.g. the key was revoked)."""
    with ctx.db.transaction() as session:
        session.execute(
            delete(ConsoleReveal).where(
                ConsoleReveal.session_id == current.session_id, ConsoleReveal.key_ref == ref
            )
        )


def held_secret(ctx: Context, current: SignedIn, ref: str) -> str | None:
    """The secret of ``ref`` this session still holds in its reveal window, if any."""
    with ctx.db.session() as session:
        sealed = session.scalar(
            select(ConsoleReveal.sealed_secret).where(
                ConsoleReveal.session_id == current.session_id,
                ConsoleReveal.key_ref == ref,
                ConsoleReveal.expires_at > ctx.clock(),
            )
        )
    if sealed is None:
        return None
    try:
        return _sealer(ctx).open(sealed)
    except SealError:
        return None


@dataclass(frozen=True, slots=True)
class Revealed:
    ref: str
    secret: str
    until: datetime


def take_reveals(
    ctx: Context, current: SignedIn, ip: str | None, *, only: str | None = None
) -> dict[str, Revealed]:
    """Secrets this session may still show, by key ref; erases those whose window ended.

    Each showing is audited as ``key.revealed`` (the secret itself never is).
    """
    now = ctx.clock()
    with ctx.db.session() as session:
        pending = session.scalar(
            select(func.count())
            .select_from(ConsoleReveal)
            .where(ConsoleReveal.session_id == current.session_id)
        )
    if not pending:
        return {}
    shown: dict[str, Revealed] = {}
    opener = _sealer(ctx)
    with ctx.db.transaction() as session:
        session.execute(
            delete(ConsoleReveal).where(
                ConsoleReveal.session_id == current.session_id, ConsoleReveal.expires_at <= now
            )
        )
        stmt = select(ConsoleReveal).where(ConsoleReveal.session_id == current.session_id)
        if only is not None:
            stmt = stmt.where(ConsoleReveal.key_ref == only)
        for row in session.scalars(stmt):
            try:
                shown[row.key_ref] = Revealed(
                    row.key_ref, opener.open(row.sealed_secret), row.expires_at
                )
            except SealError:
                session.delete(row)
                continue
            audit.record(
                session,
                current.actor(ip),
                "key.revealed",
                now=now,
                org_id=current.user.org_id,
                target_type="key",
                target_ref=row.key_ref,
            )
    return shown


def purge_expired(ctx: Context, now: datetime | None = None) -> int:
    """Erase ended sessions and every sealed secret whose reveal window closed (for the sweep)."""
    now = now or ctx.clock()
    with ctx.db.transaction() as session:
        reveals = session.execute(delete(ConsoleReveal).where(ConsoleReveal.expires_at <= now))
        session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    return int(getattr(reveals, "rowcount", 0) or 0)
