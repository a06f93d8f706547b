"""The deployable Serve configs, generated from one raydiant config (`raydiant infra render`).

`configs/serve-cluster.yaml` (for `serve deploy`) and the RayService's `serveConfigV2`
(`infra/k8s/rayservice.yaml`) are both written from `configs/cluster.yaml`, so they cannot
drift; a test fails when the checked-in files are stale. Each is checked against Ray's own Serve
config schema before it is written.

On Kubernetes the raydiant config itself travels as a ConfigMap (`infra/k8s/raydiant-config.yaml`)
named by a hash of its content, which the RayService's pods mount and the app reads. A changed
config is a new ConfigMap name in the pod templates, so a change of rayClusterConfig: KubeRay
starts a new cluster with it and switches traffic once it serves, where a change of
serveConfigV2 alone would be applied in place to pods holding the old file.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml
from ray.serve.schema import ServeDeploySchema

from cluster.spec.catalogue import deployment_name
from cluster.spec.config import CONFIG_DIR, RaydiantConfig, load_config

REPO = CONFIG_DIR.parent
IMAGE_HOME = "/home/ray/raydiant"  # where infra/docker/Dockerfile puts the project's configs/
SOURCE = CONFIG_DIR / "cluster.yaml"
SERVE_CONFIG = CONFIG_DIR / "serve-cluster.yaml"
RAYSERVICE = REPO / "infra" / "k8s" / "rayservice.yaml"
CONFIG_MAP = REPO / "infra" / "k8s" / "raydiant-config.yaml"
MOUNTED = f"{IMAGE_HOME}/configs/live"  # where the RayService's pods mount the ConfigMap
_CONFIG_MAP_NAME = re.compile(r"raydiant-config-[0-9a-f]{10}\b")
HEADER = ("# GENERATED from configs/cluster.yaml by `raydiant infra render`: edit that file, not this one.\n"
          "# A Ray Serve config (`serve deploy configs/serve-cluster.yaml`), also the RayService's serveConfigV2.\n")
_BLOCK = re.compile(r"(?m)^(  serveConfigV2: \|\n)(?:    .*\n|\n)*")  # the literal block, to its end


def serve_config(config: RaydiantConfig, config_path: str) -> dict[str, Any]:
    """Ray Serve's config for `config`: the app built by serve.app:build_app from `config_path`,
    with each deployment's replicas, resources and autoscaling as `config` says."""
    deployments: list[dict[str, Any]] = [{"name": "ingress", "num_replicas": config.serve.ingress_replicas}]
    for model in config.served_models():
        settings = config.serve.deployment(model)
        deployments.append({"name": deployment_name(model), "max_ongoing_requests": settings.max_ongoing_requests,
                            "ray_actor_options": dict(settings.ray_actor_options),  # no YAML anchors
                            "autoscaling_config": settings.autoscaling.serve_config()})
    body = {"proxy_location": "EveryNode", "http_options": {"host": config.serve.host, "port": config.serve.port},
            "applications": [{"name": "raydiant", "route_prefix": "/", "import_path": "serve.app:build_app",
                              "args": {"config": config_path}, "deployments": deployments}]}
    ServeDeploySchema.model_validate(body)
    return body


def config_map_name(text: str) -> str:
    return f"raydiant-config-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def config_map(text: str) -> str:
    """The ConfigMap carrying configs/cluster.yaml, named by its content (immutable: a new
    content is a new name)."""
    document = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": config_map_name(text)},
                "immutable": True, "data": {"cluster.yaml": text}}
    return ("# GENERATED from configs/cluster.yaml by `raydiant infra render`: edit that file, not this one.\n"
            "# The raydiant config as the RayService's pods read it (mounted at " + MOUNTED + ").\n"
            + yaml.safe_dump(document, sort_keys=False, width=120))


def rendered() -> dict[Path, str]:
    """Every generated file and its content, from configs/cluster.yaml as it is now."""
    source = SOURCE.read_text()
    served = yaml.safe_dump(serve_config(load_config(SOURCE), f"{MOUNTED}/cluster.yaml"), sort_keys=False)
    manifest = RAYSERVICE.read_text()
    if not _BLOCK.search(manifest) or not _CONFIG_MAP_NAME.search(manifest):
        raise ValueError(f"{RAYSERVICE}: no 'serveConfigV2: |' block, or no raydiant-config-<hash> volume, "
                         f"to regenerate")
    embedded = "".join(f"    {line}\n" if line else "\n" for line in served.splitlines())
    manifest = _BLOCK.sub(lambda m: m.group(1) + embedded, manifest, count=1)
    return {SERVE_CONFIG: HEADER + yaml.safe_dump(serve_config(load_config(SOURCE),
                                                               f"{IMAGE_HOME}/configs/cluster.yaml"), sort_keys=False),
            CONFIG_MAP: config_map(source),
            RAYSERVICE: _CONFIG_MAP_NAME.sub(config_map_name(source), manifest)}


def write_all() -> list[Path]:
    """Regenerate the files; returns those that changed."""
    changed = []
    for path, text in rendered().items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed
