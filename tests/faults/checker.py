"""A total-queue checker in the style of Jepsen's ``total-queue``.

Inputs:

* ``acked``: the keys whose enqueue was acknowledged (the call returned an id);
* ``attempted``: every key an enqueue was tried for, acknowledged or not
  (``EnqueueOutcomeUnknown``, a connection error, a crash mid-call);
* ``ledger``: the side effects the tasks wrote, one entry per execution,
  duplicates included;
* ``jobs``: the final job rows as ``(key, state)`` (several rows per key when a
  retry of an unknown outcome inserted a second job).

Classes:

* **lost**: acknowledged, yet never executed to success (no ledger entry, or
  no ``succeeded`` row);
* **duplicated**: executed more than once (ledger count > 1), with the count;
* **unexpected**: executed or present although never attempted;
* **recovered**: attempted without acknowledgement, and present anyway (the
  enqueue committed although the client could not know it).

Every fault test ends with :func:`assert_no_loss`: nothing lost, nothing
unexpected, and duplicates only where the test allows them, bounded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

FINISHED_OK = "succeeded"


@dataclass
class QueueHistory:
    acked: set[str]
    attempted: set[str]
    executions: Counter[str]
    job_states: dict[str, list[str]]
    lost: set[str] = field(default_factory=set)
    duplicated: dict[str, int] = field(default_factory=dict)
    unexpected: set[str] = field(default_factory=set)
    recovered: set[str] = field(default_factory=set)
    unfinished: dict[str, list[str]] = field(default_factory=dict)

    @property
    def extra_executions(self) -> int:
        return sum(count - 1 for count in self.duplicated.values())

    def summary(self) -> str:
        def few(items: Iterable[Any]) -> list[Any]:
            return sorted(items)[:10]

        return (
            f"acked={len(self.acked)} attempted={len(self.attempted)} executed={len(self.executions)}"
            f" lost={len(self.lost)} {few(self.lost)} duplicated={len(self.duplicated)}"
            f" (+{self.extra_executions} runs) {few(self.duplicated.items())}"
            f" unexpected={len(self.unexpected)} {few(self.unexpected)} recovered={len(self.recovered)}"
            f" unfinished={len(self.unfinished)} {few(self.unfinished.items())}"
        )


def check(
    acked: Collection[str],
    ledger_keys: Iterable[str],
    job_rows: Iterable[tuple[str, str]],
    attempted: Collection[str] | None = None,
) -> QueueHistory:
    """Classify a run; see the module docstring."""
    acked_set = set(acked)
    attempted_set = (set(attempted) if attempted is not None else set()) | acked_set
    executions = Counter(ledger_keys)
    states: dict[str, list[str]] = {}
    for key, state in job_rows:
        states.setdefault(key, []).append(state)
    history = QueueHistory(acked_set, attempted_set, executions, states)
    history.lost = {key for key in acked_set if executions[key] == 0 or FINISHED_OK not in states.get(key, [])}
    history.duplicated = {key: count for key, count in executions.items() if count > 1}
    history.unexpected = {key for key in set(executions) | set(states) if key not in attempted_set}
    history.recovered = {key for key in attempted_set - acked_set if key in states or executions[key]}
    history.unfinished = {key: rows for key, rows in states.items() if any(state != FINISHED_OK for state in rows)}
    return history


def assert_no_loss(
    history: QueueHistory,
    *,
    max_duplicates: int = 0,
    duplicates_allowed: Collection[str] | Callable[[str], bool] | None = None,
    allow_unfinished: bool = False,
) -> QueueHistory:
    """Fail unless nothing acknowledged was lost and nothing unexpected ran.

    ``max_duplicates`` bounds the extra executions (sum of count - 1);
    ``duplicates_allowed`` (keys, or a predicate) says which keys may be
    duplicated at all (default: any key, within the bound). Unless
    ``allow_unfinished``, every job row must have ended ``succeeded``.
    """
    problems = []
    if history.lost:
        problems.append(f"{len(history.lost)} acknowledged jobs lost")
    if history.unexpected:
        problems.append(f"{len(history.unexpected)} unexpected keys")
    if history.extra_executions > max_duplicates:
        problems.append(f"{history.extra_executions} duplicate executions (allowed {max_duplicates})")
    if duplicates_allowed is not None:
        allowed = duplicates_allowed if callable(duplicates_allowed) else set(duplicates_allowed).__contains__
        bad = sorted(key for key in history.duplicated if not allowed(key))
        if bad:
            problems.append(f"duplicates outside the allowed window: {bad[:10]}")
    if history.unfinished and not allow_unfinished:
        problems.append(f"{len(history.unfinished)} keys with unfinished job rows")
    assert not problems, "; ".join(problems) + "\n" + history.summary()
    return history


def collect(conn: Any, schema: str, key_of: dict[int, str] | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """(ledger keys, [(job key, state)]) read from a schema.

    A job's key is ``key_of[id]`` when ``key_of`` is given, else its ``unique_key``.
    """
    ledger_keys = [key for (key,) in conn.execute(f'SELECT key FROM "{schema}".ledger').fetchall()]
    rows = conn.execute(f'SELECT id, unique_key, state::text FROM "{schema}".jobs').fetchall()
    jobs: list[tuple[str, str]] = []
    for job_id, unique_key, state in rows:
        key = key_of.get(job_id) if key_of is not None else unique_key
        jobs.append((key if key is not None else f"<job {job_id}>", state))
    return ledger_keys, jobs


def check_schema(
    conn: Any,
    schema: str,
    acked: Collection[str],
    *,
    attempted: Collection[str] | None = None,
    key_of: dict[int, str] | None = None,
) -> QueueHistory:
    ledger_keys, jobs = collect(conn, schema, key_of)
    return check(acked, ledger_keys, jobs, attempted)
