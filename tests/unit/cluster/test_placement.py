"""The placement rule of render actors (cluster/placement.py): from the cluster's GPUs, never
the driver's."""

from __future__ import annotations

import pytest

from cluster.placement import GpuCapacity, missing_gpus, plan_actor_pool


@pytest.mark.parametrize(("capacity", "gpus", "concurrency", "expected"), [
    (GpuCapacity(0, 0), None, None, (0, 1, 1)),  # a CPU cluster: one CPU actor, as before
    (GpuCapacity(0, 0), None, (2, 3), (0, 2, 3)),
    (GpuCapacity(1, 1), None, None, (1, 1, 1)),  # one GPU node
    (GpuCapacity(16, 16), None, None, (1, 16, 16)),  # every GPU from the start, with no flag
    (GpuCapacity(2, 8), None, None, (1, 2, 8)),  # the GPUs there are, then what the autoscaler adds
    (GpuCapacity(0, 8), None, None, (1, 1, 8)),  # scaled to zero: still GPU actors, never CPU ones
    (GpuCapacity(0, None), None, None, (1, 1, 1)),  # unbounded autoscaler: GPU actors, grow with --concurrency
    (GpuCapacity(16, 16), None, (2, 4), (1, 2, 4)),  # the user caps it
    (GpuCapacity(8, 8), 2, None, (2, 4, 4)),  # two GPUs per actor
    (GpuCapacity(8, 8), 0, None, (0, 1, 1)),  # CPU actors on a GPU cluster, when asked
])
def test_pool_from_cluster_gpus(capacity, gpus, concurrency, expected):
    pool = plan_actor_pool(capacity, gpus, concurrency)
    assert (pool.gpus_per_worker, pool.min_workers, pool.max_workers) == expected
    assert pool.describe().startswith("render actors:")


def test_cpu_actors_leave_a_cpu_for_reading():
    pool = plan_actor_pool(GpuCapacity(0, 0), None, (4, 4), cpus=4)
    assert (pool.min_workers, pool.max_workers) == (3, 3) and "reading the input" in pool.why
    assert plan_actor_pool(GpuCapacity(0, 0), None, None, cpus=1).max_workers == 1  # never below one
    assert plan_actor_pool(GpuCapacity(2, 2), None, None, cpus=2).max_workers == 2  # GPU actors: not capped


def test_models_needing_gpus_the_cluster_cannot_have_are_named():
    needs = {"flux-schnell": 1.0, "stable-diffusion-xl": 0.0}
    assert missing_gpus(needs, GpuCapacity(2, 2)) == []
    assert missing_gpus(needs, GpuCapacity(0, 4)) == []  # the autoscaler will add them
    assert missing_gpus(needs, GpuCapacity(0, None)) == []
    (problem,) = missing_gpus(needs, GpuCapacity(0, 0))
    assert problem.startswith("model flux-schnell: each replica needs 1 GPU(s), but the cluster has 0")
