"""Liveness and readiness. Readiness checks what a request needs: Temporal and the database."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from api.deps import ClientDep, EngineDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready"}})
async def readyz(client: ClientDep, engine: EngineDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:  # readiness reports any failure, whatever its type
        checks["database"] = f"error: {type(e).__name__}"
    # Two tries: one health RPC that fails while the server is busy is not "not ready" (a load
    # balancer would take every API process out of rotation at once).
    for attempt in range(2):
        try:
            await client.service_client.check_health(timeout=timedelta(seconds=5))
            checks["temporal"] = "ok"
            break
        except Exception as e:
            checks["temporal"] = f"error: {type(e).__name__}"
            if attempt == 0:
                await asyncio.sleep(0.2)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)
