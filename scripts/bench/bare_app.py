"""The thinnest FastAPI ingest endpoint: the ceiling of the stack on this machine.

stacksift's real ingest does auth, decompression, parsing and a durable queue
write on top of this; benchmarking this route with the same client, bodies and
server settings shows how much of the budget FastAPI + uvicorn alone take.
"""

from __future__ import annotations

import uuid

from fastapi import FastAPI, Request

app = FastAPI()


@app.post("/api/{project_id}/envelope/")
async def envelope(project_id: int, request: Request) -> dict[str, str]:
    await request.body()
    return {"id": uuid.uuid4().hex}
