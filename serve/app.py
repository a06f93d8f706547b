"""`build_app`: the Ray Serve application (one deployment per model, plus the ingress).

Used by `raydiant serve`, by `serve run serve.app:build_app config=FILE`, and by a Serve
config file / KubeRay `serveConfigV2` with `import_path: serve.app:build_app`.
"""

from __future__ import annotations

import os
from typing import Any

from ray.serve import Application

from cluster.config import RaydiantConfig, load_config
from serve.deployment import ModelServer, deployment_name
from serve.ingress import Ingress


def _absolute_paths(config: RaydiantConfig) -> RaydiantConfig:
    """Replicas may run in another working directory: pin relative local paths now."""
    storage = config.storage
    if "://" not in storage.root:
        storage.root = os.path.abspath(storage.root)
    storage.signing_key_file = os.path.abspath(storage.signing_key_file)
    config.serve.webhooks.secret_file = os.path.abspath(config.serve.webhooks.secret_file)
    config.tasks.path = os.path.abspath(config.tasks.path)
    return config


def build_app(args: dict[str, Any] | None = None) -> Application:
    """args: `config` (path; default the embedded local config), `batching` (default true)."""
    args = args or {}
    config = _absolute_paths(load_config(args.get("config")))
    batching = str(args.get("batching", "true")).lower() != "false"
    models = {}
    for name in config.served_models():
        deployment = config.serve.deployment(name)
        models[name] = ModelServer.options(
            name=deployment_name(name),
            autoscaling_config=deployment.autoscaling.model_dump(),
            ray_actor_options=deployment.ray_actor_options,
            max_ongoing_requests=deployment.max_ongoing_requests,
        ).bind(config.spec(name).model_dump(mode="json"), deployment.batch_wait_timeout_s, batching)
    return Ingress.options(name="ingress").bind(config.model_dump(mode="json"), models)
