"""`build_app`: the Ray Serve application (one deployment per model, plus the ingress).

Used by `raydiant serve`, by `serve run serve.app:build_app config=FILE`, and by a Serve
config file / KubeRay `serveConfigV2` with `import_path: serve.app:build_app`.
"""

from __future__ import annotations

import os
from typing import Any

from ray.serve import Application

from cluster.config import RaydiantConfig, load_config
from serve.edge.auth import configured_keys
from cluster.models import deployment_name
from serve.replica.deployment import ModelServer
from serve.ingress import Ingress
from serve.secrets import load_secret, new_signing_key, new_webhook_secret
from serve.tasks.factory import redis_url


def _absolute_paths(config: RaydiantConfig) -> RaydiantConfig:
    """Replicas may run in another working directory: pin relative local paths now."""
    storage = config.storage
    if "://" not in storage.root:
        storage.root = os.path.abspath(storage.root)
    storage.signing_key_file = os.path.abspath(storage.signing_key_file)
    config.serve.webhooks.secret_file = os.path.abspath(config.serve.webhooks.secret_file)
    config.tasks.path = os.path.abspath(config.tasks.path)
    return config


def _carried_settings(config: RaydiantConfig) -> RaydiantConfig:
    """Resolve the settings that come from the environment where the application is built, so
    they reach replicas on every node: API keys, the signing key, the webhook secret, the task
    store URL. They travel in the ingress's constructor arguments, which neither `serve status`
    nor the dashboard shows (a runtime_env's env_vars would be shown in both). A generated
    signing key or webhook secret is read here once too, so replicas on other nodes (other
    disks) sign with the same one."""
    settings = config.serve
    settings.api_keys = configured_keys(settings.api_keys)
    config.storage.signing_key = load_secret("RAYDIANT_SIGNING_KEY", config.storage.signing_key,
                                             config.storage.signing_key_file, new_signing_key)
    settings.webhooks.secret = load_secret("RAYDIANT_WEBHOOK_SECRET", settings.webhooks.secret,
                                           settings.webhooks.secret_file, new_webhook_secret)
    config.tasks.url = redis_url(config.tasks)
    return config


def build_app(args: dict[str, Any] | None = None) -> Application:
    """args: `config` (path; default the embedded local config), `batching` (default true)."""
    args = args or {}
    config = _carried_settings(_absolute_paths(load_config(args.get("config"))))
    batching = str(args.get("batching", "true")).lower() != "false"
    models = {}
    for name in config.served_models():
        deployment = config.serve.deployment(name)
        models[name] = ModelServer.options(
            name=deployment_name(name),
            autoscaling_config=deployment.autoscaling.serve_config(),
            ray_actor_options=deployment.ray_actor_options,
            max_ongoing_requests=deployment.max_ongoing_requests,
        ).bind(config.spec(name).model_dump(mode="json"), batching, deployment.mixed_batches)
    return Ingress.options(name="ingress", num_replicas=config.serve.ingress_replicas).bind(
        config.model_dump(mode="json"), models)
