"""The claim size on its own: how the prefetch follows the jobs' length."""

from __future__ import annotations

from currant.worker.claimer import ClaimSize


def _claim(size: ClaimSize, now: float, full: bool = True, dry: bool = True, finished: int = 0) -> int:
    """One claim round as the claimer runs it; returns the size it left."""
    size.before_claim(now)
    if dry:
        size.ran_dry()
    size.after_claim(full, now, finished)
    return size.current


def test_it_starts_at_the_number_of_lanes_even_though_the_first_claim_finds_them_idle() -> None:
    size = ClaimSize(1000, lanes=4)
    assert _claim(size, 0.0) == 4
    assert ClaimSize(2, lanes=4).current == 2  # a batch size below the lanes is the least


def test_short_jobs_grow_it_to_eight_batches_and_no_further() -> None:
    size = ClaimSize(1000, lanes=100)
    sizes = [_claim(size, step * 0.01) for step in range(10)]
    assert sizes == [100, 200, 400, 800, 1600, 3200, 6400, 8000, 8000, 8000]


def test_it_grows_only_when_the_lanes_ran_dry_on_a_full_claim() -> None:
    size = ClaimSize(1000, lanes=100)
    _claim(size, 0.0)
    assert _claim(size, 0.01, dry=False) == 100  # the lanes still had work: no need
    assert _claim(size, 0.02, full=False) == 100  # the queue is empty: more would not come
    assert _claim(size, 0.03) == 100  # the claim before was not full
    assert _claim(size, 0.04) == 200


def test_lanes_that_go_through_a_claim_in_under_two_cooldowns_grow_it() -> None:
    """Busy lanes never run dry when the claim comes in time; at 400 jobs/s a
    claim of 4 would be refilled every 5 ms, a commit each."""
    size = ClaimSize(1000, lanes=4)
    finished = 0
    sizes = []
    for step in range(12):  # a claim every 25 ms, 10 jobs finished in between
        finished += 10
        sizes.append(_claim(size, step * 0.025, dry=False, finished=finished))
    # Measured over windows of at least COOLDOWN: 400 jobs/s * 2 * 0.1 s = 80.
    assert sizes == [4, 4, 4, 4, 8, 8, 8, 8, 16, 16, 16, 16]
    for step in range(12, 40):
        finished += 10
        _claim(size, step * 0.025, dry=False, finished=finished)
    assert size.current == 128  # the first size past 80, and there it stays


def test_slow_jobs_keep_it_at_the_lanes() -> None:
    """One job of 0.25 s per lane, 4 lanes: 16 jobs/s, and two cooldowns'
    worth is 3.2: the claim stays at 4, not a batch (1000) that other workers
    could run."""
    size = ClaimSize(1000, lanes=4)
    for step in range(40):  # a claim as each job ends
        _claim(size, step / 16, dry=False, finished=step)
    assert size.current == 4


def test_slow_jobs_shrink_it_back_to_the_lanes() -> None:
    size = ClaimSize(1000, lanes=500)
    for step in range(6):
        _claim(size, step * 0.01)
    assert size.current == 8000
    # What the last full claim brought lasted longer than the horizon.
    assert _claim(size, 0.05 + ClaimSize.HORIZON + 0.01, dry=False) == 4000
    assert _claim(size, 1.5, dry=False) == 4000  # within the horizon of the claim before
    assert _claim(size, 3.0, dry=False) == 2000
    assert _claim(size, 4.5, dry=False) == 1000
    assert _claim(size, 6.0, dry=False) == 500
    assert _claim(size, 7.5, dry=False) == 500


def test_the_low_water_mark_is_half_the_current_size() -> None:
    size = ClaimSize(1000, lanes=1000)
    assert size.room(500) and not size.room(501)
    for step in range(3):
        _claim(size, step * 0.05)
    assert size.room(2000) and not size.room(2001)
    assert ClaimSize(1, lanes=4).room(1) and not ClaimSize(1, lanes=4).room(2)
