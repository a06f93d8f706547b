"""`manifest.json`: what made an output, so that a dataset can be traced and a rerun trusted.

It holds the job's options, the config with its secrets removed, the models' weight sources,
the versions of the libraries that rendered, the input files (rows and footer fingerprints),
and, once the run ends, the list of shards with their counts and sha256.

It is written when a run starts (before any shard) and rewritten when it ends. A rerun into
the same output must describe the same dataset: the same input files, shard size, row limit,
row defaults, job seed and formats; otherwise its shards would mean other images, and the run
is refused with what differs. The render actors' placement, batch size and concurrency may
change between runs (pixels do not depend on them).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cluster.spec.config import RaydiantConfig
from cluster.storage.results import Storage
from jobs.driver.plan import InputFile
from jobs.driver.spec import JobSpec
from jobs.output.layout import ShardStats

MANIFEST = "manifest.json"
LIBRARIES = ("raydiant", "diffusers", "transformers", "torch", "ray", "pyarrow", "fsspec")
# What a rerun must share with the run that started the output.
DATASET_FIELDS = ("inputs", "shard_size", "limit", "defaults", "seed", "format", "image_format")
_REDACTED = "<redacted>"


class ManifestMismatch(Exception):
    """The output holds another dataset than the one this run would write."""


def build(spec: JobSpec, config: RaydiantConfig, inputs: list[InputFile]) -> dict[str, Any]:
    options = spec.model_dump(mode="json", exclude={"address"})
    return {
        "command": sys.argv,
        "inputs": [asdict(i) for i in inputs],
        **{field: options.pop(field) for field in DATASET_FIELDS if field in options},
        "options": options,
        "config": redacted(config),
        "models": {name: {"source": config.spec(name).source} for name in config.models},
        "versions": {"python": sys.version.split()[0], **{lib: _version(lib) for lib in LIBRARIES}},
        "shards": None,  # filled in when the run ends
    }


def redacted(config: RaydiantConfig) -> dict[str, Any]:
    """The config as a dict, without keys, secrets or URL credentials."""
    data = config.model_dump(mode="json")
    serve, storage, tasks = data["serve"], data["storage"], data["tasks"]
    serve["api_keys"] = [_REDACTED for _ in serve.get("api_keys") or []]
    for section, field in ((serve.get("webhooks") or {}, "secret"), (storage, "signing_key")):
        if section.get(field):
            section[field] = _REDACTED
    tasks["url"] = _without_credentials(tasks["url"])
    return data


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=f"{_REDACTED}@{host}" + (f":{parts.port}" if parts.port else "")))


def _version(library: str) -> str | None:
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return None


def check_resume(storage: Storage, manifest: dict[str, Any]) -> bool:
    """True when the output was started by an earlier run of the same dataset; False when it is
    new. Raises `ManifestMismatch` naming what differs when it holds another dataset."""
    if not storage.exists(MANIFEST):
        if storage.exists("stats"):
            raise ManifestMismatch(f"{storage.root} holds shards but no {MANIFEST}: not a raydiant output "
                                   f"this version can resume; write to a new --output")
        return False
    earlier = json.loads(storage.read(MANIFEST))
    differs = [field for field in DATASET_FIELDS if earlier.get(field) != manifest.get(field)]
    if differs:
        shown = "; ".join(f"{f}: {_short(earlier.get(f))} before, {_short(manifest.get(f))} now" for f in differs)
        raise ManifestMismatch(f"{storage.root} was written for another dataset ({shown}); rerun with the same "
                               f"input and options, or write to a new --output")
    return True


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def write(storage: Storage, manifest: dict[str, Any], shards: list[ShardStats] | None = None) -> None:
    if shards is not None:
        manifest = manifest | {"shards": [{"name": s.shard, "images": s.images, "rendered": s.rendered,
                                           "failed": s.failed, "bytes": s.bytes, "sha256": s.sha256}
                                          for s in sorted(shards, key=lambda s: s.shard)]}
    storage.write(MANIFEST, json.dumps(manifest, indent=2).encode())
