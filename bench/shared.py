"""One cluster for both doors: online requests beside a batch job rendering through the same
replicas (`raydiant render --via-serve`), on the SIMULATED GPU engine.

    .venv/bin/python -m bench.shared [--replicas 1,2] [--images-per-replica 480]

No GPU is lent to this project, so each replica is a `sim:flux` engine (cluster/doubles/simulated_gpu.py):
a batch of b images waits base_s + per_image_s * b, like a GPU, and records when it was busy and
which prompts it held. Measured side by side in one run, for 1 and 2 replicas:

- online sync-create latency (DashScope, one client, p50/p95): idle, and while the job keeps the
  replicas saturated (light traffic: one request every `--think-s`);
- the job's images/s alone and beside that online traffic (device-side: job images per second
  between the job's first and last batch, so Ray's start-up does not count), and their ratio;
- each replica's utilization (busy / wall) while the job runs;
- with `mixed_batches` off (the default: an interactive request's device batch holds no job
  images) and on (job images fill its batch);
- autoscaling: a deployment at 1 replica that may grow, and a job: how soon it grows to its
  most, and how soon after the job it is back at 1.

Goals (issue 19): online p50 under the job at most one device batch above idle; the job at least
0.9 of its throughput alone beside light online traffic; utilization at least 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from bench.utilization import percentiles
from cluster.doubles.simulated_gpu import read_busy_intervals, utilization
from serve.local.service import local_service

KEY = "bench-key"
BASE_S, PER_IMAGE_S, BATCH = 0.05, 0.10, 4  # H100 FLUX-schnell's shape, scaled down
DEVICE_BATCH_S = BASE_S + PER_IMAGE_S * BATCH
SIZE = "1024*1024"
ONLINE_PROMPT = "online request"
RAYDIANT = str(Path(sys.executable).parent / "raydiant")

SERVICE = """
models:
  flux-schnell:
    source: "sim:flux"
    warmup: false
    max_batch_size: {batch}
    simulated: {{base_s: {base}, per_image_s: {per}}}
serve:
  rate_limit: {{requests_per_second: 1000, burst: 1000}}
  deployments:
    flux-schnell:
      ray_actor_options: {{num_cpus: 0}}
      max_ongoing_requests: 16
      mixed_batches: {mixed}
      autoscaling: {autoscaling}
tasks: {{path: "{work}/tasks.sqlite"}}
storage: {{root: "{work}/results", signing_key_file: "{work}/signing.key"}}
"""


def ray_address(log: Path) -> str:
    """The Ray cluster `raydiant serve` started, from the line it prints once the app is up."""
    for _ in range(120):
        if found := re.search(r"Ray cluster: (\S+)", log.read_text()):
            return found.group(1)
        time.sleep(0.5)
    raise RuntimeError(f"raydiant serve did not print its Ray cluster address; see {log}")


def create_sync(client: httpx.Client, url: str, seed: int) -> float:
    started = time.perf_counter()
    answer = client.post(f"{url}/api/v1/services/aigc/text2image/image-synthesis", timeout=120,
                         json={"model": "flux-schnell", "input": {"prompt": ONLINE_PROMPT},
                               "parameters": {"size": SIZE, "n": 1, "seed": seed, "steps": 4}})
    assert answer.status_code == 200 and answer.json()["output"]["task_status"] == "SUCCEEDED", answer.text
    return time.perf_counter() - started


class OnlineClient:
    """One client sending a sync create, waiting for it, then `think_s`, until stopped."""

    def __init__(self, url: str, think_s: float):
        self.url, self.think_s = url, think_s
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as client:
            seed = 0
            while not self._stop.is_set():
                self.latencies.append(create_sync(client, self.url, seed))
                seed += 1
                self._stop.wait(self.think_s)

    def __enter__(self) -> "OnlineClient":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


def idle_latencies(url: str, requests: int) -> list[float]:
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        for seed in range(3):
            create_sync(client, url, seed)  # warm connections and code paths
        return [create_sync(client, url, seed) for seed in range(requests)]


def run_job(address: str, prompts: Path, output: Path, log: Path) -> dict:
    env = os.environ | {"RAY_AUTH_MODE": "token"}
    with open(log, "ab") as out:
        done = subprocess.run([RAYDIANT, "render", "--via-serve", "--address", address, "-i", str(prompts),
                               "-o", str(output), "--size", SIZE, "--steps", "4", "--format", "parquet"],
                              stdout=out, stderr=subprocess.STDOUT, env=env, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"the job failed; see {log}")
    return json.loads((output / "summary.json").read_text())


def job_figures(sim_dir: Path, after: float) -> dict:
    """Device-side figures of the job's batches that started after `after`."""
    gpus = {name: [i for i in intervals if i["start"] >= after] for name, intervals in
            read_busy_intervals(sim_dir).items()}
    job = [i for intervals in gpus.values() for i in intervals if any(p != ONLINE_PROMPT for p in i["prompts"])]
    start, end = min(i["start"] for i in job), max(i["end"] for i in job)
    images = sum(sum(p != ONLINE_PROMPT for p in i["prompts"]) for i in job)
    shared = sum(1 for i in job if ONLINE_PROMPT in i["prompts"])
    return {"images_per_s": images / (end - start), "images": images, "batches_with_online": shared,
            "utilization": [round(utilization(intervals, start, end), 3) for intervals in gpus.values() if intervals]}


def scenario(work: Path, replicas: int, mixed: bool, images_per_replica: int, idle_requests: int,
             think_s: float) -> dict:
    name = f"{replicas}-{'mixed' if mixed else 'apart'}"
    sim_dir = work / f"sim-{name}"
    sim_dir.mkdir(parents=True)
    os.environ["RAYDIANT_SIM_DIR"] = str(sim_dir)  # the service's Ray head, so its replicas, inherit it
    service_dir = work / f"svc-{name}"
    config = work / f"service-{name}.yaml"
    config.write_text(SERVICE.format(batch=BATCH, base=BASE_S, per=PER_IMAGE_S, mixed=str(mixed).lower(),
                                     autoscaling=f"{{min_replicas: {replicas}, max_replicas: {replicas}}}",
                                     work=service_dir))
    rows = images_per_replica * replicas
    prompts = work / f"prompts-{rows}.parquet"
    prompts.exists() or pq.write_table(pa.table({"id": [f"r{i}" for i in range(rows)], "prompt": [f"p {i}" for i in range(rows)]}),
                   prompts)
    figures: dict = {"replicas": replicas, "mixed_batches": mixed, "rows": rows}
    with local_service(service_dir, config, api_keys=KEY) as service:
        address = ray_address(service_dir / "serve.log")
        figures["idle"] = percentiles(idle_latencies(service.url, idle_requests))
        started = time.time()
        summary = run_job(address, prompts, work / f"alone-{name}", work / f"job-{name}.log")
        figures["alone"] = job_figures(sim_dir, started) | {"summary_images_per_s": summary["images_per_s"]}
        started = time.time()
        with OnlineClient(service.url, think_s) as online:
            summary = run_job(address, prompts, work / f"beside-{name}", work / f"job-{name}.log")
        figures["beside"] = job_figures(sim_dir, started) | {"summary_images_per_s": summary["images_per_s"]}
        figures["under_job"] = percentiles(online.latencies[1:])  # the first may precede the job's start
        figures["online_requests"] = len(online.latencies)
    return figures


def autoscaling(work: Path, max_replicas: int, rows: int) -> dict:
    """A deployment at 1 replica (target 4 ongoing requests, as configs/cluster.yaml) and a job:
    when the replicas went up, how far, and when they came back down after the job."""
    os.environ["RAY_AUTH_MODE"] = "token"  # read when Ray is imported
    import ray
    from ray import serve

    service_dir = work / "svc-autoscaling"
    config = work / "service-autoscaling.yaml"
    config.write_text(SERVICE.format(batch=BATCH, base=BASE_S, per=PER_IMAGE_S, mixed="false", work=service_dir,
                                     autoscaling=f"{{min_replicas: 1, max_replicas: {max_replicas}, "
                                                 f"target_ongoing_requests: 4, upscale_delay_s: 2, "
                                                 f"downscale_delay_s: 10, look_back_period_s: 4}}"))
    prompts = work / f"prompts-{rows}.parquet"
    prompts.exists() or pq.write_table(pa.table({"id": [f"r{i}" for i in range(rows)],
                                                 "prompt": [f"p {i}" for i in range(rows)]}), prompts)
    seen: list[tuple[float, int]] = []
    stop = threading.Event()
    with local_service(service_dir, config, api_keys=KEY):
        ray.init(address=ray_address(service_dir / "serve.log"), log_to_driver=False, configure_logging=False)

        def watch() -> None:
            while not stop.is_set():
                deployment = serve.status().applications["raydiant"].deployments["model-flux-schnell"]
                seen.append((time.time(), deployment.replica_states.get("RUNNING", 0)))
                stop.wait(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started = time.time()
        run_job(ray_address(service_dir / "serve.log"), prompts, work / "autoscaled", work / "job-autoscaling.log")
        ended = time.time()
        while time.time() < ended + 60 and not (seen and seen[-1][1] == 1 and seen[-1][0] > ended):
            time.sleep(0.5)
        stop.set()
        watcher.join()
        ray.shutdown()
    most = max(count for _, count in seen)
    up_at = next(t for t, count in seen if count == most)
    down_at = next((t for t, count in seen if t > ended and count == 1), None)
    return {"max_replicas": max_replicas, "rows": rows, "most_running": most, "job_s": round(ended - started, 1),
            "to_most_after_start_s": round(up_at - started, 1),
            "back_to_1_after_end_s": round(down_at - ended, 1) if down_at else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", default="1,2", help="Replica counts to measure.")
    parser.add_argument("--mixed", default="false,true", help="mixed_batches settings to measure.")
    parser.add_argument("--images-per-replica", type=int, default=480, help="Job size per replica.")
    parser.add_argument("--idle-requests", type=int, default=30, help="Sequential creates for the idle figures.")
    parser.add_argument("--think-s", type=float, default=2.0, help="Online client's pause between requests.")
    parser.add_argument("--autoscale-to", type=int, default=2, help="max_replicas of the autoscaling run (0: skip).")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raydiant-shared-"))
    print(f"SIMULATED GPU: {BASE_S * 1000:.0f} ms + {PER_IMAGE_S * 1000:.0f} ms per image, batches of {BATCH} "
          f"(a device batch: {DEVICE_BATCH_S * 1000:.0f} ms); {SIZE}; work in {work}", flush=True)
    header = (f"{'replicas':>8} | {'mixed':>5} | {'online p50/p95 idle (ms)':>24} | {'online p50/p95 under job':>24} | "
              f"{'p50 - idle':>10} | {'job img/s alone':>15} | {'beside online':>13} | {'ratio':>5} | "
              f"utilization under job")
    rows = []
    settings = [(int(r), m == "true") for r in args.replicas.split(",") for m in args.mixed.split(",")]
    for replicas, mixed in settings:
        figures = scenario(work, replicas, mixed, args.images_per_replica, args.idle_requests, args.think_s)
        idle, under = figures["idle"], figures["under_job"]
        alone, beside = figures["alone"], figures["beside"]
        rows.append(f"{replicas:>8} | {'yes' if mixed else 'no':>5} | {idle[0] * 1000:>11.0f} / {idle[1] * 1000:<10.0f} | "
                    f"{under[0] * 1000:>11.0f} / {under[1] * 1000:<10.0f} | {(under[0] - idle[0]) * 1000:>8.0f}ms | "
                    f"{alone['images_per_s']:>15.2f} | {beside['images_per_s']:>13.2f} | "
                    f"{beside['images_per_s'] / alone['images_per_s']:>5.2f} | "
                    f"alone {alone['utilization']}, beside {beside['utilization']}")
        print(f"\n{json.dumps(figures)}", flush=True)
    print(f"\n{header}\n" + "\n".join(rows))
    if args.autoscale_to:
        scaled = autoscaling(work, args.autoscale_to, args.images_per_replica * args.autoscale_to)
        print(f"\nautoscaling with a job (min 1, max {args.autoscale_to}, target 4): {json.dumps(scaled)}")
    print(f"\n(one device batch of {BATCH}: {DEVICE_BATCH_S * 1000:.0f} ms; goal: p50 - idle <= that, ratio >= 0.9, "
          f"utilization >= 0.95)")


if __name__ == "__main__":
    main()
