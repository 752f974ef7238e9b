"""Plans: each database operation written once, run by a sync or an async driver.

A plan is a generator that yields the statements to run and receives their
results. :func:`run_plan` drives one on a sync connection and
:func:`arun_plan` on an async one, so the sync and async APIs share every line
of logic and differ only in how they wait for I/O. Plans validate their
arguments when they are made, before any I/O.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Literal

import psycopg

# How a step runs: fetch one row, one row in binary format (no text
# formatting of long arrays of numbers on either side), all rows, all rows in
# binary format (the worker's claim rows, as the core decodes them), all rows
# with the column names, the row count, or feed COPY data (the step's
# argument is an iterable of chunks).
Fetch = Literal["one", "one_binary", "all", "all_binary", "all_named", "rowcount", "copy"]
Step = tuple[Fetch, Any, Any]
Plan = Generator[Step, Any, Any]


def run_plan(conn: psycopg.Connection[Any], plan: Plan) -> Any:
    """Drive a plan on a sync connection; returns the plan's return value."""
    result: Any = None
    try:
        while True:
            result = run_step(conn, plan.send(result))
    except StopIteration as done:
        return done.value


def run_step(conn: psycopg.Connection[Any], step: Step) -> Any:
    """Run one step of a plan on a sync connection; returns what the plan receives.

    Public for drivers that interleave steps with work of their own
    (:mod:`currant.testing` runs jobs between them)."""
    fetch, statement, argument = step
    if fetch == "copy":
        with conn.cursor() as cur, cur.copy(statement) as copy:
            for chunk in argument:
                copy.write(chunk)
        return None
    cur = conn.execute(statement, argument, binary=fetch in _BINARY)
    if fetch == "one" or fetch == "one_binary":
        return cur.fetchone()
    if fetch == "all" or fetch == "all_binary":
        return cur.fetchall()
    if fetch == "all_named":
        return (cur.fetchall(), [column.name for column in cur.description or ()])
    return cur.rowcount


async def arun_plan(conn: psycopg.AsyncConnection[Any], plan: Plan) -> Any:
    """Drive a plan on an async connection; returns the plan's return value."""
    result: Any = None
    try:
        while True:
            result = await arun_step(conn, plan.send(result))
    except StopIteration as done:
        return done.value


async def arun_step(conn: psycopg.AsyncConnection[Any], step: Step) -> Any:
    """Async :func:`run_step`."""
    fetch, statement, argument = step
    if fetch == "copy":
        async with conn.cursor() as cur, cur.copy(statement) as copy:
            for chunk in argument:
                await copy.write(chunk)
        return None
    cur = await conn.execute(statement, argument, binary=fetch in _BINARY)
    if fetch == "one" or fetch == "one_binary":
        return await cur.fetchone()
    if fetch == "all" or fetch == "all_binary":
        return await cur.fetchall()
    if fetch == "all_named":
        return (await cur.fetchall(), [column.name for column in cur.description or ()])
    return cur.rowcount


_BINARY = frozenset({"one_binary", "all_binary"})
