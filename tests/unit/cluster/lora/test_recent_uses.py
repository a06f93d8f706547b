import pytest

from cluster.lora.recent_uses import RecentUses


def test_counts_uses_and_halves_them_every_window():
    uses = RecentUses(window=4)
    for key in ("a", "a", "a"):
        uses.note(key)
    assert uses.count("a") == 3 and uses.count("b") == 0
    uses.note("b")  # the 4th use: counts halve, b's single use fades
    assert uses.count("a") == 1 and uses.count("b") == 0


def test_the_table_stays_bounded_however_many_keys_pass():
    uses = RecentUses(window=10)
    for i in range(100_000):
        uses.note(f"set-{i}")
        uses.note("hot")
        assert len(uses) <= 2 * uses.window
    assert uses.count("hot") >= 4


def test_a_window_below_one_is_refused():
    with pytest.raises(ValueError, match="window"):
        RecentUses(0)
