"""`Assembly`: which shards have every unit back, so that the driver can commit them.

Units come back in any order, from any actor. The driver hears each unit's stats once it wrote
its part, and commits a shard (`jobs/output/assembly.py`) once the last of its units is back. It
holds, for each shard with units still out, the names of the units back so far (a shard's
units: shard size / unit size of them), and the names of the shards handed on: per shard, never
per image. A unit heard twice (Ray ran its task again) counts once.
"""

from __future__ import annotations

from jobs.output.unit_part import UnitStats


class Assembly:
    def __init__(self) -> None:
        self.open: dict[str, set[str]] = {}  # shard -> units back
        self.closed: set[str] = set()  # shards handed on to be committed

    def add(self, stats: UnitStats) -> bool:
        """Hear one unit; False when it was heard before (its counts are counted already)."""
        if stats.shard in self.closed:
            return False
        back = self.open.setdefault(stats.shard, set())
        if stats.unit in back:
            return False
        back.add(stats.unit)
        return True

    def complete(self, stats: UnitStats) -> list[str] | None:
        """The units of `stats`' shard in input order, once every one is back (the shard is then
        closed: asked again, None)."""
        back = self.open.get(stats.shard)
        if back is None or len(back) < stats.units:
            return None
        del self.open[stats.shard]
        self.closed.add(stats.shard)
        return sorted(back)
