"""`raydiant doctor`: a deployment's preflight, one line per check, each failure with its fix.

What it checks, as the process that runs it finds them (run it where the service runs: on the
cluster, `raydiant submit -- doctor`):

- the secrets: API keys configured, none of them, nor the signing key or webhook secret, a
  placeholder; short ones fail only where the service listens beyond loopback (as `raydiant
  serve` refuses them there);
- result storage: a probe object put, read back and deleted under the configured root;
- the weights cache: writable, with room for the fsspec sources not in it yet;
- each model's source: built here (tiny, random, fake, sim), a pipeline folder, an fsspec
  location that lists (its credentials), or a hub repository the token can read;
- the task store: SQLite's folder writable; Redis reachable with its password, and refusing
  rather than evicting when full (`noeviction`);
- GPUs, when the config asks for them: torch sees CUDA devices here (its CUDA build against the
  driver), and with `--address` the Ray cluster can hold every replica.

Each check returns a `Check`; none raises. Nothing it writes outlives it but what the service
would write as it starts: the signing key and webhook secret files, where none is configured.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from cluster.spec.config import RaydiantConfig
from cluster.spec.errors import first_line


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found, or what is wrong
    fix: str = ""  # what to do, when not ok


def run_checks(config: RaydiantConfig, address: str | None = None) -> list[Check]:
    sources, needed = model_sources(config)
    return [secrets(config), result_storage(config), weights_cache(needed), *sources, task_store(config),
            *gpus(config, address)]


def secrets(config: RaydiantConfig) -> Check:
    from cluster.weights.sources import placeholder_hub_token
    from serve.edge.auth import listens_beyond_loopback, placeholders, weak_secrets
    from serve.secrets import resolve

    found = resolve(config)
    if not found.api_keys:
        return Check("secrets", False, "no API keys: the service refuses to start",
                     "set RAYDIANT_API_KEYS=key1,key2 (openssl rand -hex 16 each) or serve.api_keys")
    exposed = listens_beyond_loopback(config.serve.host)
    problems = (weak_secrets(list(found.api_keys), found.signing_key, found.webhook_secret) if exposed
                else placeholders(list(found.api_keys), found.signing_key, found.webhook_secret))
    if placeholder_hub_token():
        problems.append("HF_TOKEN is not a Hugging Face token (a placeholder?): gated models cannot load")
    if problems:
        return Check("secrets", False, "; ".join(problems),
                     "use random values: openssl rand -hex 16 for API keys, -hex 32 for the signing key; "
                     "a real HF_TOKEN (hf_...) or none")
    return Check("secrets", True, f"{len(found.api_keys)} API key(s), signing key and webhook secret set")


def result_storage(config: RaydiantConfig) -> Check:
    from cluster.storage.results import Storage

    root = config.storage.root
    key = f".raydiant-doctor/{uuid.uuid4().hex}"
    try:
        storage = Storage(root)
        storage.write(key, b"probe")
        readable = storage.read(key) == b"probe"
        storage.delete_prefix(".raydiant-doctor")
    except Exception as exc:  # noqa: BLE001 - any storage failure is this check's finding
        return Check("result storage", False, f"cannot put, get and delete under {root}: {first_line(exc)}",
                     "check storage.root and this pod's object-storage identity (serviceaccount.yaml)")
    if not readable:
        return Check("result storage", False, f"{root} gave back other bytes than were put", "check storage.root")
    return Check("result storage", True, f"put, get and delete under {root}")


def weights_cache(needed_bytes: int) -> Check:
    from cluster.weights.sources import weights_cache_dir

    cache = weights_cache_dir()
    probe = cache / f".doctor-{uuid.uuid4().hex}"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
        probe.unlink()
        free = shutil.disk_usage(cache).free
    except OSError as exc:
        return Check("weights cache", False, f"{cache} is not writable: {first_line(exc)}",
                     "point RAYDIANT_CACHE at a writable folder (on Kubernetes: the model cache volume, "
                     "owned by uid 1000)")
    if needed_bytes > free:
        return Check("weights cache", False, f"{cache} has {free / 2**30:.1f} GiB free; the models' sources "
                                             f"need {needed_bytes / 2**30:.1f} GiB", "give the cache volume more room")
    return Check("weights cache", True, f"{cache} writable, {free / 2**30:.1f} GiB free"
                                        + (f" ({needed_bytes / 2**30:.1f} GiB to fetch)" if needed_bytes else ""))


def model_sources(config: RaydiantConfig) -> tuple[list[Check], int]:
    """A check per model, and the bytes its fsspec sources will fetch into the cache."""
    checks, needed = [], 0
    for name, model in config.models.items():
        check, size = model_source(name, model.source)
        checks.append(check)
        needed += size
    return checks, needed


def model_source(name: str, source: str) -> tuple[Check, int]:
    from cluster.weights.sources import ModelLoadError, parse_source

    label = f"model {name}"
    try:
        parsed = parse_source(source)
    except ModelLoadError as exc:
        return Check(label, False, str(exc), "fix the model's source in the config"), 0
    if parsed.kind in ("tiny", "random", "fake", "sim"):
        return Check(label, True, f"{source} (built here, nothing to fetch)"), 0
    if parsed.kind == "local":
        folder = Path(parsed.location)
        if not (folder / "model_index.json").is_file():
            return Check(label, False, f"{folder} is not a diffusers pipeline folder", "fix the path"), 0
        return Check(label, True, f"pipeline folder {folder}"), 0
    if parsed.kind == "fsspec":
        return _fsspec_source(label, source)
    return _hub_source(label, source), 0


def _fsspec_source(label: str, uri: str) -> tuple[Check, int]:
    from cluster.weights.shared_cache import CacheError, list_source

    try:
        files = list_source(uri)  # as the cache will list it
    except CacheError as exc:  # credentials, a missing bucket, an unknown protocol, nothing there
        return Check(label, False, first_line(exc), "check the URI and this pod's object-storage identity"), 0
    size = sum(size for size, _ in files.values())
    return Check(label, True, f"{uri}: {len(files)} files, {size / 2**30:.2f} GiB"), size


def _hub_source(label: str, repo: str) -> Check:
    from huggingface_hub import auth_check
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        auth_check(repo)
    except GatedRepoError:
        return Check(label, False, f"{repo} is gated and the hub token cannot read it",
                     "accept the licence with the token's account, and set HF_TOKEN")
    except RepositoryNotFoundError:
        return Check(label, False, f"{repo}: no such repository, or the token cannot see it", "fix the id or HF_TOKEN")
    except Exception as exc:  # noqa: BLE001 - no route to the hub
        return Check(label, False, f"cannot reach the hub for {repo}: {first_line(exc)}",
                     "mirror the weights to object storage (an s3:// source), or open the route")
    return Check(label, True, f"hub repository {repo} readable")


def task_store(config: RaydiantConfig) -> Check:
    if config.tasks.backend != "redis":
        folder = Path(config.tasks.path).parent
        if folder.exists() and not os.access(folder, os.W_OK):
            return Check("task store", False, f"SQLite folder {folder} is not writable", "fix tasks.path")
        return Check("task store", True, f"SQLite at {config.tasks.path}")
    return _redis_store(config)


def _redis_store(config: RaydiantConfig) -> Check:
    import redis

    from serve.tasks.store.factory import redis_url

    url = redis_url(config.tasks)
    shown = url.split("@")[-1]  # never the password
    try:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        client.ping()
        policy = client.info("memory").get("maxmemory_policy")
    except redis.exceptions.AuthenticationError:
        return Check("task store", False, f"Redis at {shown} refused the password",
                     "set RAYDIANT_REDIS_PASSWORD to Redis' requirepass (the Secret's redis-password)")
    except redis.exceptions.RedisError as exc:
        return Check("task store", False, f"cannot reach Redis at {shown}: {first_line(exc)}",
                     "check RAYDIANT_REDIS_URL and that Redis runs")
    if policy != "noeviction":
        return Check("task store", False, f"Redis at {shown} evicts when full (maxmemory-policy {policy}): "
                                          f"tasks would vanish", "run Redis with --maxmemory-policy noeviction")
    return Check("task store", True, f"Redis at {shown}, noeviction")


def gpus(config: RaydiantConfig, address: str | None) -> list[Check]:
    needs = {model: float(config.serve.deployment(model).ray_actor_options.get("num_gpus", 0))
             for model in config.served_models()}
    if not any(needs.values()):
        return []  # no GPU asked: nothing to check
    import torch

    from cluster.runtime.cuda_driver import driver_cuda_version

    checks = [cuda_driver(torch.version.cuda, driver_cuda_version())]
    if torch.cuda.is_available():
        checks.append(Check("GPUs here", True, f"{torch.cuda.device_count()} CUDA device(s), torch "
                                               f"{torch.__version__} built for CUDA {torch.version.cuda}"))
    else:
        checks.append(Check("GPUs here", False, f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA "
                                                f"device", "run on a GPU node; a CUDA build newer than the driver "
                                                           "sees none either: the image needs driver R570+"))
    if address:
        checks.append(_ray_gpus(needs, address))
    return checks


def cuda_driver(torch_cuda: str | None, driver: tuple[int, int] | None) -> Check:
    """torch's CUDA against the newest CUDA the driver supports (None: no driver)."""
    from cluster.runtime.cuda_driver import too_old_for

    if torch_cuda is None:
        return Check("CUDA driver", False, "torch is a CPU build", "install the image's torch (+cu128, from "
                                                                   "PyTorch's CUDA index)")
    if driver is None:
        return Check("CUDA driver", False, "no NVIDIA driver here (libcuda.so.1 cannot be loaded)",
                     "run on a GPU node with NVIDIA's driver (R570 or later for this image)")
    if problem := too_old_for(torch_cuda, driver):
        return Check("CUDA driver", False, problem, f"upgrade the node's driver to one for CUDA {torch_cuda} "
                                                    "(R570+ for 12.8), or use an image built for the driver's CUDA")
    return Check("CUDA driver", True, f"supports CUDA {driver[0]}.{driver[1]}; torch is built for {torch_cuda}")


def _ray_gpus(needs: dict[str, float], address: str) -> Check:
    from cluster.runtime.local_ray import connect
    from cluster.runtime.placement import gpu_capacity, missing_gpus

    try:
        with connect(address):
            problems = missing_gpus(needs, gpu_capacity())
    except Exception as exc:  # noqa: BLE001 - no cluster there
        return Check("GPUs in Ray", False, f"cannot reach Ray at {address}: {first_line(exc)}", "check --address")
    if problems:
        return Check("GPUs in Ray", False, "; ".join(problems), "add GPU nodes, or ask for fewer GPUs per replica")
    return Check("GPUs in Ray", True, f"the cluster can hold every replica ({sum(needs.values()):g} GPUs)")
