"""The hand-written peer: FastAPI's ``APIKeyHeader`` and one SQLAlchemy SELECT per request.

The key's SHA-256 is looked up in a SQLite table (``PEER_DATABASE_URL``) the app creates
and seeds at start-up; a missing or unknown key gets a 401.
"""

import os
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Security, status
from fastapi.security import APIKeyHeader
from keyself import SECRET, digest, key_self
from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str]
    last4: Mapped[str] = mapped_column(String(4))
    org_id: Mapped[int]
    org_slug: Mapped[str]
    org_name: Mapped[str]
    rate_per_second: Mapped[int]
    concurrency: Mapped[int]
    created_at: Mapped[datetime]


engine = create_engine(os.environ["PEER_DATABASE_URL"], connect_args={"check_same_thread": False})


@asynccontextmanager
async def lifespan(app: FastAPI):
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        if session.scalar(select(ApiKey).where(ApiKey.digest == digest(SECRET))) is None:
            session.add(
                ApiKey(
                    ref="key_01M8S6K7PC1ERTKT9PPEZ88C9C",
                    digest=digest(SECRET),
                    name="Bench key",
                    last4=SECRET[-4:],
                    org_id=1,
                    org_slug="bench",
                    org_name="Bench",
                    rate_per_second=100_000,
                    concurrency=10_000,
                    created_at=datetime.now(UTC),
                )
            )
            session.commit()
    yield
    engine.dispose()


app = FastAPI(lifespan=lifespan)
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def get_db() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


def current_key(
    api_key: Annotated[str | None, Security(api_key_header)],
    db: Annotated[Session, Depends(get_db)],
) -> ApiKey:
    if api_key is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key")
    key = db.scalar(select(ApiKey).where(ApiKey.digest == digest(api_key)))
    if key is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key")
    return key


@app.get("/api/v2/keys/self")
def read_key_self(key: Annotated[ApiKey, Depends(current_key)]):
    return key_self(
        ref=key.ref,
        name=key.name,
        last4=key.last4,
        org_id=key.org_id,
        org_slug=key.org_slug,
        org_name=key.org_name,
        rate_per_second=key.rate_per_second,
        concurrency=key.concurrency,
        created_at=key.created_at,
    )
