"""A real multi-node Ray cluster on this one machine, for the many-node scenarios.

Every use of Ray's developer API `ray.cluster_utils.Cluster` lives in this module; it was written
against Ray 2.60 (pinned in pyproject.toml). A head with no CPUs (drivers attach to it, as on a
real cluster whose head has no GPU) and worker nodes that may advertise `num_gpus=1`, so GPU
placement is exercised without CUDA. Each raylet takes free ports (never Ray's defaults) and the
cluster has a temporary directory of its own. Failure detection is quicker than Ray's default
(about 30 s): a node that stops answering is declared dead after about 10 s. Not quicker: on a
loaded 2-core machine a live raylet can miss a few 1 s health checks in a row, and a healthy
node declared dead takes its actors with it (seen in CI at a 3 s threshold). Ray's own test
helpers are not in the wheels, so the small waits here are ours. At most 4 raylets at once on
this 2-core machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import ray
from ray.cluster_utils import Cluster

from cluster.runtime.processes import free_ports

MAX_RAYLETS = 4
FAST_FAILURE_DETECTION = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 10,
}


@dataclass
class LocalCluster:
    cluster: Cluster
    temp_dir: str
    dashboard_url: str  # Ray's state API, asked by URL: never "whichever Ray is on this machine"
    workers: list = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_worker(self, num_cpus: int = 1, num_gpus: int = 0, **resources) -> str:
        """A worker node; returns its node id."""
        assert 1 + len(self.workers) < MAX_RAYLETS, f"at most {MAX_RAYLETS} raylets on this machine"
        agent, metrics = free_ports(2)
        node = self.cluster.add_node(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources or None,
                                     dashboard_agent_listen_port=agent, metrics_export_port=metrics,
                                     temp_dir=self.temp_dir)
        self.workers.append(node)
        return node.node_id

    def kill_worker(self, node_id: str) -> None:
        """SIGKILL a worker node's raylet and everything on it (no draining)."""
        node = next(n for n in self.workers if n.node_id == node_id)
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def wait_for_nodes(self) -> None:
        self.cluster.wait_for_nodes()

    def alive_nodes(self) -> set[str]:
        return {n["NodeID"] for n in ray.nodes() if n["Alive"]}

    @property
    def head_id(self) -> str:
        return self.cluster.head_node.node_id

    def actors_by_node(self, class_part: str, state: str = "ALIVE") -> dict[str, list[str]]:
        """Node id -> ids of the actors whose class name contains `class_part`, in `state`."""
        from ray.util.state import list_actors

        placed: dict[str, list[str]] = {}
        for actor in list_actors(address=self.dashboard_url, filters=[("state", "=", state)], limit=10_000):
            if class_part in actor.class_name:
                placed.setdefault(actor.node_id, []).append(actor.actor_id)
        return placed


@contextmanager
def local_cluster(head_gpus: int = 0) -> Iterator[LocalCluster]:
    """The head only (no CPUs; `head_gpus` fake GPUs, for a fourth device beside three workers);
    add workers with `add_worker`. The caller's process is attached as a driver for the length
    of the block."""
    temp_dir = tempfile.mkdtemp(prefix="raydiant-mn-", dir="/tmp")  # short: Ray's socket paths
    # `Cluster` records its address in /tmp/ray/ray_current_cluster whatever its temp_dir, and
    # fails when that folder is missing (on a machine where no Ray ran before, or tests run alone).
    os.makedirs("/tmp/ray", exist_ok=True)
    agent, metrics, dashboard = free_ports(3)
    # The dashboard serves Ray's state API (where actors run); on a free port, loopback only.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "num_gpus": head_gpus, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": dashboard, "dashboard_agent_listen_port": agent, "metrics_export_port": metrics,
        "temp_dir": temp_dir,
        "_system_config": FAST_FAILURE_DETECTION})
    handle = LocalCluster(cluster, temp_dir, f"http://127.0.0.1:{dashboard}")
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        yield handle
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.2) -> float:
    """Seconds until `condition()` held; fails naming `what` after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s:g}s")
        time.sleep(every_s)
    return time.monotonic() - started
