"""The slowapi peer: slowapi's limiter keyed on the ``X-API-Key`` header, limit out of the way.

Storage: ``PEER_REDIS_URL`` when set, else ``memory://``. So that the comparison is
limiter against limiter, the key is authenticated the cheapest correct way: its SHA-256
looked up in a dict (401 when missing or unknown).
"""

import os

from fastapi import FastAPI, HTTPException, Request, status
from keyself import SECRET, digest, sample
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded


def api_key(request: Request) -> str:
    return request.headers.get("x-api-key", "")


limiter = Limiter(key_func=api_key, storage_uri=os.environ.get("PEER_REDIS_URL") or "memory://")
app = FastAPI()
app.state.limiter = limiter
app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
KEYS = {digest(SECRET): sample()}


@app.get("/api/v2/keys/self")
@limiter.limit("100000/second")
async def key_self(request: Request):
    identity = KEYS.get(digest(api_key(request)))
    if identity is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key")
    return identity
