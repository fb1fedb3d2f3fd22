"""Spare turns: rate-limit turns this process took ahead of its calls, handed out locally.

Under load every upstream call of a rate-limited app would cost a store round
trip for its turn, even when its buckets are nearly empty. So each script
call for a bucket also asks for spare turns: as many as this process's calls
for the bucket are expected to need within SPARE_LIFE, judged by how many came
since the previous script call and how long ago that was, and growing slowly
(at most one more than twice the spares calls took since then, at most
SPARES_MAX): a lone burst gets one spare, steady traffic a few more each round,
calls further apart than SPARE_LIFE none. The store grants a spare only while
the bucket stays at most half full (gcra.spare): a bucket near its limit hands
out no new spares, and calls there take their turns in order.

A spare is a real turn: the bucket counted it when it was taken, so the turns
that all replicas take together keep rate and burst. It is handed to a call of
this process within SPARE_LIFE of the moment its script call was sent, else
dropped: it goes unused, headroom lost (at most one spare per script call once
calls stop taking them), never a call too many. So a spare reaches the platform
at most SPARE_LIFE after it was counted, the lateness the shaper accepts of any
turn (LATE_WAKE): a platform counting sharply may see a burst and 50 ms of calls
at once. Whatever a reply teaches a bucket (a penalty, a rate, a filling) drops
its spares, and those of script calls sent before the lesson was stored; one
that another replica learned holds this one's calls back within SPARE_LIFE, as
PENALTY_POLL does for buckets without a rate of their own.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from authproxy.store.gcra import Grant

#: seconds a spare turn may be handed out after its script call was sent
SPARE_LIFE = 0.05
#: most spares one script call asks for
SPARES_MAX = 64
#: spares asked for at most one more than this many times those taken since the last script call
SPARES_GROWTH = 2
#: buckets held or counted, past which stale ones are swept
SWEEP_AT = 1024


@dataclass
class Pace:
    """A bucket's calls since its last script call (sent at `since`; None: never)."""

    asked: int = 0
    taken: int = 0  # of those, served by a spare
    since: float | None = None


@dataclass(frozen=True)
class SpareOrder:
    """The spares one script call asks for, and what keeps them honest when it answers."""

    count: int
    sent: float  # the clock when the call was sent: spares live SPARE_LIFE from here
    mark: int  # the drop count then: a lesson learned since voids them


class Spares:
    """Spare turns per bucket (its store key), and each bucket's calls since its last script call."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._held: dict[str, deque[tuple[float, Grant]]] = {}
        #: calls asked and spares taken since the bucket's last script call, and when that was
        self._asked: dict[str, Pace] = {}
        self._drops = 0  # lessons so far (and sweeps, which forget which buckets learned)
        self._dropped: dict[str, int] = {}  # the drop count when each bucket last learned
        self._forgotten = 0  # the drop count of the last sweep of _dropped

    def asked(self, bucket: str) -> None:
        """A call wants a turn in `bucket` (counted whether a spare serves it or not)."""
        pace = self._asked.get(bucket)
        if pace is None:
            if len(self._asked) >= SWEEP_AT:
                self._sweep()
            pace = self._asked[bucket] = Pace()
        pace.asked += 1

    def take(self, bucket: str) -> Grant | None:
        """A spare turn of `bucket` still fresh, or None."""
        held = self._held.get(bucket)
        if held is None:
            return None
        oldest = self.clock() - SPARE_LIFE
        while held:
            sent, grant = held.popleft()
            if sent >= oldest:
                if not held:
                    del self._held[bucket]
                if (pace := self._asked.get(bucket)) is not None:
                    pace.taken += 1
                return grant
        del self._held[bucket]
        return None

    def order(self, bucket: str) -> SpareOrder:
        """The spares a script call for `bucket`, sent now, asks for; the count starts anew."""
        now = self.clock()
        pace = self._asked.get(bucket) or Pace()
        self._asked[bucket] = Pace(since=now)
        wanted = 0
        if pace.since is not None and pace.asked:
            expected = pace.asked * SPARE_LIFE / max(now - pace.since, 1e-6)
            wanted = min(SPARES_MAX, SPARES_GROWTH * pace.taken + 1, int(expected))
        return SpareOrder(wanted, now, self._drops)

    def keep(self, bucket: str, order: SpareOrder, grants: Sequence[Grant]) -> None:
        """Hold the spares a script call granted, unless the bucket learned something since
        the call was sent."""
        granted = [grant for grant in grants if grant.admitted]
        if not granted or order.mark < self._forgotten or self._dropped.get(bucket, -1) > order.mark:
            return
        if len(self._held) >= SWEEP_AT:
            self._sweep()
        self._held.setdefault(bucket, deque()).extend((order.sent, grant) for grant in granted)

    def drop(self, bucket: str) -> None:
        """Forget `bucket`'s spares, and those of its script calls under way (a reply
        taught it something: a penalty, a rate, a filling)."""
        self._held.pop(bucket, None)
        self._drops += 1
        self._dropped[bucket] = self._drops
        if len(self._dropped) >= SWEEP_AT:
            self._dropped.clear()  # calls under way now keep no spares (order.mark < _forgotten)
            self._drops += 1
            self._forgotten = self._drops

    def _sweep(self) -> None:
        """Forget expired spares, and buckets with no spares and no script call lately."""
        oldest = self.clock() - SPARE_LIFE
        self._held = {name: held for name, held in self._held.items() if held[-1][0] >= oldest}
        self._asked = {
            name: pace
            for name, pace in self._asked.items()
            if name in self._held or (pace.since is not None and pace.since >= oldest)
        }
        if len(self._asked) >= SWEEP_AT:  # that many buckets busy at once: estimates start anew
            self._asked.clear()
