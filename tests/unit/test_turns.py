"""Whose turn a "jobs ready" is (currant/worker/turns.py): pure bookkeeping, no database."""

from __future__ import annotations

from collections import Counter

from currant.worker.turns import Turns, parse_slots


def _hosts(slots: dict[int, list[str]]) -> dict[int, Turns]:
    """One Turns per slot, all having seen the same announcement of every slot."""
    hosts = {}
    for slot in slots:
        turns = Turns()
        turns.joined(slot)
        turns.announced(sorted(slots), slots)
        hosts[slot] = turns
    return hosts


def test_parse_slots() -> None:
    assert parse_slots("") == []
    assert parse_slots("3,1,2") == [1, 2, 3]
    assert parse_slots("7") == [7]
    assert parse_slots("1,1") == [1]
    assert parse_slots("1,x") is None
    assert parse_slots("1,,2") is None
    assert parse_slots("-1") is None


def test_unknown_members_act_on_everything() -> None:
    turns = Turns()
    assert turns.ready("default")  # not joined
    turns.joined(0)
    assert turns.ready("default") and turns.ready("default")  # joined, no announcement seen yet
    turns.announced([0, 1], {0: ["default"], 1: ["default"]})
    turns.forget()
    assert turns.ready("default") and turns.ready("default")


def test_exactly_one_host_acts_on_each_notification_in_rotation() -> None:
    hosts = _hosts({0: ["default"], 2: ["default"], 5: ["default"]})
    acted: list[int] = []
    for _ in range(9):
        takers = [slot for slot, turns in hosts.items() if turns.ready("default")]
        assert len(takers) == 1
        acted.append(takers[0])
    assert acted == [0, 2, 5] * 3


def test_turns_are_counted_per_queue_among_the_hosts_serving_it() -> None:
    hosts = _hosts({0: ["default"], 1: ["default", "other"], 2: ["other"]})
    takers: Counter[tuple[str, int]] = Counter()
    for queue in ["other", "default", "default", "other", "other", "default", "default", "other"]:
        acting = [slot for slot, turns in hosts.items() if turns.ready(queue)]
        assert len(acting) == 1, (queue, acting)
        takers[queue, acting[0]] += 1
    assert takers == {("default", 0): 2, ("default", 1): 2, ("other", 1): 2, ("other", 2): 2}


def test_a_queue_nobody_known_serves_is_acted_on() -> None:
    hosts = _hosts({0: ["default"], 1: ["default"]})
    assert all(turns.ready("new") for turns in hosts.values())
    assert hosts[0].others_serve("default") and not hosts[0].others_serve("new")


def test_an_announcement_starts_counting_over() -> None:
    hosts = _hosts({0: ["default"], 1: ["default"]})
    assert hosts[0].ready("default") and not hosts[1].ready("default")  # 0's turn, then 1's next
    for turns in hosts.values():
        turns.announced([0, 1], {0: ["default"], 1: ["default"]})
    assert hosts[0].ready("default") and not hosts[1].ready("default")  # 0's again


def test_left_out_of_an_announcement_means_announce_again() -> None:
    turns = Turns()
    turns.joined(3)
    turns.announced([0, 1], {0: ["default"], 1: ["default"]})  # read before we held slot 3
    assert turns.left_out
    assert not turns.ready("default") and not turns.ready("default")  # the others' turns meanwhile
    turns.announced([0, 1, 3], {0: ["default"], 1: ["default"], 3: ["default"]})
    assert not turns.left_out


def test_a_member_that_left_leaves_its_queues_to_the_first_in_turn() -> None:
    before = {0: ["default"], 1: ["default", "other"], 2: ["other", "rare"]}
    hosts = _hosts(before)
    after = {slot: queues for slot, queues in before.items() if slot != 2}
    claims = {slot: hosts[slot].announced(sorted(after), after) for slot in after}
    # "other": 1 is now its only member; "rare": nobody serves it any more.
    assert claims == {0: [], 1: ["other"]}
    # A host that just joined knew nobody before: it claims nothing extra.
    newcomer = Turns()
    newcomer.joined(4)
    assert newcomer.announced([0, 1, 4], {0: ["default"], 1: ["default"], 4: ["default"]}) == []


def test_the_check_announces_a_death_once() -> None:
    hosts = _hosts({0: ["default"], 1: ["default"], 2: ["default"]})
    assert not any(turns.should_announce([0, 1, 2]) for turns in hosts.values())
    # 0 died: 1 is the lowest live slot and announces at once; 2 waits a check.
    assert hosts[1].should_announce([1, 2])
    assert not hosts[2].should_announce([1, 2])
    # The announcement arrived before 2's next check: nothing more to say.
    hosts[2].announced([1, 2], {1: ["default"], 2: ["default"]})
    assert not hosts[2].should_announce([1, 2])


def test_the_check_announces_when_a_difference_stays() -> None:
    turns = Turns()
    turns.joined(2)
    turns.announced([0, 2], {0: ["default"], 2: ["default"]})
    # Slot 1 joined: its own announcement is on its way; only a second look announces.
    assert not turns.should_announce([0, 1, 2])
    assert turns.should_announce([0, 1, 2])
    # Slot 0 died and we are not the lowest live (1 is): the second look.
    turns.announced([0, 1, 2], {0: ["default"], 1: ["default"], 2: ["default"]})
    assert not turns.should_announce([1, 2])
    assert turns.should_announce([1, 2])
    # A difference that changed in between is a first look again.
    turns.announced([0, 1, 2], {0: ["default"], 1: ["default"], 2: ["default"]})
    assert not turns.should_announce([0, 2])
    assert not turns.should_announce([0, 2, 3])
    assert turns.should_announce([0, 2, 3])
    # The lowest live slot announces a death at once.
    turns.announced([1, 2], {1: ["default"], 2: ["default"]})
    assert turns.should_announce([2])


def test_not_joined_never_announces() -> None:
    turns = Turns()
    assert not turns.should_announce([0, 1])
    turns.joined(None)  # every slot taken, or no hosts table
    assert not turns.should_announce([0, 1])
    assert turns.ready("default")


def test_alone_only_when_we_are_the_only_member_we_know() -> None:
    turns = Turns()
    assert not turns.alone  # not joined
    turns.joined(3)
    assert not turns.alone  # members unknown: no announcement seen yet
    turns.announced([3], {3: ["default"]})
    assert turns.alone
    turns.announced([3, 4], {3: ["default"], 4: ["default"]})
    assert not turns.alone
    turns.announced([3], {3: ["default"]})  # the other one left
    assert turns.alone
    turns.announced([4], {4: ["default"]})  # we are left out: not alone, and we announce
    assert not turns.alone and turns.left_out
