"""The online service on a real multi-node Ray cluster (tests/multinode.py), started the way a user
types it: `RAYDIANT_API_KEYS=... raydiant serve --address CLUSTER`. The keys exist only in that
command's environment, so a working service proves they reached replicas on other nodes (through
the secret holder: neither Serve's checkpoint nor its status holds them).

- A model needing more GPUs than the cluster can ever have fails at deploy, naming the model.
- Autoscaling: a model at 0 replicas holds a request (not refused) while a replica starts, scales
  up under a burst and back to 0 when idle (replica counts from `serve.status()`).
- Node loss: replicas on GPU worker nodes, one node SIGKILLed under steady traffic: every task
  ends terminal with its images, and /healthz is 200 again within 30 s. A create answered 429
  for the key's share of the queue is retried after its Retry-After, as a client would: while
  the lost node's tasks hold their dispatch slots (counted in images), the key's queue may fill.

One cluster for the module: a head without CPUs and three GPU-advertising workers (4 raylets).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from ray import serve
from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_list

from cluster.spec.catalogue import deployment_name
from tests.multinode import local_cluster, wait_until
from tests.servers import local_service

KEY = "multinode-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CONFIG = """
models:
  flux-schnell: {{source: "tiny:flux", warmup: false}}
  flux-dev: {{source: "tiny:flux", warmup: false}}
serve:
  lease_s: 3
  rate_limit: {{requests_per_second: 1000, burst: 2000}}  # the test polls many tasks
  deployments:
    flux-schnell:  # one replica per GPU node
      ray_actor_options: {{num_gpus: 1, num_cpus: 0}}
      autoscaling: {{min_replicas: 2, max_replicas: 2}}
    flux-dev:  # scales from 0, quickly
      ray_actor_options: {{num_cpus: 0.5}}
      max_ongoing_requests: 1
      autoscaling: {{min_replicas: 0, max_replicas: 2, target_ongoing_requests: 1, upscale_delay_s: 0.5,
                    downscale_delay_s: 4, look_back_period_s: 2}}
tasks: {{path: "{work}/tasks.sqlite"}}
storage: {{root: "{work}/results", signing_key_file: "{work}/signing.key"}}
"""
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED"}


@pytest.fixture(scope="module")
def cluster():
    with local_cluster() as running:
        for _ in range(3):
            running.add_worker(num_cpus=2, num_gpus=1)
        running.wait_for_nodes()
        yield running


@pytest.fixture(scope="module")
def service(cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("multinode-serve")
    config = work / "config.yaml"
    config.write_text(CONFIG.format(work=work))
    with local_service(work, config, api_keys=KEY,
                       extra_args=("--address", cluster.address, "--proxy-location", "HeadOnly")) as running:
        yield running


def create_answer(service, model: str, **parameters) -> httpx.Response:
    return httpx.post(f"{service.url}/api/v1/services/aigc/text2image/image-synthesis", timeout=30,
                      headers=AUTH | {"X-DashScope-Async": "enable"},
                      json={"model": model, "input": {"prompt": "many nodes"}, "parameters": parameters})


def create(service, model: str, **parameters) -> str:
    answer = create_answer(service, model, **parameters)
    assert answer.status_code == 200, answer.text
    return answer.json()["output"]["task_id"]


def output(service, task_id: str) -> dict:
    answer = httpx.get(f"{service.url}/api/v1/tasks/{task_id}", headers=AUTH, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["output"]


def wait_terminal(service, task_ids, timeout_s=240) -> dict[str, dict]:
    outputs: dict[str, dict] = {}
    wait_until(lambda: all((outputs.__setitem__(t, output(service, t)) or outputs[t]["task_status"] in TERMINAL)
                           for t in task_ids), timeout_s, f"{len(task_ids)} tasks terminal", every_s=0.5)
    return outputs


def replicas(model: str) -> int:
    """RUNNING replicas of `model`'s deployment, in Serve's own view."""
    app = serve.status().applications.get("raydiant")
    deployment = app.deployments.get(deployment_name(model)) if app else None
    return deployment.replica_states.get("RUNNING", 0) if deployment else 0


def test_a_model_the_cluster_cannot_place_fails_at_deploy(cluster, tmp_path):
    config = tmp_path / "gpus.yaml"
    config.write_text(CONFIG.format(work=tmp_path).replace("{num_gpus: 1, num_cpus: 0}", "{num_gpus: 4}"))
    raydiant = Path(sys.executable).parent / "raydiant"
    result = subprocess.run([str(raydiant), "serve", "--address", cluster.address, "--config", str(config)],
                            capture_output=True, text=True, timeout=120, env={**__import__("os").environ,
                                                                              "RAYDIANT_API_KEYS": KEY})
    assert result.returncode == 2
    assert "model flux-schnell: each replica needs 4 GPU(s), but the cluster has 3" in result.stderr


def test_keys_set_where_the_command_runs_reach_every_replica_unprinted(cluster, service, tmp_path_factory):
    schnell = cluster.actors_by_node(deployment_name("flux-schnell"))
    assert len(schnell) == 2 and cluster.head_id not in schnell  # one per GPU node, none on the head
    # The cluster's nodes were started without RAYDIANT_API_KEYS: the ingress knows the key only
    # because `raydiant serve` carried it.
    task_id = create(service, "flux-schnell", steps=1)
    assert wait_terminal(service, [task_id])[task_id]["task_status"] == "SUCCEEDED"
    assert httpx.get(f"{service.url}/api/v1/tasks/{task_id}", timeout=30,
                     headers={"Authorization": "Bearer not-the-key"}).status_code == 401
    assert KEY not in str(serve.status())
    logs = "".join(p.read_text(errors="replace") for p in Path(cluster.temp_dir).rglob("*.log") if p.is_file())
    assert KEY not in logs and KEY not in str(serve.status())
    # Nor in Serve's checkpoint in the GCS (deployment arguments; Redis under GCS fault tolerance).
    checkpoint = [_internal_kv_get(k, namespace=b"serve") or b"" for k in _internal_kv_list(b"", namespace=b"serve")]
    assert checkpoint and not any(KEY.encode() in value for value in checkpoint)


def test_autoscaling_from_zero_up_under_a_burst_and_back_to_zero(service, record_property):
    assert replicas("flux-dev") == 0
    started = time.monotonic()
    first = create(service, "flux-dev", steps=1)  # arrives at 0 replicas: held, not refused
    assert wait_terminal(service, [first])[first]["task_status"] == "SUCCEEDED"
    cold_start_s = time.monotonic() - started
    # The burst comes at once, onto the one replica the first request started (waiting for it to
    # go back to 0 first would prove nothing the end of the test does not, at a replica start).
    burst_started = time.monotonic()
    burst = [create(service, "flux-dev", steps=30, seed=i) for i in range(6)]
    up_s = wait_until(lambda: replicas("flux-dev") == 2, 90, "flux-dev scaled to 2 replicas")
    outputs = wait_terminal(service, burst)
    assert all(o["task_status"] == "SUCCEEDED" for o in outputs.values())
    idle_started = time.monotonic()
    down_s = wait_until(lambda: replicas("flux-dev") == 0, 90, "flux-dev back to 0 replicas after the burst")
    figures = {"cold_start_request_s": round(cold_start_s, 1), "burst_to_2_replicas_s": round(up_s, 1),
               "burst_total_s": round(idle_started - burst_started, 1), "idle_to_0_replicas_s": round(down_s, 1)}
    record_property("autoscaling", figures)
    print(f"\nautoscaling: {figures}")


def test_node_killed_under_steady_traffic(cluster, service, record_property):
    # A node with a model replica, not the one the ingress runs on: this is the loss of replicas
    # under traffic (the ingress's own death is tests/chaos/test_service_resilience.py's).
    schnell = cluster.actors_by_node(deployment_name("flux-schnell"))
    ingress = cluster.actors_by_node("ServeReplica:raydiant:ingress")
    victim = next(node for node in schnell if node not in ingress)
    submitted: list[str] = []
    refused: list[BaseException] = []
    held_back = []  # 429s for the key's share of the queue: back-pressure, retried as a client would
    stop = threading.Event()

    def traffic() -> None:
        try:
            while not stop.is_set():
                answer = create_answer(service, "flux-schnell", steps=2, n=2)
                if answer.status_code == 429 and answer.json()["code"] == "Throttling.RateQuota":
                    held_back.append(answer)
                    time.sleep(min(float(answer.headers["Retry-After"]), 5.0))
                    continue
                assert answer.status_code == 200, answer.text
                submitted.append(answer.json()["output"]["task_id"])
                time.sleep(0.3)
        except BaseException as exc:  # noqa: BLE001 - reported by the waits below
            refused.append(exc)

    def flowing(count: int) -> bool:
        assert not refused, f"a create failed: {refused[0]}"
        return len(submitted) >= count

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    wait_until(lambda: flowing(5), 60, "traffic flowing")
    before_kill = len(submitted)
    cluster.kill_worker(victim)
    killed_at = time.monotonic()
    # Creates go on being accepted through the loss: until Ray has declared the node dead, and at
    # least 6 after the kill (counted, not timed: a loaded machine is slower, not wrong).
    wait_until(lambda: flowing(before_kill + 6) and victim not in cluster.alive_nodes(), 120,
               "creates accepted until the lost node was declared dead")
    stop.set()
    sender.join()
    healthy_s = wait_until(lambda: httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200, 30,
                           "/healthz 200 after the node loss") + (time.monotonic() - killed_at)
    outputs = wait_terminal(service, submitted)
    for task_id, result in outputs.items():
        assert result["task_status"] == "SUCCEEDED", (task_id, result)
        assert result["task_metrics"] == {"TOTAL": 2, "SUCCEEDED": 2, "FAILED": 0}
    record_property("node_loss", {"tasks": len(submitted), "healthz_200_after_kill_s": round(healthy_s, 1),
                                  "held_back_429": len(held_back)})
    print(f"\nnode loss: {len(submitted)} tasks all SUCCEEDED ({len(held_back)} creates held back by 429 and "
          f"retried); /healthz 200 {healthy_s:.1f}s after the kill")
