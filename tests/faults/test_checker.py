"""The checker itself, on hand-made histories (no database)."""

from __future__ import annotations

import pytest

from tests.faults.checker import assert_no_loss, check


def test_classifies_lost_duplicated_unexpected_recovered() -> None:
    history = check(
        acked={"a", "b", "c", "d"},
        attempted={"a", "b", "c", "d", "u1", "u2"},
        ledger_keys=["a", "b", "b", "u1", "zz"],
        job_rows=[
            ("a", "succeeded"),
            ("b", "succeeded"),
            ("c", "succeeded"),
            ("u1", "succeeded"),
            ("zz", "succeeded"),
            ("d", "queued"),
        ],
    )
    assert history.lost == {"c", "d"}  # c: no side effect; d: never ran
    assert history.duplicated == {"b": 2}
    assert history.unexpected == {"zz"}
    assert history.recovered == {"u1"}
    assert history.unfinished == {"d": ["queued"]}
    with pytest.raises(AssertionError, match="2 acknowledged jobs lost"):
        assert_no_loss(history)


def test_duplicates_are_bounded_and_windowed() -> None:
    history = check(
        acked={"a", "b"}, ledger_keys=["a", "a", "b", "b", "b"], job_rows=[("a", "succeeded"), ("b", "succeeded")]
    )
    assert history.extra_executions == 3
    assert_no_loss(history, max_duplicates=3)
    with pytest.raises(AssertionError, match="3 duplicate executions"):
        assert_no_loss(history, max_duplicates=2)
    with pytest.raises(AssertionError, match="outside the allowed window"):
        assert_no_loss(history, max_duplicates=3, duplicates_allowed={"a"})
    assert_no_loss(history, max_duplicates=3, duplicates_allowed=lambda key: key in "ab")
