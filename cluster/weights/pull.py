"""`pull`: a model's weights brought into the cache before any replica needs them, so that a
service's first start (or a pre-seed Job on Kubernetes, `infra/k8s/weights-pull.yaml`) pays for
the download once, not each cold replica.

fsspec sources go through the shared cache (`shared_cache.py`: one download for every process
that pulls or loads at once); hub ids through `huggingface_hub`'s own cache and its file locks,
under `$HF_HOME` (on the cache volume in the image); tiny pipelines are built; a local folder is
only checked. Nothing to pull for `random:`, `fake:` and `sim:`.
"""

from __future__ import annotations

from pathlib import Path

from cluster.weights.shared_cache import CacheError, fetch
from cluster.weights.sources import (
    ModelLoadError, drop_placeholder_hub_token, local_location, parse_source, weights_cache_dir,
)


def pull(source: str) -> str:
    """What pulling `source` did, in a few words; a `ModelLoadError` says why it could not."""
    parsed = parse_source(source)
    if parsed.kind in ("random", "fake", "sim"):
        return "nothing to pull (made where it runs)"
    if parsed.kind == "fsspec":
        try:
            fetched = fetch(source, weights_cache_dir())
        except CacheError as exc:
            raise ModelLoadError(str(exc)) from exc
        if fetched.fetched_bytes:
            return f"fetched {fetched.fetched_bytes / 2**20:.1f} MiB into {fetched.path}"
        waited = f" after waiting {fetched.waited_s:.0f} s for another process" if fetched.waited_s else ""
        return f"in the cache{waited}: {fetched.path}"
    if parsed.kind == "hub":
        from huggingface_hub import snapshot_download

        drop_placeholder_hub_token()  # the hub would refuse even a public repository with it
        try:
            return f"in the hub cache: {snapshot_download(source)}"
        except Exception as exc:  # noqa: BLE001 - gated, missing, or no route: said in one line
            raise ModelLoadError(f"cannot download {source} from the hub: {exc}") from exc
    location = local_location(parsed)  # builds a tiny pipeline; checks a local folder
    return f"ready at {Path(location)}"
