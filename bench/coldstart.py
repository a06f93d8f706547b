"""Cold start of model replicas that share one weights cache, from "replica scheduled" to
"first image", measured on this machine.

    .venv/bin/python -m bench.coldstart [--replicas 1,4] [--size 256]

The weights: Stable Diffusion 1.5 at full size with random weights (`random:sd15`, 2.0 GiB in
bf16), saved as a diffusers folder and served by a local S3 server (moto). The replicas: Ray
actors, one per fake-GPU node of a `ray.cluster_utils` cluster (a head with no CPUs, worker
nodes of 1 GPU each; the fourth replica's GPU is the head's: at most 4 raylets here), all started
at once, every one with the same fresh cache folder, as pods sharing a ReadWriteMany volume.

Each replica reports its split: fetch (through `cluster/weights/shared_cache.py`: its own
download, or its wait for another's), load (the pipeline from the cache into memory), first
image (one step at `--size`, on the CPU: this machine's stand-in for warm-up). Then the bytes
fetched by all of them over one copy (goal: within 1.05x for any N), and what one replica
reached from the local S3, and what one process reaches reading whole files against concurrent
ranged GETs, side by side. moto answers each range by reading the whole object, so on it ranged
reads measure moto (quadratic in a file's size), not S3; the replicas therefore read whole files
here (`RAYDIANT_CACHE_RANGE_MIB=0`), and what ranges give one node is for a real bucket to say.
Then a replica killed mid-download: what the next one fetched again.
Last, the compile cache: a regional compile's warm-up (tiny FLUX, torch's inductor on the CPU)
in a fresh process, then in a second one with the same `TORCHINDUCTOR_CACHE_DIR`, as a second
replica finds the first's on the shared volume (the image puts it there).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL_URI = "s3://weights/sd15"
# A replica's regional-compile warm-up, in a process of its own (the measure is its compile).
WARMUP = """
import time, torch
from cluster.cli import quiet_libraries
quiet_libraries()
from cluster.engine.renderer import Renderer
from cluster.engine.speed import compile_regions
from cluster.spec.config import load_config
pipeline = Renderer(load_config(None).spec("flux-schnell").model_copy(update={"warmup": False})).pipeline
compile_regions(pipeline)
started = time.perf_counter()
with torch.inference_mode():
    pipeline(prompt=["a"], width=256, height=256, num_inference_steps=1, generator=[torch.Generator().manual_seed(0)])
print(f"WARMUP {time.perf_counter() - started:.2f}")
"""


def build_weights(folder: Path) -> int:
    import torch

    from cluster.doubles.random_weights import build_random_pipeline

    pipeline = build_random_pipeline("sd15", torch.device("cpu"), torch.bfloat16)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def upload(folder: Path, endpoint: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    fs.mkdir("weights")
    fs.put(str(folder), MODEL_URI.removeprefix("s3://"), recursive=True)


class Replica:
    """What a model replica does as it starts: fetch, load, render once."""

    def start(self, size: int) -> dict:
        import torch

        from cluster.spec.families import Family
        from cluster.weights.shared_cache import fetch
        from cluster.weights.sources import load_pipeline, weights_cache_dir

        started = time.monotonic()
        fetched = fetch(MODEL_URI, weights_cache_dir())
        loading = time.monotonic()
        pipeline = load_pipeline("sd15", Family.SD15, MODEL_URI, torch.bfloat16, torch.device("cpu"))
        rendering = time.monotonic()
        pipeline.set_progress_bar_config(disable=True)
        pipeline(prompt=["a lighthouse"], width=size, height=size, num_inference_steps=1)
        done = time.monotonic()
        return {"fetched": fetched.fetched_bytes, "waited": fetched.waited_s, "fetch_s": loading - started,
                "load_s": rendering - loading, "first_image_s": done - rendering, "total_s": done - started}

    def fetch_only(self) -> int:
        from cluster.weights.shared_cache import fetch
        from cluster.weights.sources import weights_cache_dir

        return fetch(MODEL_URI, weights_cache_dir()).fetched_bytes


def cold_starts(cluster, replicas: int, cache: Path, size: int) -> list[dict]:
    import ray

    actor = ray.remote(num_gpus=1, num_cpus=0)(Replica)
    env = {"env_vars": {"RAYDIANT_CACHE": str(cache)}}
    handles = [actor.options(runtime_env=env).remote() for _ in range(replicas)]
    return ray.get([h.start.remote(size) for h in handles])


def killed_mid_download(cache: Path) -> tuple[int, int]:
    """A replica killed once a file is whole in staging; the next one's fetched bytes."""
    import ray

    actor = ray.remote(num_gpus=1, num_cpus=0)(Replica)
    env = {"env_vars": {"RAYDIANT_CACHE": str(cache), "RAYDIANT_CACHE_LEASE_S": "3"}}
    first = actor.options(runtime_env=env).remote()
    first.fetch_only.remote()
    while not any(p.suffix == ".safetensors" for p in cache.glob("weights/*/staging/*/*/*")):
        time.sleep(0.05)
    ray.kill(first)
    kept = sum(p.stat().st_size for p in cache.glob("weights/*/staging/*/*/*") if p.suffix == ".safetensors")
    second = actor.options(runtime_env=env).remote()
    return kept, ray.get(second.fetch_only.remote())


def read_rates(work: Path, one_copy: int) -> list[tuple[str, float]]:
    """MiB/s of one process copying the model from the local S3 into a fresh cache: whole files 8
    at a time (one GET a file: how the cache read before), then concurrent ranged GETs (now)."""
    from cluster.weights import shared_cache

    rates = []
    for name, chunk, reads in (("whole files, 8 at a time", 2**62, 8),
                               ("16 ranged GETs of 8 MiB (the default)", 8 * 2**20, 16)):
        saved = shared_cache._CHUNK, shared_cache._PARALLEL_READS
        shared_cache._CHUNK, shared_cache._PARALLEL_READS = chunk, reads
        try:
            started = time.monotonic()
            shared_cache.fetch(MODEL_URI, work / f"cache-read-{reads}")
            rates.append((name, one_copy / 2**20 / (time.monotonic() - started)))
        finally:
            shared_cache._CHUNK, shared_cache._PARALLEL_READS = saved
    return rates


def compile_warmups(cache: Path) -> list[float]:
    """Warm-up seconds of two replicas in turn, sharing one inductor cache folder."""
    times = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", WARMUP], capture_output=True, text=True, check=True,
                              env=os.environ | {"TORCHINDUCTOR_CACHE_DIR": str(cache)})
        times.append(float(re.search(r"WARMUP (\S+)", done.stdout)[1]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", default="1,4")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    from cluster.cli import quiet_libraries
    from tests.multinode import local_cluster
    from tests.servers import s3_server

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="raydiant-coldstart-"))
    started = time.monotonic()
    one_copy = build_weights(work / "sd15")
    print(f"random:sd15 saved: {one_copy / 2**30:.2f} GiB in {time.monotonic() - started:.0f} s; work in {work}",
          flush=True)
    with s3_server() as endpoint:
        # Before the cluster starts: its raylets, so the replicas, inherit them.
        os.environ.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                           "AWS_DEFAULT_REGION": "us-east-1", "FSSPEC_S3_ENDPOINT_URL": endpoint,
                           # moto reads a whole object to answer each range of it: the replicas
                           # read whole files here (real S3 serves ranges; the line above compares)
                           "RAYDIANT_CACHE_RANGE_MIB": "0"})
        import fsspec

        fsspec.config.conf["s3"] = {"endpoint_url": endpoint}  # this process read FSSPEC_* at import
        upload(work / "sd15", endpoint)
        (whole, whole_rate), (ranged, ranged_rate) = read_rates(work, one_copy)
        print(f"one process from the local S3: {whole}: {whole_rate:.0f} MiB/s; {ranged}: {ranged_rate:.0f} MiB/s "
              f"({ranged_rate / whole_rate:.2f}x)", flush=True)
        counts = [int(n) for n in args.replicas.split(",")]
        with local_cluster(head_gpus=1 if max(counts) > 3 else 0) as cluster:
            for _ in range(min(max(counts), 3)):
                cluster.add_worker(num_cpus=1, num_gpus=1)
            cluster.wait_for_nodes()
            print(f"\n{'N':>2} {'fetched / one copy':>19} {'fetch s':>14} {'load s':>12} {'first image s':>14} "
                  f"{'total s':>12}", flush=True)
            for n in counts:
                results = cold_starts(cluster, n, work / f"cache-{n}", args.size)
                fetched = sum(r["fetched"] for r in results)
                span = lambda key: f"{min(r[key] for r in results):5.1f}-{max(r[key] for r in results):5.1f}"  # noqa: E731
                print(f"{n:>2} {fetched / one_copy:>19.3f} {span('fetch_s'):>14} {span('load_s'):>12} "
                      f"{span('first_image_s'):>14} {span('total_s'):>12}", flush=True)
                if n == 1:
                    print(f"   one replica from the local S3: {one_copy / 2**20 / results[0]['fetch_s']:.0f} MiB/s",
                          flush=True)
            kept, again = killed_mid_download(work / "cache-killed")
            print(f"\nkilled mid-download with {kept / 2**20:.0f} MiB whole in staging: the next replica fetched "
                  f"{again / 2**20:.0f} MiB of {one_copy / 2**20:.0f} (re-fetched beyond what was left: "
                  f"{max(0, again - (one_copy - kept)) / 2**20:.0f} MiB)", flush=True)
    first, second = compile_warmups(work / "inductor")
    print(f"\ncompile warm-up (tiny FLUX, regional compile, CPU inductor): first replica {first:.1f} s, "
          f"second with the first's cache {second:.1f} s ({first / second:.1f}x)", flush=True)


if __name__ == "__main__":
    main()
