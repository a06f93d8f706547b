"""The service's secrets (API keys, the signing key of result URLs, the webhook secret, the task
store's Redis URL with its password), and how they reach replicas on every node.

Where a secret comes from, first found wins: the environment (`RAYDIANT_API_KEYS`,
`RAYDIANT_SIGNING_KEY`, `RAYDIANT_WEBHOOK_SECRET`, `RAYDIANT_REDIS_URL` and
`RAYDIANT_REDIS_PASSWORD`), the config, then a file generated once (signing key and webhook
secret), so that signatures stay valid across restarts.

How they travel: never in a deployment's constructor arguments (Serve keeps those in its
checkpoint in the GCS, which KubeRay's fault tolerance puts in Redis) and never in a
runtime_env (`serve status` and the dashboard show it). `build_app` resolves them where the
application is built (`raydiant serve`'s process, or Serve's controller for `serve deploy`)
and hands them by a method call to a small named actor that keeps them in memory only
(`SecretHolder`), under a random token; the ingress gets the token (no secret) and asks the
holder at start. Its limit: a holder that restarts (its node lost) is empty until the
application is built again, and replicas that start meanwhile read their own environment,
config and files, which on Kubernetes carry the same values (the Secret is in every Ray pod's
environment).
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cluster.spec.config import RaydiantConfig
from cluster.storage.local_files import create_once
from serve.edge.auth import configured_keys
from serve.tasks.store.factory import redis_url

HOLDER_NAME = "raydiant-secrets"
HOLDER_NAMESPACE = "raydiant"


def load_secret(env_name: str, configured: str | None, file: str | Path, generate: Callable[[], str]) -> str:
    """`$env_name`, else the config's value, else the content of `file` (created with
    `generate()` the first time; concurrent replicas agree on one value)."""
    explicit = os.environ.get(env_name) or configured
    if explicit:
        return explicit
    path = Path(file)
    if not path.exists():
        create_once(path, generate())
    return path.read_text().strip()


def new_signing_key() -> str:
    return secrets.token_hex(32)


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class ServiceSecrets:
    api_keys: tuple[str, ...]
    signing_key: str
    webhook_secret: str
    redis_url: str  # the task store's (and rate limits') Redis, password included; "" with SQLite
    webhook_previous_secret: str | None = None  # while rotating

    def __repr__(self) -> str:  # never in a log line or a traceback
        return f"ServiceSecrets({len(self.api_keys)} API keys, signing key, webhook secret, Redis URL)"


def resolve(config: RaydiantConfig) -> ServiceSecrets:
    """The secrets as this process finds them: environment, config, generated files."""
    return ServiceSecrets(
        api_keys=tuple(configured_keys(config.serve.api_keys)),
        signing_key=load_secret("RAYDIANT_SIGNING_KEY", config.storage.signing_key,
                                config.storage.signing_key_file, new_signing_key),
        webhook_secret=load_secret("RAYDIANT_WEBHOOK_SECRET", config.serve.webhooks.secret,
                                   config.serve.webhooks.secret_file, new_webhook_secret),
        redis_url=redis_url(config.tasks) if config.tasks.backend == "redis" else "",
        webhook_previous_secret=(os.environ.get("RAYDIANT_WEBHOOK_PREVIOUS_SECRET")
                                 or config.serve.webhooks.previous_secret))


def without_secrets(config: RaydiantConfig) -> RaydiantConfig:
    """`config` with every secret taken out: what may travel in constructor arguments."""
    stripped = config.model_copy(deep=True)
    stripped.serve.api_keys = []
    stripped.storage.signing_key = None
    stripped.serve.webhooks.secret = None
    stripped.serve.webhooks.previous_secret = None
    stripped.tasks.url = ""  # it may hold the Redis password
    return stripped


class SecretHolder:
    """Keeps each built application's secrets in memory, by token. They arrive by `put` (a
    method call, which the GCS does not keep), never as constructor arguments (which it does)."""

    def __init__(self) -> None:
        self._by_token: dict[str, ServiceSecrets] = {}

    def put(self, token: str, values: ServiceSecrets) -> None:
        self._by_token[token] = values

    def get(self, token: str) -> ServiceSecrets | None:
        return self._by_token.get(token)

    def forget(self, token: str) -> None:
        self._by_token.pop(token, None)


def publish(values: ServiceSecrets) -> str:
    """Hand `values` to the holder (started on this node when there is none); returns their token."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(16)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    holder = ray.remote(SecretHolder).options(
        name=HOLDER_NAME, namespace=HOLDER_NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0,
        max_restarts=-1, scheduling_strategy=here).remote()
    ray.get(holder.put.remote(token, values))
    return token


def forget(token: str) -> None:
    """Drop a built application's secrets from the holder (the application was deleted)."""
    import ray

    try:
        ray.get(ray.get_actor(HOLDER_NAME, namespace=HOLDER_NAMESPACE).forget.remote(token), timeout=30)
    except Exception:  # noqa: BLE001 - no holder (never started, or gone with its node): nothing to forget
        pass


def for_replica(config: RaydiantConfig, token: str | None) -> ServiceSecrets:
    """A replica's secrets: those `build_app` published under `token`, else its own
    environment, config and files."""
    import ray

    published = None
    if token:
        try:
            published = ray.get(ray.get_actor(HOLDER_NAME, namespace=HOLDER_NAMESPACE).get.remote(token), timeout=30)
        except Exception:  # noqa: BLE001 - no holder reachable: this process's own sources
            published = None
    return published if published is not None else resolve(config)
