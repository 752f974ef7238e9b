"""Bulk enqueue's ids: drawn by the COPY itself (the table's identity default),
and read back when another enqueue drew from the same sequence meanwhile."""

from __future__ import annotations

import threading
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


def test_concurrent_bulk_and_single_enqueues_each_get_their_own_ids(
    app: currant.App, database_dsn: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real concurrency, not a staged interleaving: bulk enqueues while single
    enqueues draw from the same sequence mid-COPY. Every id a call returns is
    the row of the item it was returned for, and no id is returned twice."""
    monkeypatch.setattr(enqueue, "ENQUEUE_BATCH", 300)
    producers = [currant.App(database_dsn, schema=app.schema) for _ in range(4)]
    stop = threading.Event()
    singles: list[tuple[int, tuple[Any, ...]]] = []
    bulks: list[tuple[list[int], list[tuple[Any, ...]]]] = []

    def single(producer: currant.App, name: str) -> None:
        n = 0
        while not stop.is_set():
            args = (name, n)
            singles.append((producer.enqueue("echo", args), args))
            n += 1

    def bulk(producer: currant.App, name: str) -> None:
        for round_ in range(4):
            items = [(name, round_, i) for i in range(1_500)]
            bulks.append((producer.enqueue_many("echo", items), items))

    try:
        threads = [threading.Thread(target=single, args=(producers[k], f"single-{k}")) for k in (0, 1)]
        bulkers = [threading.Thread(target=bulk, args=(producers[k], f"bulk-{k}")) for k in (2, 3)]
        for thread in threads + bulkers:
            thread.start()
        for thread in bulkers:
            thread.join(120)
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        stop.set()
        for producer in producers:
            producer.close()
    returned = [job_id for ids, _items in bulks for job_id in ids] + [job_id for job_id, _args in singles]
    assert len(returned) == len(set(returned))
    stored = dict(_args_by_id(db, app.schema, returned))
    for ids, items in bulks:
        assert [stored[job_id] for job_id in ids] == items
    assert all(stored[job_id] == args for job_id, args in singles)
    # The read-back path ran: within some batch the ids are not consecutive
    # (a single enqueue drew a value between the batch's start and its end).
    batch = enqueue.ENQUEUE_BATCH
    interleaved = [
        ids[start : start + batch]
        for ids, _ in bulks
        for start in range(0, len(ids), batch)
        if ids[min(start + batch, len(ids)) - 1] - ids[start] >= batch
    ]
    assert singles and interleaved, len(singles)
