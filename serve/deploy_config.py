"""The deployable Serve configs, generated from one raydiant config (`raydiant infra render`).

`configs/serve-cluster.yaml` (for `serve deploy`) and the RayService's `serveConfigV2`
(`infra/k8s/rayservice.yaml`) are both written from `configs/cluster.yaml`, so they cannot
drift; a test fails when the checked-in files are stale. Each is checked against Ray's own Serve
config schema before it is written.
"""

from __future__ import annotations

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


def rendered() -> dict[Path, str]:
    """Every generated file and its content, from configs/cluster.yaml as it is now."""
    body = yaml.safe_dump(serve_config(load_config(SOURCE), f"{IMAGE_HOME}/configs/cluster.yaml"), sort_keys=False)
    manifest = RAYSERVICE.read_text()
    if not _BLOCK.search(manifest):
        raise ValueError(f"{RAYSERVICE}: no 'serveConfigV2: |' block under spec to regenerate")
    embedded = "".join(f"    {line}\n" if line else "\n" for line in body.splitlines())
    return {SERVE_CONFIG: HEADER + body,
            RAYSERVICE: _BLOCK.sub(lambda m: m.group(1) + embedded, manifest, count=1)}


def write_all() -> list[Path]:
    """Regenerate the files; returns those that changed."""
    changed = []
    for path, text in rendered().items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed
