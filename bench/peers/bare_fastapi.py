"""The baseline peer: one bare FastAPI route answering ``keys/self``'s body, no auth."""

from fastapi import FastAPI
from keyself import sample

app = FastAPI()
BODY = sample()


@app.get("/api/v2/keys/self")
async def key_self():
    return BODY
