"""What a job waits for: the ``depends_on`` of an enqueue, checked and linked.

A dependent job is inserted as ``waiting``; in the same transaction the
``depend`` statement links it to its parents (and marks them), counts the
parents already finished, and releases it at once if none is left. From
then on the database releases it (migration 0006_flow): when its last parent
succeeds it is queued; when a parent fails or is cancelled it is cancelled,
naming the parent, unless it was enqueued to run anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from .names import check_job_id
from .plans import Plan

ON_PARENT_FAILURE = {"cancel": "c", "run": "r"}
# How a waiting job receives its parents' results: not at all, first among
# its arguments (a chain's step), or as the keyword argument ``results``.
PASS_RESULTS = {None: None, "first": "f", "keyword": "k"}


class Dependency(NamedTuple):
    parents: tuple[int, ...]
    on_failure: str  # 'c' or 'r'
    pass_results: str | None  # None, 'f' or 'k'


def check_dependency(
    depends_on: Iterable[int] | None, on_parent_failure: str = "cancel", pass_results: str | None = None
) -> Dependency | None:
    """Validate before any I/O; None when the job depends on nothing."""
    if on_parent_failure not in ON_PARENT_FAILURE:
        raise ValueError(f"on_parent_failure must be 'cancel' or 'run', got {on_parent_failure!r}")
    if pass_results not in PASS_RESULTS:
        raise ValueError(f"pass_results must be None, 'first' or 'keyword', got {pass_results!r}")
    if depends_on is None:
        if on_parent_failure != "cancel" or pass_results is not None:
            raise ValueError("on_parent_failure and pass_results need depends_on")
        return None
    if isinstance(depends_on, (str, bytes)) or not isinstance(depends_on, Iterable):
        raise TypeError(f"depends_on must be job ids, not {type(depends_on).__name__}")
    parents = tuple(dict.fromkeys(check_job_id(parent) for parent in depends_on))
    if not parents:
        raise ValueError("depends_on is empty: pass None for a job that waits for nothing")
    return Dependency(parents, ON_PARENT_FAILURE[on_parent_failure], PASS_RESULTS[pass_results])


def depend_steps(sql: Mapping[str, str], channel: str, children: list[int], dependency: Dependency) -> Plan:
    """Link ``children`` (inserted as waiting in this transaction) to their parents."""
    params: dict[str, Any] = {
        "children": children,
        "parents": list(dependency.parents),
        "on_failure": dependency.on_failure,
        "pass_results": dependency.pass_results,
    }
    missing, ready_queues = yield ("one", sql["depend"], params)
    if missing:
        raise ValueError(f"depends_on names jobs that do not exist (or were pruned): {sorted(missing)[:10]}")
    for queue in ready_queues:
        yield ("one", sql["notify"], {"channel": channel, "payload": f"r:{queue}"})
