"""Spare turns: rate-limit turns this process took ahead of its calls, handed out locally.

Under load every upstream call of a rate-limited app would cost a store round
trip for its turn, even when its buckets are nearly empty. So each script
call for a bucket also asks for spare turns: as many as calls came for the
bucket since its previous script call (the demand one round trip sees), at
most SPARES_MAX. The store grants a spare only while the bucket stays at most
half full (gcra.spare): a bucket that calls queue for, or that nears its
limit, hands out no spares, and every call there takes its turn in order.

A spare is a real turn: the bucket counted it when it was taken, so every
replica's turns together still keep rate and burst. It is handed to a call of
this process within SPARE_LIFE of being taken, else dropped (its turn goes
unused: the bucket lets fewer calls through, never more). So a spare reaches
the platform at most SPARE_LIFE after its turn, the lateness the shaper
accepts of any turn (LATE_WAKE). A lesson for a bucket (a penalty, a lower
rate) drops its spares here at once; one that another replica learned holds
this one's calls back within SPARE_LIFE, as PENALTY_POLL does for buckets
without a rate of their own.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from authproxy.store.gcra import Grant

#: seconds a spare turn may be handed out after it was taken
SPARE_LIFE = 0.05
#: most spares one script call asks for
SPARES_MAX = 64
#: buckets held or counted, past which expired ones are swept
SWEEP_AT = 1024


class Spares:
    """Spare turns per bucket (its store key), and the calls asked for each since its last
    script call."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._held: dict[str, deque[tuple[float, Grant]]] = {}
        self._asked: dict[str, int] = {}

    def asked(self, bucket: str) -> None:
        """A call wants a turn in `bucket` (counted whether a spare serves it or not)."""
        count = self._asked.get(bucket)
        if count is None and len(self._asked) >= SWEEP_AT:
            self._sweep()
        self._asked[bucket] = (count or 0) + 1

    def take(self, bucket: str) -> Grant | None:
        """A spare turn of `bucket` still fresh, or None."""
        held = self._held.get(bucket)
        if held is None:
            return None
        oldest = self.clock() - SPARE_LIFE
        while held:
            taken, grant = held.popleft()
            if taken >= oldest:
                if not held:
                    del self._held[bucket]
                return grant
        del self._held[bucket]
        return None

    def wanted(self, bucket: str) -> int:
        """How many spares a script call for `bucket` asks for now; the count starts anew."""
        return min(self._asked.pop(bucket, 0), SPARES_MAX)

    def keep(self, bucket: str, grants: Sequence[Grant]) -> None:
        """Hold the spares a script call granted."""
        granted = [grant for grant in grants if grant.admitted]
        if not granted:
            return
        if len(self._held) >= SWEEP_AT:
            self._sweep()
        now = self.clock()
        self._held.setdefault(bucket, deque()).extend((now, grant) for grant in granted)

    def drop(self, bucket: str) -> None:
        """Forget `bucket`'s spares (it learned a penalty or a lower rate)."""
        self._held.pop(bucket, None)

    def _sweep(self) -> None:
        """Forget expired spares, and counts of buckets without spares (a count only sizes
        the next script call's spares)."""
        oldest = self.clock() - SPARE_LIFE
        self._held = {name: held for name, held in self._held.items() if held[-1][0] >= oldest}
        self._asked = {name: count for name, count in self._asked.items() if name in self._held}
