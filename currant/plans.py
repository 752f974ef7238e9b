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
# formatting of long arrays of numbers on either side), all rows, all rows
# with the column names, the row count, or feed COPY data (the step's
# argument is an iterable of chunks).
Fetch = Literal["one", "one_binary", "all", "all_named", "rowcount", "copy"]
Step = tuple[Fetch, Any, Any]
Plan = Generator[Step, Any, Any]


def run_plan(conn: psycopg.Connection[Any], plan: Plan) -> Any:
    """Drive a plan on a sync connection; returns the plan's return value."""
    result: Any = None
    try:
        while True:
            fetch, statement, argument = plan.send(result)
            if fetch == "copy":
                with conn.cursor() as cur, cur.copy(statement) as copy:
                    for chunk in argument:
                        copy.write(chunk)
                result = None
                continue
            cur = conn.execute(statement, argument, binary=fetch == "one_binary")
            if fetch == "one" or fetch == "one_binary":
                result = cur.fetchone()
            elif fetch == "all":
                result = cur.fetchall()
            elif fetch == "all_named":
                result = (cur.fetchall(), [column.name for column in cur.description or ()])
            else:
                result = cur.rowcount
    except StopIteration as done:
        return done.value


async def arun_plan(conn: psycopg.AsyncConnection[Any], plan: Plan) -> Any:
    """Drive a plan on an async connection; returns the plan's return value."""
    result: Any = None
    try:
        while True:
            fetch, statement, argument = plan.send(result)
            if fetch == "copy":
                async with conn.cursor() as cur, cur.copy(statement) as copy:
                    for chunk in argument:
                        await copy.write(chunk)
                result = None
                continue
            cur = await conn.execute(statement, argument, binary=fetch == "one_binary")
            if fetch == "one" or fetch == "one_binary":
                result = await cur.fetchone()
            elif fetch == "all":
                result = await cur.fetchall()
            elif fetch == "all_named":
                result = (await cur.fetchall(), [column.name for column in cur.description or ()])
            else:
                result = cur.rowcount
    except StopIteration as done:
        return done.value
