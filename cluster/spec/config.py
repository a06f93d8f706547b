"""Configuration: pydantic models loaded from YAML (`configs/*.yaml`).

Every model forbids unknown keys, so a typo fails at load with the key named. A config's
`models:` section maps API names to overrides of the built-in catalogue entry (usually just
`source:`); a new name must say which catalogue entry it is `like:`.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cluster.spec.catalogue import CATALOGUE, ModelSpec
from cluster.spec.loras import DEFAULT_SOURCES, LoraKind, LoraPolicy
from cluster.spec.settings import FastSettings, Quantization, SimulatedTiming

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "local.yaml"


class ConfigError(Exception):
    """A config file is missing, not YAML, or does not match the schema (message says where)."""


class ModelConfig(BaseModel):
    """One entry of `models:`: overrides of the catalogue entry with the same name (or `like`)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Weights: hub id, local dir, fsspec URI, tiny:<family> or random:<family>.")
    like: str | None = Field(None, description="Catalogue entry to inherit limits from (for new names).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = Field(None, description="Weights dtype.")
    max_batch_size: int | None = Field(None, ge=1, description="Most images rendered in one batch.")
    default_steps: int | None = Field(None, ge=1, description="Denoising steps when a request gives none.")
    default_guidance: float | None = Field(None, description="Guidance when a request gives none.")
    offload: bool | None = Field(None, description="Diffusers model CPU offload on GPU.")
    warmup: bool | None = Field(None, description="Render once at load.")
    simulated: SimulatedTiming | None = Field(
        None, description="SIMULATED GPU timing for sim:<family> sources: {base_s, per_image_s}.")
    max_loras: int | None = Field(None, ge=0, description="Most LoRA adapters per request (default 3; 0: none).")
    lora_sources: list[LoraKind] | None = Field(
        None, description="Kinds of LoRA path this model takes (default all: named, https, hub, local, fsspec; "
                          "local and fsspec also need loras.local_root / loras.fsspec_prefixes).")
    lora_slots: int | None = Field(None, ge=1, description="Adapter sets a replica keeps loaded (default 3).")
    lora_rank: int | None = Field(None, ge=1, le=1024, description="Compiled models with max_loras: the rank of "
                                                                    "their one adapter slot (default 64).")
    fast: FastSettings | None = Field(None, description="What quality 'fast' means: {method: taylorseer | "
                                                        "first_block | none, ...} (default: the catalogue's).")
    compile: bool | None = Field(None, description="Regional compile of the denoiser, warmed up at load.")
    compile_sizes: list[str] | None = Field(None, description="W*H sizes warmed up when compiled.")
    quantize: Quantization | None = Field(None, description="none, int8_weight_only or fp8 (Ada/Hopper GPUs).")
    fill: str | None = Field(None, description="FLUX models: FLUX.1 Fill weights (a source) that render inpaints "
                                               "(default: the model's own weights, FluxInpaintPipeline).")
    preview_decoder: str | None = Field(None, description="AutoencoderTiny weights (a source, e.g. madebyollin/taef1) "
                                                          "that draw previews at full size (default: a linear "
                                                          "latent-to-RGB map, an eighth of each side).")


class LoraConfig(BaseModel):
    """LoRA adapters: the ones configured by name, where callers' paths may point, the node cache."""

    model_config = ConfigDict(extra="forbid")

    named: dict[str, str] = Field(default_factory=dict, description="name -> location (hub id, URL, local "
                                                                    "path or fsspec URI), e.g. ghibli: s3://b/g.safetensors.")
    local_root: str | None = Field(None, description="Callers' local paths must be under this folder.")
    fsspec_prefixes: list[str] = Field(default_factory=list, description="Callers' fsspec URIs must start with one.")
    max_scale: float = Field(4.0, gt=0, description="Largest |scale| of an adapter.")
    cache_dir: str | None = Field(None, description="Per-node disk cache (default $RAYDIANT_CACHE/loras).")
    cache_bytes: int = Field(20 * 2**30, gt=0, description="Disk cache size; least recently used files go first.")
    max_file_bytes: int = Field(2 * 2**30, gt=0, description="Largest adapter file fetched.")


class AutoscalingConfig(BaseModel):
    """Ray Serve autoscaling of one model deployment (see Ray Serve's autoscaling_config)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0, description="Fewest replicas (0 allows scale to zero).")
    max_replicas: int = Field(1, ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(2.0, gt=0, description="Requests per replica to aim for.")
    upscale_delay_s: float | None = Field(None, ge=0, description="Load must last this long before scaling up "
                                                                  "(default: Serve's).")
    downscale_delay_s: float | None = Field(None, ge=0, description="Idle this long before scaling down "
                                                                    "(default: Serve's).")
    look_back_period_s: float | None = Field(None, gt=0, description="Window the load is averaged over "
                                                                     "(default: Serve's).")

    def serve_config(self) -> dict[str, Any]:
        """Ray Serve's autoscaling_config (unset timings take Serve's defaults)."""
        return self.model_dump(exclude_none=True)


class DeploymentConfig(BaseModel):
    """How one model is deployed on Ray Serve."""

    model_config = ConfigDict(extra="forbid")

    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig, description="Replica autoscaling.")
    ray_actor_options: dict[str, Any] = Field(
        default_factory=lambda: {"num_cpus": 0},
        description="Ray actor options of each replica, e.g. {num_gpus: 1}.")
    max_ongoing_requests: int = Field(8, ge=1, description="Requests a replica takes at once (>= batch size; "
                                                           "3x the batch size when batch jobs render through "
                                                           "the service: they keep two batches per replica).")
    mixed_batches: bool = Field(False, description="Let batch work (jobs rendering through the service) fill a "
                                                   "device batch that holds interactive requests: more images "
                                                   "per GPU second, slower interactive requests.")


class RateLimitConfig(BaseModel):
    """Per-API-key token bucket."""

    model_config = ConfigDict(extra="forbid")

    requests_per_second: float = Field(10.0, gt=0, description="Sustained rate per key.")
    burst: int = Field(20, ge=1, description="Requests a key may send at once.")


class FilesConfig(BaseModel):
    """Batch input files (OpenAI's `/v1/files`, purpose batch), per key, in the result storage."""

    model_config = ConfigDict(extra="forbid")

    max_bytes: int = Field(200 * 1024 * 1024, gt=0, description="Largest file (OpenAI's batch input limit: 200 MB).")
    max_lines: int = Field(50_000, gt=0, description="Most lines (requests) a file holds (OpenAI's: 50,000).")
    max_line_bytes: int | None = Field(None, gt=0, description="Longest line: one request's body (default: "
                                                               "serve.max_body_bytes, the cap of a body).")
    max_per_key: int = Field(500, gt=0, description="Files one key keeps at once (429 beyond: delete some).")
    max_uploads_per_key: int = Field(2, gt=0, description="Uploads one key has in flight on an ingress replica "
                                                          "(429 beyond): its fair share of the spool disk.")
    retention_days: float = Field(30, gt=0, description="A file expires this long after its upload.")


class FetchConfig(BaseModel):
    """Server-side requests to client-given URLs (input images, webhooks); see cluster/storage/guarded_fetch.py."""

    model_config = ConfigDict(extra="forbid")

    allow_loopback: bool = Field(False, description="Allow loopback targets (a developer's own receiver).")
    allow_private: bool = Field(False, description="Allow private-range targets (10/8, 192.168/16, ...). "
                                                   "Link-local and metadata addresses are refused always.")
    max_redirects: int = Field(3, ge=0, description="Redirects followed (each hop checked) for input images.")
    timeout_s: float = Field(20.0, gt=0, description="Longest a fetch or one webhook attempt may take.")
    max_image_pixels: int = Field(40_000_000, gt=0, description="Largest input image, in pixels.")


class WebhookConfig(BaseModel):
    """Task-end webhooks (Standard Webhooks signatures)."""

    model_config = ConfigDict(extra="forbid")

    secret: str | None = Field(None, description="whsec_... signing secret (default: $RAYDIANT_WEBHOOK_SECRET, "
                                                 "else secret_file).")
    secret_file: str = Field("var/webhook.secret", description="Generated once when no secret is given.")
    previous_secret: str | None = Field(None, description="While rotating: the secret before `secret` "
                                                          "(default: $RAYDIANT_WEBHOOK_PREVIOUS_SECRET); "
                                                          "deliveries are signed with both.")
    # Retries: a failed attempt is tried again later, each wait twice the last.
    first_retry_s: float = Field(1.0, gt=0, description="Wait before the first retry; doubles each time.")
    max_retry_s: float = Field(300.0, gt=0, description="Longest wait between two attempts.")
    give_up_after_s: float = Field(86400.0, gt=0, description="No attempt starts later than this after the task ended.")
    # Deliveries in flight: bounded for the replica, and shared fairly between keys.
    max_concurrent: int = Field(32, ge=1, description="Deliveries in flight per ingress replica.")
    max_concurrent_per_key: int = Field(4, ge=1, description="Of those, in flight for one API key's tasks: a "
                                                             "slow receiver holds only its own key's slots.")


class ServeConfig(BaseModel):
    """The online service."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="HTTP bind address.")
    port: int = Field(8000, description="HTTP port.")
    public_url: str | None = Field(None, description="Base URL clients reach us at (default http://host:port).")
    models: list[str] | None = Field(None, description="Models to deploy (default: all configured).")
    ingress_replicas: int = Field(1, ge=1, description="Ingress (API) replicas; they share the task store.")
    api_keys: list[str] = Field(default_factory=list, description="Accepted keys (also $RAYDIANT_API_KEYS).")
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig, description="Per-key rate limit.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of the load balancers in front of the service: only a "
                    "request from one of them has its client address taken from X-Forwarded-For (the "
                    "nearest address not itself a trusted proxy). Default none: the peer address counts.")
    anonymous_rate_limit: RateLimitConfig = Field(
        default_factory=lambda: RateLimitConfig(requests_per_second=50, burst=500),
        description="Per client address, for requests without a valid key: /healthz, the page, result "
                    "files, wrong keys.")
    max_body_bytes: int = Field(12 * 1024 * 1024, description="Largest request body accepted.")
    max_image_bytes: int = Field(10 * 1024 * 1024, description="Largest input image (edit models).")
    fetch: FetchConfig = Field(default_factory=FetchConfig, description="Rules for image_url and callback_url.")
    files: FilesConfig = Field(default_factory=FilesConfig, description="Batch input files (/v1/files).")
    webhooks: WebhookConfig = Field(default_factory=WebhookConfig, description="Task-end webhooks.")
    model_aliases: dict[str, str] = Field(
        default_factory=dict, description="Provider model names -> configured models (flux-pro: flux-dev).")
    max_queued_per_model: int = Field(64, ge=1, description="Waiting tasks per model before 503 (split "
                                                            "between the ingress replicas).")
    max_queued_per_key: int = Field(16, ge=1, description="Waiting tasks per API key and model before 429: no key "
                                                          "fills a model's queue (split between the ingress "
                                                          "replicas).")
    max_kept_per_key: int = Field(100_000, ge=1, description="Task records one API key may keep at once (they "
                                                             "live retention_s) before 429: no key fills the task "
                                                             "store shared by all (the shipped Redis holds about "
                                                             "1.1 M).")
    max_request_cost: float = Field(512.0, gt=0, description="Largest request, in megapixel-steps (n x steps x "
                                                             "W x H / 2^20; 1024*1024, 50 steps, n 4 is 200; "
                                                             "2048*2048 at 100 steps is 1600).")
    # How long things live: a task, its lease, its record and files, its URLs, a caller's wait.
    task_deadline_s: float = Field(600.0, gt=0, description="A task not done by then ends FAILED.")
    max_attempts: int = Field(3, ge=1, description="Dispatch attempts when a replica or ingress dies.")
    lease_s: float = Field(15.0, gt=0, description="An unrenewed task lease this old is re-dispatched.")
    retention_s: int = Field(86400, gt=0, description="Task records and result files live this long.")
    url_expiry_s: int = Field(86400, gt=0, description="Result URLs are valid this long.")
    sync_timeout_s: float = Field(300.0, gt=0, description="Longest a synchronous create waits.")
    duplicate_window_s: float = Field(
        30.0, ge=0, description="A request identical to an earlier one from the same key (OpenAI door, no "
        "Idempotency-Key) joins that task while it runs, or up to this long after it succeeded.")
    deployments: dict[str, DeploymentConfig] = Field(
        default_factory=dict, description="Per-model deployment settings; key 'default' applies to all.")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an address or a network (CIDR)") from None
        return proxies

    def deployment(self, model: str) -> DeploymentConfig:
        return self.deployments.get(model) or self.deployments.get("default") or DeploymentConfig()


class TaskStoreConfig(BaseModel):
    """Where task records live: an SQLite file (embedded default) or Redis (clusters)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["sqlite", "redis"] = Field("sqlite", description="Store backend.")
    path: str = Field("var/tasks.sqlite", description="SQLite file (sqlite backend).")
    url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (redis backend; $RAYDIANT_REDIS_URL).")


class StorageConfig(BaseModel):
    """Where result files live."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field("var/results", description="Local path or fsspec URI (s3://bucket/prefix).")
    signing_key: str | None = Field(None, description="HMAC key for local result URLs "
                                                      "(default: $RAYDIANT_SIGNING_KEY, else signing_key_file).")
    signing_key_file: str = Field("var/signing.key", description="Generated once when no key is given, so "
                                                                  "URLs stay valid across restarts.")


class RaydiantConfig(BaseModel):
    """The whole configuration file."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelConfig] = Field(description="Models to serve, by API name.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="The online service.")
    tasks: TaskStoreConfig = Field(default_factory=TaskStoreConfig, description="Task records.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Result files.")
    loras: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapters per request.")

    def served_models(self) -> list[str]:
        return self.serve.models if self.serve.models is not None else list(self.models)

    def spec(self, name: str) -> ModelSpec:
        """The catalogue entry of `name` with this config's overrides applied."""
        entry = self.models[name]
        base = CATALOGUE[entry.like or name]
        overrides = entry.model_dump(exclude_none=True, exclude={"like", "max_loras", "lora_sources"})
        # A compiled model takes adapters only when asked (max_loras): its adapter slot costs
        # memory and time on every request (cluster/lora/hotswap.py).
        compiled = overrides.get("compile", base.compile)
        policy = LoraPolicy(max=(0 if compiled else 3) if entry.max_loras is None else entry.max_loras,
                            sources=entry.lora_sources if entry.lora_sources is not None else DEFAULT_SOURCES,
                            named=self.loras.named, local_root=self.loras.local_root,
                            fsspec_prefixes=self.loras.fsspec_prefixes, max_scale=self.loras.max_scale)
        return ModelSpec.model_validate(base.model_dump() | overrides | {"name": name, "loras": policy})

    def specs(self) -> dict[str, ModelSpec]:
        return {name: self.spec(name) for name in self.models}

    def check_names(self) -> None:
        for alias, target in self.serve.model_aliases.items():
            if target not in self.models:
                raise ConfigError(f"serve.model_aliases.{alias}: '{target}' is not in models ({', '.join(self.models)})")
        for name in self.served_models():
            if name not in self.models:
                raise ConfigError(f"serve.models: '{name}' is not in models ({', '.join(self.models)})")
        for name, entry in self.models.items():
            base = entry.like or name
            if base not in CATALOGUE:
                known = ", ".join(CATALOGUE)
                hint = f"'like: {entry.like}' is not" if entry.like else "it is not"
                raise ConfigError(f"models.{name}: {hint} a catalogue model ({known}); "
                                  f"set 'like:' to one of them")
            try:  # the entry with its catalogue model: rules that span both (fill on a FLUX model)
                self.spec(name)
            except ValidationError as exc:
                problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
                raise ConfigError(f"models.{name}: {problems}") from None


def load_config(path: str | Path | None = None) -> RaydiantConfig:
    """Load a config file; `None` means `$RAYDIANT_CONFIG` or the embedded `configs/local.yaml`."""
    path = Path(path or os.environ.get("RAYDIANT_CONFIG") or DEFAULT_CONFIG)
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    try:
        config = RaydiantConfig.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"config file {path}: {problems}") from None
    config.check_names()
    return config
