"""The driver's bookkeeping of units (jobs/driver/assembly.py): a shard is handed on once, when its
last unit is back, whatever order units come in and however often Ray re-ran one."""

from __future__ import annotations

from jobs.driver.assembly import Assembly
from jobs.output.unit_part import UnitStats


def unit(shard: str, name: str, units: int = 3) -> UnitStats:
    return UnitStats(shard, name, units, rendered=2, failed=0, retryable=0)


def test_a_shard_completes_once_with_its_units_in_input_order():
    assembly = Assembly()
    arrivals = [unit("000001", "b"), unit("000000", "x", units=1), unit("000001", "c"), unit("000001", "b"),
                unit("000001", "a")]
    heard, completed = [], []
    for stats in arrivals:
        heard.append(assembly.add(stats))
        if (units := assembly.complete(stats)) is not None:
            completed.append((stats.shard, units))
    assert heard == [True, True, True, False, True]  # the second "b" is a re-run: counted once
    assert completed == [("000000", ["x"]), ("000001", ["a", "b", "c"])]
    assert not assembly.open
    assert assembly.add(unit("000001", "a")) is False and assembly.complete(unit("000001", "a")) is None
