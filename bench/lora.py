"""LoRA adapters per request: what a new adapter costs, what switching costs, how often Serve's
routing finds a replica that holds a request's set, and throughput with and without adapters.

    .venv/bin/python -m bench.lora [--requests 240] [--zipf 1.5,2.0] [--parts core,compiled,service]

On this machine's CPU with the tiny FLUX pipeline and tiny adapters made on the spot (rank 4):
the load and switch figures are the plumbing's (PEFT injection, `set_adapters`), not a GPU's
copy of real adapter weights. Measured in one run:

1. In the render core (one `Renderer`): the first batch with a new adapter (fetch from the
   local root + load) against a batch of a set already loaded, and a switch between two kept
   sets, each against the same batch without adapters (medians of 10).
2. On a compiled model (torch.compile on this CPU; cluster/lora/hotswap.py's one adapter slot of
   rank 16): the same batches, beside the same compiled model without a slot (what the slot
   costs a request without adapters), with dynamo's recompiles made errors throughout.
3. Through the service (real Serve, 2 replicas of tiny FLUX, 3 adapter-set slots each, DashScope
   sync creates from 4 clients): requests whose single adapter is drawn from 20 by a Zipf law
   of exponent s; the warm-hit rate is the share of device batches whose set their replica
   held already (each replica's own count), after a warm-up of the first quarter, beside the
   best any routing could do (the 6 most frequent sets' share); img/s of the same workload
   without adapters, side by side.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

KEY = "bench-lora-key"
ADAPTERS, REPLICAS, SLOTS = 20, 2, 3
SERVICE = """
models:
  flux-schnell: {{source: "tiny:flux", warmup: false, lora_slots: {slots}}}
serve:
  rate_limit: {{requests_per_second: 1000, burst: 1000}}
  deployments:
    flux-schnell: {{autoscaling: {{min_replicas: {replicas}, max_replicas: {replicas}}}, max_ongoing_requests: 8}}
loras: {{local_root: "{root}", cache_dir: "{work}/lora-cache"}}
tasks: {{path: "{work}/tasks.sqlite"}}
storage: {{root: "{work}/results", signing_key_file: "{work}/signing.key"}}
"""


def adapter_path(i: int) -> str:
    return f"./{i}/pytorch_lora_weights.safetensors"


def build_adapters(root: Path) -> None:
    from cluster.doubles.tiny_loras import build_tiny_lora

    for i in range(ADAPTERS):
        build_tiny_lora("flux", root / str(i), seed=i)


def timed_batch(renderer, *loras: tuple[int, float]) -> float:
    """Seconds of one 256*256 one-step render with adapters `loras` (index, scale)."""
    from cluster.spec.loras import LoraRef
    from cluster.spec.request import RenderRequest

    request = RenderRequest(model="flux-schnell", prompt="a lighthouse", seed=1, width=256, height=256, steps=1,
                            loras=tuple(LoraRef(adapter_path(i), scale) for i, scale in loras))
    started = time.perf_counter()
    [result] = renderer.render([request])
    assert result.ok, result.error
    return time.perf_counter() - started


# --- 1. in the render core -----------------------------------------------------------------------


def core_figures(root: Path, work: Path) -> dict:
    from cluster.engine.renderer import Renderer
    from cluster.lora.cache import LoraCache
    from cluster.spec.config import load_config

    spec = load_config().spec("flux-schnell")
    spec = spec.model_copy(update={"warmup": False, "lora_slots": 32,
                                   "loras": spec.loras.model_copy(update={"local_root": str(root)})})
    renderer = Renderer(spec, device="cpu", lora_cache=LoraCache(work / "core-cache"))

    def batch(*loras) -> float:
        return timed_batch(renderer, *loras)

    batch()  # the first call pays torch's own warm-up
    plain = statistics.median(batch() for _ in range(10))
    new = statistics.median(batch((i, 1.0)) for i in range(10))  # each a fresh adapter: fetch + load
    warm = statistics.median(batch((0, 1.0)) for _ in range(10))
    switch = statistics.median(batch((i % 2, 1.0)) for i in range(10))  # alternating between two kept sets
    return {"plain_ms": plain * 1000, "new_adapter_ms": new * 1000, "warm_set_ms": warm * 1000,
            "switch_ms": switch * 1000}


# --- 2. on a compiled model -----------------------------------------------------------------------


def compiled_figures(root: Path, work: Path) -> dict:
    import torch

    from cluster.engine.renderer import Renderer
    from cluster.lora.cache import LoraCache
    from cluster.spec.config import load_config

    def compiled(max_loras: int) -> Renderer:
        spec = load_config().spec("flux-schnell")
        spec = spec.model_copy(update={
            "warmup": False, "compile": True, "compile_sizes": ["256*256"], "max_batch_size": 1, "lora_rank": 16,
            "lora_slots": 32, "loras": spec.loras.model_copy(update={"local_root": str(root), "max": max_loras})})
        return Renderer(spec, device="cpu", lora_cache=LoraCache(work / "compiled-cache"))

    bare, slotted = compiled(0), compiled(3)

    torch._dynamo.config.error_on_recompile = True  # a recompile fails the bench
    try:
        timed_batch(bare), timed_batch(slotted)
        bare_ms = statistics.median(timed_batch(bare) for _ in range(10))
        plain = statistics.median(timed_batch(slotted) for _ in range(10))
        new = statistics.median(timed_batch(slotted, (i, 1.0)) for i in range(10))
        warm = statistics.median(timed_batch(slotted, (0, 1.0)) for _ in range(10))
        switch = statistics.median(timed_batch(slotted, (i % 2, 1.0)) for i in range(10))
        pair = statistics.median(timed_batch(slotted, (i % 3, 0.7), (3 + i % 2, 0.5)) for i in range(10))
    finally:
        torch._dynamo.config.error_on_recompile = False
    return {"bare_ms": bare_ms * 1000, "plain_ms": plain * 1000, "new_adapter_ms": new * 1000,
            "warm_set_ms": warm * 1000, "switch_ms": switch * 1000, "pair_ms": pair * 1000}


# --- 3. through the service ----------------------------------------------------------------------


def zipf_choices(count: int, s: float, seed: int) -> list[int]:
    weights = [1 / (k + 1) ** s for k in range(ADAPTERS)]
    return random.Random(seed).choices(range(ADAPTERS), weights=weights, k=count)


def best_share(s: float) -> float:
    weights = [1 / (k + 1) ** s for k in range(ADAPTERS)]
    return sum(weights[:REPLICAS * SLOTS]) / sum(weights)


def send(url: str, choices: list[int | None], clients: int) -> float:
    """Sync creates for every choice (None: no adapter) from `clients` threads; returns img/s."""
    queue = list(enumerate(choices))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    seed, choice = queue.pop(0)
                parameters = {"size": "512*1024", "steps": 1, "seed": seed}
                if choice is not None:
                    parameters["loras"] = [{"path": adapter_path(choice), "scale": 1.0}]
                answer = http.post(f"{url}/api/v1/services/aigc/text2image/image-synthesis",
                                   json={"model": "flux-schnell", "input": {"prompt": "a lighthouse"},
                                         "parameters": parameters})
                assert answer.status_code == 200 and answer.json()["output"]["task_status"] == "SUCCEEDED", answer.text

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(choices) / (time.perf_counter() - started)


def replica_stats() -> dict[str, dict]:
    """Each replica's adapter figures (calls spread over the replicas until both answered)."""
    from ray import serve

    handle = serve.get_deployment_handle("model-flux-schnell", app_name="raydiant")
    seen: dict[str, dict] = {}
    for _ in range(200):
        stats = handle.adapter_stats.remote().result()
        seen[stats["replica"]] = stats
        if len(seen) == REPLICAS:
            break
    return seen


def service_figures(root: Path, work: Path, requests: int, exponents: list[float]) -> dict:
    import re

    os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    from serve.local.service import local_service

    service_dir = work / "service"
    config = work / "service.yaml"
    config.write_text(SERVICE.format(slots=SLOTS, replicas=REPLICAS, root=root, work=service_dir))
    figures: dict = {}
    with local_service(service_dir, config, api_keys=KEY) as service:
        for _ in range(120):
            if found := re.search(r"Ray cluster: (\S+)", (service_dir / "serve.log").read_text()):
                break
            time.sleep(0.5)
        ray.init(address=found.group(1), log_to_driver=False, configure_logging=False)
        send(service.url, [None] * 8, clients=4)  # warm the replicas' code paths
        figures["plain_images_per_s"] = send(service.url, [None] * requests, clients=4)
        for s in exponents:
            choices = zipf_choices(requests, s, seed=int(s * 100))
            warmup = requests // 4
            send(service.url, choices[:warmup], clients=4)
            before = replica_stats()
            rate = send(service.url, choices[warmup:], clients=4)
            after = replica_stats()
            hits = sum(after[r]["hits"] - before[r]["hits"] for r in after)
            misses = sum(after[r]["misses"] - before[r]["misses"] for r in after)
            figures[s] = {"hit_rate": hits / max(hits + misses, 1), "best_possible": best_share(s),
                          "images_per_s": rate, "batches": hits + misses,
                          "loads_per_replica": [after[r]["loads"] for r in after]}
        ray.shutdown()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=240, help="Requests per workload through the service.")
    parser.add_argument("--zipf", default="1.5,2.0", help="Zipf exponents of the adapter mix.")
    parser.add_argument("--parts", default="core,compiled,service", help="Which parts to run.")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    work = Path(tempfile.mkdtemp(prefix="raydiant-lora-"))
    root = work / "loras"
    build_adapters(root)
    if "core" in parts:
        core = core_figures(root, work)
        print("render core (tiny FLUX, 256*256, 1 step, batch of 1, CPU; medians of 10):")
        print(f"  no adapter {core['plain_ms']:.1f} ms | a new adapter (fetch + load) {core['new_adapter_ms']:.1f} ms | "
              f"a kept set {core['warm_set_ms']:.1f} ms | switching between two kept sets {core['switch_ms']:.1f} ms",
              flush=True)
    if "compiled" in parts:
        c = compiled_figures(root, work)
        print("compiled (same batches; one slot of rank 16; no recompile in any of them):")
        print(f"  compiled without a slot {c['bare_ms']:.1f} ms | with the slot: no adapter {c['plain_ms']:.1f} ms "
              f"({c['plain_ms'] / c['bare_ms']:.2f}x) | a new adapter {c['new_adapter_ms']:.1f} ms | a kept set "
              f"{c['warm_set_ms']:.1f} ms | switching between two kept sets {c['switch_ms']:.1f} ms | "
              f"two adapters, switching {c['pair_ms']:.1f} ms", flush=True)
    if "service" in parts:
        service_report(root, work, args)


def service_report(root: Path, work: Path, args) -> None:
    figures = service_figures(root, work, args.requests, [float(s) for s in args.zipf.split(",")])
    print(f"\nthrough the service ({REPLICAS} replicas x {SLOTS} slots, {ADAPTERS} adapters, 512*1024, 1 step, "
          f"4 clients, {args.requests} requests, first quarter as warm-up):")
    print(f"  no adapters: {figures['plain_images_per_s']:.2f} img/s")
    for s in (float(s) for s in args.zipf.split(",")):
        f = figures[s]
        print(f"  Zipf s={s:g}: warm-hit rate {f['hit_rate']:.3f} (best any routing could do: "
              f"{f['best_possible']:.3f}) over {f['batches']} device batches; {f['images_per_s']:.2f} img/s "
              f"({f['images_per_s'] / figures['plain_images_per_s']:.2f} of no adapters); adapter files loaded "
              f"per replica {f['loads_per_replica']}")


if __name__ == "__main__":
    main()
