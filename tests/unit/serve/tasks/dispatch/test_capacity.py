"""Dispatch slots from the running replicas (serve/tasks/dispatch/capacity.py)."""

from __future__ import annotations

import pytest

from serve.tasks.dispatch.capacity import ModelCapacity


@pytest.mark.parametrize("running, slots", [
    (0, 8),   # scaled to zero: one replica's worth wakes it
    (1, 16),  # one running, and one more replica's worth while it can grow
    (3, 32),
    (4, 32),  # at its maximum: just what the replicas need
])
def test_two_device_batches_per_replica_and_one_replica_more_while_it_can_grow(running, slots):
    assert ModelCapacity(max_batch_size=4, max_ongoing_requests=16, min_replicas=0, max_replicas=4).slots(running) == slots


def test_never_more_than_a_replica_takes_and_shared_by_the_ingresses():
    capacity = ModelCapacity(max_batch_size=4, max_ongoing_requests=1, min_replicas=1, max_replicas=2)
    assert capacity.slots(1) == 2 and capacity.slots(2) == 2
    assert ModelCapacity(4, 16, 1, 1, ingresses=2).slots(1) == 4


def test_before_the_first_count_the_minimum_is_assumed():
    assert ModelCapacity(4, 16, min_replicas=2, max_replicas=2).slots() == 16
