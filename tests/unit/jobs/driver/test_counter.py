"""The driver's image counter (jobs/driver/counter.py): two integers, whatever the number of
images, summed from every actor's reports."""

from __future__ import annotations

import sys

from jobs.driver.counter import ImageCounter


def test_reports_add_up_and_the_counter_stays_two_numbers():
    counter = ImageCounter()
    size = sys.getsizeof(counter.__dict__)
    for _ in range(10_000):  # a shard's worth of per-batch reports
        counter.add(3, 1)
    assert counter.read() == (30_000, 10_000)
    assert set(counter.__dict__) == {"rendered", "failed"} and sys.getsizeof(counter.__dict__) == size
