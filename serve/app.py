"""`build_app`: the Ray Serve application (one deployment per model, plus the ingress).

Used by `raydiant serve`, by `serve run serve.app:build_app config=FILE`, and by a Serve
config file / KubeRay `serveConfigV2` with `import_path: serve.app:build_app`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ray.serve import Application

from cluster.spec.catalogue import deployment_name
from cluster.spec.config import RaydiantConfig, load_config
from serve.edge.auth import listens_beyond_loopback
from serve.ingress import Ingress
from serve.replica.deployment import ModelServer
from serve.secrets import publish, resolve, without_secrets

log = logging.getLogger(__name__)


def _absolute_paths(config: RaydiantConfig) -> RaydiantConfig:
    """Replicas may run in another working directory: pin relative local paths now."""
    storage = config.storage
    if "://" not in storage.root:
        storage.root = os.path.abspath(storage.root)
    storage.signing_key_file = os.path.abspath(storage.signing_key_file)
    config.serve.webhooks.secret_file = os.path.abspath(config.serve.webhooks.secret_file)
    config.tasks.path = os.path.abspath(config.tasks.path)
    return config


def reachable_rules(config: RaydiantConfig) -> RaydiantConfig:
    """Loopback targets are a developer's convenience (a webhook receiver on their own machine):
    once the service is bound beyond loopback, a caller's URL must not reach this host's loopback
    services (the Ray dashboard, a Redis, a sidecar) whatever the profile allows."""
    if listens_beyond_loopback(config.serve.host) and config.serve.fetch.allow_loopback:
        log.warning("serving on %s: loopback fetch targets refused (serve.fetch.allow_loopback is for a "
                    "service bound to loopback only)", config.serve.host)
        config.serve.fetch.allow_loopback = False
    return config


def build_app(args: dict[str, Any] | None = None) -> Application:
    """args: `config` (path; default the embedded local config), `batching` (default true),
    `host` (the address the HTTP proxy binds, when not the config's), `secrets_token` (secrets
    its caller handed to the secret holder already). Otherwise the secrets are resolved here and
    handed to the holder (serve/secrets.py); they are never put in the deployments' arguments:
    the ingress gets their token."""
    args = args or {}
    config = _absolute_paths(load_config(args.get("config")))
    if args.get("host"):
        config.serve.host = str(args["host"])
    config = reachable_rules(config)
    token = args.get("secrets_token") or publish(resolve(config))
    batching = str(args.get("batching", "true")).lower() != "false"
    models = {}
    for name in config.served_models():
        deployment = config.serve.deployment(name)
        models[name] = ModelServer.options(
            name=deployment_name(name),
            autoscaling_config=deployment.autoscaling.serve_config(),
            ray_actor_options=deployment.ray_actor_options,
            max_ongoing_requests=deployment.max_ongoing_requests,
        ).bind(config.spec(name).model_dump(mode="json"), batching, deployment.mixed_batches,
               config.loras.model_dump(mode="json"), config.serve.fetch.model_dump(mode="json"))
    return Ingress.options(name="ingress", num_replicas=config.serve.ingress_replicas).bind(
        without_secrets(config).model_dump(mode="json"), models, token)
