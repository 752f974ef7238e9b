"""Currant in a FastAPI (or any ASGI) app.

* the App is opened in the lifespan (schema checked at start-up) and closed
  at shutdown, on the server's event loop;
* ``await task.aenqueue(...)`` from an endpoint;
* a transactional enqueue: the endpoint's own async psycopg connection
  inserts a row and enqueues a job in one transaction: both or neither;
* a status endpoint reading ``aget_job``.

Run it: ``pip install fastapi uvicorn`` then ``uvicorn fastapi_app:api`` (from
this folder) and a worker: ``python -m currant.worker fastapi_app:queue``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException
from psycopg_pool import AsyncConnectionPool

import currant

queue = currant.App()  # $CURRANT_DSN (else the embedded PostgreSQL), $CURRANT_SCHEMA


@queue.task
def add(a: int, b: int) -> int:
    return a + b


@queue.task(queue="mail", max_attempts=5)
def send_welcome(email: str) -> str:
    return f"welcomed {email}"


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    await queue.amigrate()  # or run `python -m currant migrate` at deploy time
    # The app's own database work (here: one table) goes through a pool of its own.
    async with AsyncConnectionPool(queue.dsn, open=False, kwargs={"autocommit": True}) as pool:
        async with pool.connection() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS signups (email text PRIMARY KEY)")
        api.state.pool = pool
        yield
    await queue.aclose()  # before the loop ends (see the README's async API notes)


api = FastAPI(lifespan=lifespan)


async def connection() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The endpoint's own connection, from the app's pool."""
    async with api.state.pool.connection() as conn:
        yield conn


@api.post("/add")
async def enqueue_add(a: int, b: int) -> dict[str, int]:
    return {"job_id": await add.aenqueue(a, b)}


@api.post("/signup")
async def signup(email: str, conn: Annotated[psycopg.AsyncConnection[Any], Depends(connection)]) -> dict[str, int]:
    async with conn.transaction():  # the row and the job commit together, or neither does
        await conn.execute("INSERT INTO signups (email) VALUES (%s)", (email,))
        job_id = await send_welcome.options(connection=conn).aenqueue(email)
        if "@" not in email:
            raise HTTPException(422, "not an email address")  # rolls back the row and the job
    return {"job_id": job_id}


@api.get("/jobs/{job_id}")
async def job_status(job_id: int) -> dict[str, Any]:
    job = await queue.aget_job(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return {"id": job.id, "task": job.task, "state": job.state, "result": job.result, "error": job.error}
