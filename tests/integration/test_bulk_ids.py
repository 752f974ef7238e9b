"""Bulk enqueue's ids: drawn by the COPY itself (the table's identity default),
and read back when another enqueue drew from the same sequence meanwhile."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import currant
from currant import codec, enqueue, plans


def _args_by_id(db: psycopg.Connection[Any], schema: str, ids: list[int]) -> list[tuple[int, Any]]:
    rows = db.execute(f'SELECT id, payload FROM "{schema}".jobs WHERE id = ANY(%s) ORDER BY id', (ids,)).fetchall()
    return [(job_id, codec.unpack_payload(payload)[0]) for job_id, payload in rows]


def test_ids_follow_the_items_when_nothing_else_enqueues(
    app: currant.App, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(enqueue, "ENQUEUE_BATCH", 40)
    ids = app.enqueue_many("echo", [(i,) for i in range(130)])
    assert _args_by_id(db, app.schema, ids) == [(job_id, (i,)) for i, job_id in enumerate(ids)]
    # Each batch's ids are consecutive: one value before each batch marks where it starts.
    assert [b - a for a, b in zip(ids, ids[1:], strict=False)].count(1) == 130 - 4


def test_ids_are_read_back_when_another_enqueue_drew_in_between(
    app: currant.App, database_dsn: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single enqueue, committed by another connection between a batch's
    start and its COPY, takes an id inside the batch's range: the batch's ids
    must still be exactly its own rows', in item order."""
    monkeypatch.setattr(enqueue, "ENQUEUE_BATCH", 40)
    others: list[int] = []
    other_app = currant.App(database_dsn, schema=app.schema)
    run_step = plans.run_step

    def interleaving(conn: psycopg.Connection[Any], step: Any) -> Any:
        result = run_step(conn, step)
        if step[1] == app.sql["bulk_start"] and len(others) < 2:  # the first two batches
            others.append(other_app.enqueue("echo", ("other",)))
        return result

    monkeypatch.setattr(plans, "run_step", interleaving)
    try:
        ids = app.enqueue_many("echo", [(i,) for i in range(100)])
    finally:
        other_app.close()
    assert len(others) == 2 and min(ids) < others[1] < max(ids)  # they did land inside the bulk's range
    assert not set(ids) & set(others)
    assert _args_by_id(db, app.schema, ids) == [(job_id, (i,)) for i, job_id in enumerate(ids)]
    assert _args_by_id(db, app.schema, others) == [(job_id, ("other",)) for job_id in others]
