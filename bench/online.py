"""Online overhead and throughput, measured side by side in one run on this machine.

    .venv/bin/python bench/online.py [--requests 24] [--size 512*1024]

1. The bare `Renderer` rendering one image in-process (p50/p95 latency).
2. The same image through the service, one synchronous DashScope request at a time
   (p50/p95): the difference is the service's overhead (HTTP, task store, Serve hops, PNG write).
3. Throughput (images/s) at 1, 4 and 16 concurrent clients, with batching on and off.
4. The path's own cost (`--path`, also run by default): the FAKE engine (`fake:flux`, no model
   time) behind a synchronous DashScope create, next to a bare two-deployment Serve app (an
   ingress deployment awaiting a model deployment that returns a small PNG's bytes) in the same
   run: p50/p95 latency with one client and images/s at 16 clients, their difference and ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from cluster.cli import quiet_libraries
from cluster.engine.renderer import Renderer
from cluster.spec.catalogue import parse_size
from cluster.spec.config import load_config
from cluster.spec.request import RenderRequest
from serve.local.service import local_service

KEY = "bench-key"
MODEL = "flux-schnell"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bare_latencies(size: str, count: int) -> list[float]:
    width, height = parse_size(size)
    renderer = Renderer(load_config().spec(MODEL).model_copy(update={"warmup": False}))
    request = RenderRequest(model=MODEL, prompt="bench", seed=1, width=width, height=height)
    renderer.render([request])
    times = []
    for _ in range(count):
        started = time.perf_counter()
        renderer.render([request])
        times.append(time.perf_counter() - started)
    return times


def body(size: str, seed: int) -> dict:
    return {"model": MODEL, "input": {"prompt": "bench"}, "parameters": {"size": size, "seed": seed}}


async def sync_request(client: httpx.AsyncClient, url: str, size: str, seed: int) -> float:
    started = time.perf_counter()
    answer = await client.post(url, json=body(size, seed), headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200 and answer.json()["output"]["task_status"] == "SUCCEEDED", answer.text
    return time.perf_counter() - started


async def served_latencies(base: str, size: str, count: int) -> list[float]:
    url = f"{base}/api/v1/services/aigc/text2image/image-synthesis"
    async with httpx.AsyncClient(timeout=300) as client:
        await sync_request(client, url, size, 0)
        return [await sync_request(client, url, size, 1) for _ in range(count)]


async def throughput(base: str, size: str, clients: int, total: int) -> float:
    return await throughput_at(f"{base}/api/v1/services/aigc/text2image/image-synthesis", size, clients, total)


def bare_serve_app(encode_png: bool = False, engine_s: float = 0.0):
    """The same two hops with nothing of raydiant: an ingress deployment awaits a model deployment
    that waits `engine_s` (a SIMULATED GPU's time) and returns the bytes of one small PNG
    (`encode_png`: of the FAKE engine's 1024*1024 picture, encoded as raydiant encodes it). A
    context manager yielding the URL to POST."""
    import contextlib

    from fastapi import FastAPI
    from ray import serve

    from cluster.runtime.local_ray import connect
    from cluster.runtime.processes import free_port

    api = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=32)
    class Model:
        async def render(self, images: int) -> bytes:
            await asyncio.sleep(engine_s)
            if encode_png:
                from PIL import Image

                from cluster.images.encoding import encode
                return await asyncio.to_thread(encode, Image.new("RGB", (1024, 1024), (200, 40, 40)))
            return b"\x89PNG" + b"\x00" * 2048

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=32)
    @serve.ingress(api)
    class Ingress:
        def __init__(self, model):
            self.model = model

        @api.post("/render")
        async def render(self) -> dict:
            image = await self.model.render.remote(1)
            return {"output": {"task_status": "SUCCEEDED", "bytes": len(image)}}

    @contextlib.contextmanager
    def running():
        port = free_port()
        with connect():
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(Ingress.bind(Model.bind()), name="bare", route_prefix="/")
            try:
                yield f"http://127.0.0.1:{port}/render"
            finally:
                serve.shutdown()
    return running()


async def path_figures(url: str, size: str, requests: int) -> dict:
    """Sequential latencies (after a warm-up) and images/s at 16 clients, against `url`."""
    async with httpx.AsyncClient(timeout=300) as client:
        for seed in range(5):
            await sync_request(client, url, size, seed)
        latencies = [await sync_request(client, url, size, 1) for _ in range(requests)]
    return {"p50": percentile(latencies, .5), "p95": percentile(latencies, .95),
            "img_s_16": await throughput_at(url, size, 16, requests * 4)}


async def throughput_at(url: str, size: str, clients: int, total: int) -> float:
    per_client = max(1, total // clients)

    async def client_loop(client: httpx.AsyncClient, offset: int) -> None:
        for i in range(per_client):
            await sync_request(client, url, size, offset * 1000 + i)

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client, c) for c in range(clients)))
        return clients * per_client / (time.perf_counter() - started)


def path_cost(requests: int, size: str) -> None:
    with bare_serve_app() as url:
        bare = asyncio.run(path_figures(url, size, requests))
    with bare_serve_app(encode_png=True) as url:
        bare_png = asyncio.run(path_figures(url, size, requests))
    work = Path(tempfile.mkdtemp(prefix="raydiant-bench-path-"))
    config = work / "config.yaml"
    config.write_text("models:\n  flux-schnell: {source: 'fake:flux', warmup: false}\n"
                      "serve:\n  rate_limit: {requests_per_second: 100000, burst: 100000}\n"
                      "  max_queued_per_model: 1000\n"
                      "  deployments:\n    flux-schnell: {max_ongoing_requests: 32}\n")
    with local_service(work / "svc", config, api_keys=KEY) as service:
        ours = asyncio.run(path_figures(f"{service.url}/api/v1/services/aigc/text2image/image-synthesis",
                                        size, requests))
    print(f"\npath cost: FAKE engine, {size}, {requests} sequential requests, then 16 clients")
    print(f"{'':34} {'p50 ms':>8} {'p95 ms':>8} {'img/s @16':>10}")
    for name, row in (("bare two-deployment Serve app", bare), ("  the same, encoding the PNG", bare_png),
                      ("sync DashScope create (fake:flux)", ours)):
        print(f"{name:34} {row['p50'] * 1e3:8.1f} {row['p95'] * 1e3:8.1f} {row['img_s_16']:10.1f}")
    for name, floor in (("raydiant over the floor", bare), ("  over the floor with the PNG", bare_png)):
        print(f"{name:34} {(ours['p50'] - floor['p50']) * 1e3:+8.1f} "
              f"{(ours['p95'] - floor['p95']) * 1e3:+8.1f} {ours['img_s_16'] / floor['img_s_16']:9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=24, help="latency samples, and requests per throughput run")
    parser.add_argument("--size", default="512*1024")
    parser.add_argument("--path", action="store_true", help="only the path's own cost (FAKE engine vs bare Serve)")
    args = parser.parse_args()
    quiet_libraries()
    path_cost(max(args.requests, 40), "1024*1024")
    if args.path:
        return

    bare = bare_latencies(args.size, args.requests)
    gc.collect()
    work = Path(tempfile.mkdtemp(prefix="raydiant-bench-"))
    config = work / "config.yaml"
    config.write_text("models:\n  flux-schnell: {source: 'tiny:flux'}\n"
                      "serve:\n  rate_limit: {requests_per_second: 1000, burst: 1000}\n")
    rows = {}
    for batching in (True, False):
        flag = "--batching" if batching else "--no-batching"
        with local_service(work / flag, config, api_keys=KEY, extra_args=(flag,)) as service:
            if batching:
                served = asyncio.run(served_latencies(service.url, args.size, args.requests))
            rows[batching] = {c: asyncio.run(throughput(service.url, args.size, c, args.requests)) for c in (1, 4, 16)}

    print(f"\nflux-schnell (tiny), {args.size}, 4 steps, CPU; {args.requests} requests per figure")
    print(f"{'':28} {'p50 ms':>8} {'p95 ms':>8}")
    print(f"{'bare Renderer':28} {percentile(bare, .5) * 1e3:8.0f} {percentile(bare, .95) * 1e3:8.0f}")
    print(f"{'sync DashScope request':28} {percentile(served, .5) * 1e3:8.0f} {percentile(served, .95) * 1e3:8.0f}")
    print(f"{'overhead':28} {(percentile(served, .5) - percentile(bare, .5)) * 1e3:8.0f} "
          f"{(percentile(served, .95) - percentile(bare, .95)) * 1e3:8.0f}")
    print(f"\n{'clients':>8} {'batching on img/s':>18} {'batching off img/s':>19}")
    for clients in (1, 4, 16):
        print(f"{clients:>8} {rows[True][clients]:>18.2f} {rows[False][clients]:>19.2f}")
    print(f"(bare Renderer, one at a time: {1 / statistics.median(bare):.2f} img/s)")


if __name__ == "__main__":
    main()
