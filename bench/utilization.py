"""How much of each GPU's time goes to denoising, at both doors, on the SIMULATED GPU engine.

    .venv/bin/python -m bench.utilization

No GPU is lent to this project, so the engine is `sim:flux` (cluster/doubles/simulated_gpu.py): each batch
waits `base_s + per_image_s * batch` like a GPU would, and records when it was busy. Reported,
all measured in this one run on loopback:

- online, 1 client: latency of a synchronous DashScope create minus the engine's own time
  (p50/p95), next to a bare two-deployment Ray Serve app doing the same hops (its floor);
- online, saturated: utilization = busy time / wall time per simulated GPU, with 1 and 4 replicas;
- batch: the Ray Data job's utilization with 1 and 4 simulated GPUs in steady state, and its
  images/s with the FAKE engine (solid colours, no engine time: the plumbing's ceiling).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from cluster.doubles.simulated_gpu import read_busy_intervals, utilization
from serve.local.service import local_service

KEY = "bench-key"
BASE_S, PER_IMAGE_S = 0.05, 0.10  # H100 FLUX-schnell's shape (0.10 + 0.35 per image), scaled down
SIZE = "1024*1024"

SERVICE = """
models:
  flux-schnell:
    source: "sim:flux"
    warmup: false
    max_batch_size: 4
    simulated: {{base_s: {base}, per_image_s: {per}}}
serve:
  rate_limit: {{requests_per_second: 100000, burst: 100000}}
  max_queued_per_model: 1000
  deployments:
    flux-schnell:
      ray_actor_options: {{num_cpus: 0}}
      max_ongoing_requests: 32
      autoscaling: {{min_replicas: {replicas}, max_replicas: {replicas}}}
tasks: {{path: "{work}/tasks.sqlite"}}
storage: {{root: "{work}/results", signing_key_file: "{work}/signing.key"}}
"""


def engine_s(images: int) -> float:
    return BASE_S + PER_IMAGE_S * images


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


# --- online -------------------------------------------------------------------------------------


def create_sync(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    answer = client.post(f"{url}/api/v1/services/aigc/text2image/image-synthesis", timeout=120,
                         json={"model": "flux-schnell", "input": {"prompt": "bench"},
                               "parameters": {"size": SIZE, "n": 1, "seed": 1}})
    assert answer.status_code == 200 and answer.json()["output"]["task_status"] == "SUCCEEDED", answer.text
    return time.perf_counter() - started


def one_client_overhead(url: str, requests: int) -> tuple[float, float]:
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        for _ in range(3):
            create_sync(client, url)  # warm connections and code paths
        latencies = [create_sync(client, url) for _ in range(requests)]
    return percentiles([1000 * (latency - engine_s(1)) for latency in latencies])


async def saturate(url: str, clients: int, seconds: float) -> tuple[float, float]:
    """Keep `clients` synchronous creates in flight for `seconds`; returns the window measured."""
    stop_at = time.time() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.time() < stop_at:
            answer = await client.post(f"{url}/api/v1/services/aigc/text2image/image-synthesis", timeout=300,
                                       json={"model": "flux-schnell", "input": {"prompt": "load"},
                                             "parameters": {"size": SIZE, "n": 1}})
            assert answer.status_code == 200, answer.text

    started = time.time()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"},
                                 limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    # Steady state: skip the first and last fifth (ramp-up, drain).
    span = time.time() - started
    return started + span / 5, started + span * 4 / 5


def online(work: Path, replicas: int, one_client: int, load_s: float) -> dict:
    sim_dir = work / f"sim-online-{replicas}"
    sim_dir.mkdir(parents=True)
    os.environ["RAYDIANT_SIM_DIR"] = str(sim_dir)  # the service's Ray head, so its replicas, inherit it
    config = work / f"online-{replicas}.yaml"
    config.write_text(SERVICE.format(base=BASE_S, per=PER_IMAGE_S, replicas=replicas, work=work / f"svc-{replicas}"))
    figures: dict = {}
    with local_service(work / f"svc-{replicas}", config, api_keys=KEY) as service:
        if one_client:
            figures["p50_ms"], figures["p95_ms"] = one_client_overhead(service.url, one_client)
        start, end = asyncio.run(saturate(service.url, clients=8 * replicas, seconds=load_s))
    gpus = read_busy_intervals(sim_dir)
    figures["utilization"] = [round(utilization(intervals, start, end), 3) for intervals in gpus.values()]
    batches = [i["batch"] for intervals in gpus.values() for i in intervals if start <= i["start"] <= end]
    figures["mean_batch"] = round(statistics.mean(batches), 2) if batches else 0
    return figures


def bare_serve_floor(requests: int) -> tuple[float, float]:
    """The same two hops with nothing of raydiant (bench/online.py `bare_serve_app`), its model
    deployment waiting the engine's time for one image."""
    from bench.online import bare_serve_app

    with bare_serve_app(engine_s=engine_s(1)) as url, httpx.Client() as client:
        def call() -> float:
            started = time.perf_counter()
            assert client.post(url, timeout=60).status_code == 200
            return time.perf_counter() - started
        for _ in range(3):
            call()
        latencies = [call() for _ in range(requests)]
    return percentiles([1000 * (latency - engine_s(1)) for latency in latencies])


# --- batch --------------------------------------------------------------------------------------


def batch_job(work: Path, source: str, actors: int, rows: int) -> dict:
    from cluster.runtime.local_ray import connect
    from jobs.driver.job import run_job
    from jobs.driver.spec import JobSpec

    name = f"{source.split(':')[0]}-{actors}"
    sim_dir = work / f"sim-batch-{name}"
    sim_dir.mkdir(parents=True)
    os.environ["RAYDIANT_SIM_DIR"] = str(sim_dir)
    config = work / f"batch-{name}.yaml"
    config.write_text(f"models:\n  flux-schnell:\n    source: \"{source}\"\n    warmup: false\n"
                      f"    simulated: {{base_s: {BASE_S}, per_image_s: {PER_IMAGE_S}}}\n")
    prompts = work / f"prompts-{rows}.parquet"
    if not prompts.exists():
        pq.write_table(pa.table({"id": [f"r{i}" for i in range(rows)], "prompt": [f"p {i}" for i in range(rows)]}),
                       prompts)
    spec = JobSpec(input=str(prompts), output=str(work / f"out-{name}"), config=str(config), batch_size=4,
                   concurrency=(actors, actors), gpus_per_worker=0, format="parquet",
                   defaults={"model": "flux-schnell", "width": 1024, "height": 1024, "steps": 4})
    with connect(num_cpus=actors + 2):  # each render actor takes a CPU; reading and expanding need some too
        summary = run_job(spec)
    figures = {"images_per_s": summary.images_per_s, "seconds": summary.seconds}
    gpus = read_busy_intervals(sim_dir)
    if gpus:
        starts = [i["start"] for intervals in gpus.values() for i in intervals]
        ends = [i["end"] for intervals in gpus.values() for i in intervals]
        # Steady state: from when the last GPU got its first batch to when the first ran dry.
        start = max(min(i["start"] for i in intervals) for intervals in gpus.values())
        end = min(max(i["end"] for i in intervals) for intervals in gpus.values())
        if end <= start:
            start, end = min(starts), max(ends)
        figures["utilization"] = [round(utilization(intervals, start, end), 3) for intervals in gpus.values()]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30, help="Sequential requests for the latency figures.")
    parser.add_argument("--load-s", type=float, default=20, help="Seconds of saturating load per replica count.")
    parser.add_argument("--rows", type=int, default=240, help="Prompts per simulated batch job.")
    parser.add_argument("--fake-rows", type=int, default=2000, help="Prompts of the FAKE-engine job.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raydiant-utilization-"))
    print(f"SIMULATED GPU: base {BASE_S * 1000:.0f} ms + {PER_IMAGE_S * 1000:.0f} ms per image; {SIZE}; "
          f"work in {work}", flush=True)

    floor = bare_serve_floor(args.requests)
    one = online(work, replicas=1, one_client=args.requests, load_s=args.load_s)
    print("\nonline, 1 client: latency over the engine's own time (ms)")
    print(f"  bare two-deployment Serve app:  p50 {floor[0]:6.1f}   p95 {floor[1]:6.1f}")
    print(f"  raydiant (DashScope, sync):     p50 {one['p50_ms']:6.1f}   p95 {one['p95_ms']:6.1f}   "
          f"(+{one['p50_ms'] - floor[0]:.1f} ms over the floor at p50)")
    print("online, saturated: utilization per simulated GPU (busy / wall), mean batch size")
    print(f"  1 replica:   {one['utilization']}   mean batch {one['mean_batch']}", flush=True)
    four = online(work, replicas=4, one_client=0, load_s=args.load_s)
    print(f"  4 replicas:  {four['utilization']}   mean batch {four['mean_batch']}", flush=True)
    print("batch (Ray Data job): utilization per simulated GPU in steady state", flush=True)
    for actors, rows in ((1, args.rows), (4, args.rows * 4)):
        figures = batch_job(work, "sim:flux", actors=actors, rows=rows)
        print(f"  {actors} GPU(s): {figures.get('utilization')}   {figures['images_per_s']:.2f} img/s", flush=True)
    fake = batch_job(work, "fake:flux", actors=1, rows=args.fake_rows)
    print(f"  FAKE engine (plumbing ceiling, 1 actor, {SIZE}): {fake['images_per_s']:.1f} img/s")


if __name__ == "__main__":
    main()
