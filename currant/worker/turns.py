"""Whose turn a "jobs ready" is, across hosts (issue 17, item 3).

One NOTIFY reaches every LISTENing host. Within a host the supervisor of
``--processes N`` already wakes one process per notification
(:mod:`currant.fleet`); across hosts, every idle host used to run a claim
per job, all but one of them empty. Here the hosts take turns, with no
coordinator and no extra round trip per job:

* each host holds a slot (a session-level advisory lock on its LISTEN
  connection, ``host_join`` in migration 0010), so a dead host's slot frees
  itself with its connection;
* the slots held are announced on the channel (``h:<slot>,<slot>,...``);
  PostgreSQL delivers a channel's notifications to every listener in one
  commit order, so every host sees each announcement at the same point of
  the same sequence, and resets its counters there;
* the n-th ``r:<queue>`` after an announcement is the turn of the
  (n mod k)-th of the k members that serve that queue, by slot. Every host
  counts the same notifications, so exactly one acts.

Nothing here is the delivery path: a turn that goes to a host that just
died, or that two hosts both take while they briefly disagree, costs at most
a poll interval or one empty claim. When the members are not known (just
connected, or a schema without the hosts table), every host acts, as before.

This module is the pure bookkeeping, with no I/O; the Listener
(:mod:`currant.worker.wakeup`) runs the statements (``currant/sql/hosts.sql``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Payload prefix of a membership announcement.
ANNOUNCE = "h:"


def parse_slots(rest: str) -> list[int] | None:
    """The slots of an ``h:`` payload (without its prefix), sorted; None if malformed."""
    if not rest:
        return []
    try:
        slots = sorted({int(each) for each in rest.split(",")})
    except ValueError:
        return None
    if any(slot < 0 for slot in slots):
        return None
    return slots


class Turns:
    """One host's view of the members and of whose turn the next "jobs ready" is."""

    def __init__(self) -> None:
        self.slot: int | None = None  # ours, while our LISTEN connection holds it
        # slot -> the queues it serves; None: unknown (everyone acts on everything)
        self.members: dict[int, frozenset[str]] | None = None
        self._serving: dict[str, list[int]] = {}  # queue -> the members serving it, by slot
        self._counters: dict[str, int] = {}
        self._suspect: tuple[int, ...] | None = None  # a difference seen by the last check

    def joined(self, slot: int | None) -> None:
        """Our LISTEN connection (re)joined: until the first announcement we see,
        we know nobody (notifications we missed while down leave us out of step)."""
        self.slot = slot
        self.forget()

    def forget(self) -> None:
        """Members unknown: act on every notification (the connection is down,
        or the schema has no hosts table)."""
        self.members = None
        self._serving = {}
        self._counters = {}
        self._suspect = None

    def announced(self, slots: Iterable[int], queues: Mapping[int, Iterable[str]]) -> list[str]:
        """An ``h:`` naming ``slots``; ``queues`` says what each serves (a slot
        without a row serves nothing we know of). Counting starts over.

        Returns the queues we are to claim from once now: those of members
        that left, where we are first in turn. A member that died between its
        last turn and this announcement left its jobs unclaimed, and the next
        "jobs ready" may be a long time coming (the poll, too, at a quiet
        moment): one claim finds them. Every host that knew the members
        agrees on who claims."""
        before = self.members
        self.members = {slot: frozenset(queues.get(slot, ())) for slot in slots}
        self._serving = {}
        for slot in sorted(self.members):
            for queue in self.members[slot]:
                self._serving.setdefault(queue, []).append(slot)
        self._counters = {}
        self._suspect = None
        if before is None or self.slot is None:
            return []
        left = set().union(*(served for slot, served in before.items() if slot not in self.members))
        return sorted(queue for queue in left if self._serving.get(queue, [None])[0] == self.slot)

    @property
    def left_out(self) -> bool:
        """The last announcement did not name us (it read the locks before we
        took our slot): we must announce again, or the others never count us."""
        return self.members is not None and self.slot is not None and self.slot not in self.members

    def ready(self, queue: str) -> bool:
        """A ``r:<queue>`` arrived: whether it is ours to act on. Counts it."""
        if self.members is None or self.slot is None:
            return True
        serving = self._serving.get(queue)
        if not serving:
            # Nobody we know of serves it (its host's row not read yet): act,
            # as before, rather than leave it to the poll.
            return True
        turn = self._counters.get(queue, 0)
        self._counters[queue] = turn + 1
        return serving[turn % len(serving)] == self.slot

    @property
    def alone(self) -> bool:
        """We are the only member we know of: no other host can die unnoticed,
        and one that joins announces itself (or, if we miss it, our LISTEN
        dropped and we join again), so the periodic check has nothing to find."""
        return self.members is not None and self.slot is not None and set(self.members) <= {self.slot}

    def others_serve(self, queue: str) -> bool:
        """Whether another member serves ``queue`` (a burst is worth spreading to)."""
        serving = self._serving.get(queue, [])
        return any(slot != self.slot for slot in serving)

    def should_announce(self, held: Iterable[int]) -> bool:
        """The periodic check: ``held`` is what pg_locks says is held now.

        A member missing from ``held`` died; its turns go unanswered (until a
        poll) while we keep counting it. The lowest live slot announces at once;
        the others only if the same difference is still there at their next
        check (the lowest host may be the one that died, or be slow), so one
        death costs one announcement, not one per host. A slot held but not
        yet a member is a host that joined and whose own announcement is on its
        way: that too waits for a second look."""
        if self.members is None or self.slot is None:
            return False
        live = sorted(set(held))
        if live == sorted(self.members):
            self._suspect = None
            return False
        difference = tuple(live)
        gone = any(slot not in live for slot in self.members)
        if (gone and live and live[0] == self.slot) or self._suspect == difference:
            self._suspect = None
            return True
        self._suspect = difference
        return False
