from cluster.engine.batching import plan_batches


def test_groups_by_key_in_first_seen_order_and_chunks():
    items = ["a1", "b1", "a2", "a3", "b2", "a4", "c1"]
    plan = plan_batches(items, key=lambda s: s[0], max_batch_size=3)
    assert plan == [["a1", "a2", "a3"], ["a4"], ["b1", "b2"], ["c1"]]


def test_batch_size_one_keeps_every_item_alone():
    assert plan_batches([1, 2, 3], key=lambda _: 0, max_batch_size=1) == [[1], [2], [3]]


def test_rejects_non_positive_batch_size():
    import pytest

    with pytest.raises(ValueError, match="max_batch_size"):
        plan_batches([1], key=lambda _: 0, max_batch_size=0)
