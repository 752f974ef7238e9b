"""The claim size on its own: how the prefetch follows the jobs' length."""

from __future__ import annotations

from currant.worker.claimer import ClaimSize


def _claim(size: ClaimSize, now: float, full: bool = True, dry: bool = True) -> int:
    """One claim round as the claimer runs it; returns the size it left."""
    size.before_claim(now)
    if dry:
        size.ran_dry()
    size.after_claim(full, now)
    return size.current


def test_it_starts_at_the_batch_size_even_though_the_first_claim_finds_idle_lanes() -> None:
    size = ClaimSize(1000)
    assert _claim(size, 0.0) == 1000


def test_short_jobs_grow_it_to_eight_batches_and_no_further() -> None:
    size = ClaimSize(1000)
    sizes = [_claim(size, step * 0.05) for step in range(6)]
    assert sizes == [1000, 2000, 4000, 8000, 8000, 8000]


def test_it_grows_only_when_the_lanes_ran_dry_on_a_full_claim() -> None:
    size = ClaimSize(1000)
    _claim(size, 0.0)
    assert _claim(size, 0.05, dry=False) == 1000  # the lanes still had work: no need
    assert _claim(size, 0.10, full=False) == 1000  # the queue is empty: more would not come
    assert _claim(size, 0.15) == 1000  # the claim before was not full
    assert _claim(size, 0.20) == 2000


def test_slow_jobs_shrink_it_back_to_the_batch_size() -> None:
    size = ClaimSize(1000)
    for step in range(4):
        _claim(size, step * 0.05)
    assert size.current == 8000
    # What the last full claim brought lasted longer than the horizon.
    assert _claim(size, 0.15 + ClaimSize.HORIZON + 0.01, dry=False) == 4000
    assert _claim(size, 2.0, dry=False) == 4000  # within the horizon of the claim before
    assert _claim(size, 3.5, dry=False) == 2000
    assert _claim(size, 5.0, dry=False) == 1000
    assert _claim(size, 7.0, dry=False) == 1000


def test_the_low_water_mark_is_half_the_current_size() -> None:
    size = ClaimSize(1000)
    assert size.room(500) and not size.room(501)
    for step in range(3):
        _claim(size, step * 0.05)
    assert size.room(2000) and not size.room(2001)
    assert ClaimSize(1).room(1) and not ClaimSize(1).room(2)
