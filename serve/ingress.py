"""The ingress deployment: one FastAPI app with the API façades, the web page, result files and
/healthz."""

from __future__ import annotations

import asyncio
import logging
from time import monotonic

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.schema import DeploymentStatus, ReplicaState
from starlette.datastructures import Headers

from cluster.spec.catalogue import deployment_name
from cluster.spec.config import RaydiantConfig
from cluster.spec.errors import ErrorCode, RenderError
from cluster.storage.results import Storage
from serve.doors import registry
from serve.doors.registry import DOORS, door_of
from serve.doors.web.router import page_router, static_files
from serve.edge.auth import ApiKeys, listens_beyond_loopback, weak_secrets
from serve.edge.client_address import client_address, trusted_networks
from serve.edge.errors import ErrorKind, ServiceError
from serve.edge.files import router as files_router
from serve.edge.http import Gate
from serve.edge.ratelimit import RateLimiter
from serve.secrets import for_replica
from serve.tasks.dispatch.capacity import ModelCapacity
from serve.tasks.dispatch.dispatcher import Dispatcher
from serve.tasks.periodic import every
from serve.tasks.service import TaskService
from serve.tasks.store.factory import open_store
from serve.tasks.webhooks.secrets import TenantSecrets
from serve.tasks.webhooks.sender import Webhooks

log = logging.getLogger(__name__)


def create_app() -> FastAPI:
    """A fresh app: routes only. The replica fills `app.state` (one app per replica, so its
    state belongs to that replica)."""
    app = FastAPI(title="raydiant", docs_url=None, redoc_url=None, openapi_url=None)
    for door in DOORS:
        app.include_router(door.router, prefix=door.prefix)
    app.include_router(page_router)
    app.include_router(files_router)
    app.mount("/web/static", static_files, name="web-static")
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_exception_handler(Exception, internal_error)
    app.add_middleware(AnonymousLimit)
    return app


class AnonymousLimit:
    """Requests without a valid key spend their client address's budget (keyed ones spend the
    key's, in `admit`): probes, page loads, result files and guessed keys alike. Over it: 429
    with Retry-After, in the shape of the door of the path. A key found valid here is handed to
    `admit` (`request.state.key_id`), so no request's key is checked twice.

    A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` runs every response through a
    task group and memory streams, a cost on every request of the service."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        state = scope["app"].state if scope["type"] == "http" else None
        gate: Gate | None = getattr(state, "gate", None)
        limiter: RateLimiter | None = getattr(state, "anonymous_limiter", None)
        if gate is None or limiter is None:
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        key = gate.keys.identify(headers.get("authorization"))
        if key is not None:
            scope.setdefault("state", {})["key_id"] = key
            return await self.app(scope, receive, send)
        client = scope.get("client")
        address = client_address(client[0] if client else None, headers.get("x-forwarded-for"),
                                 getattr(state, "trusted_proxies", []))
        wait_s = await limiter.take(address)
        if wait_s:
            refusal = door_of(scope["path"]).error_response(ServiceError(
                ErrorKind.RATE_LIMITED, "Requests rate limit exceeded, please try again later.", retry_after_s=wait_s))
            return await refusal(scope, receive, send)
        return await self.app(scope, receive, send)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return door_of(request.url.path).error_response(RenderError(ErrorCode.INTERNAL, "an internal error occurred"))


# Serving as configured, or autoscaling (a deployment at 0 replicas holds requests while a
# replica starts; one scaling up or down serves with the replicas it has).
SERVING = {DeploymentStatus.HEALTHY, DeploymentStatus.UPSCALING, DeploymentStatus.DOWNSCALING}


def covered(deployment) -> bool:
    """A model is covered when Serve calls its deployment serving, or when at least one of its
    replicas runs (a replica lost with a node is being replaced)."""
    if deployment is None:
        return False
    running = deployment.replica_states.get(ReplicaState.RUNNING, 0)
    return deployment.status in SERVING or (running > 0 and deployment.status != DeploymentStatus.DEPLOY_FAILED)


HEALTH_CACHE_S = 1.0  # /healthz is unauthenticated: at most one controller call a second per ingress


async def healthz(request: Request) -> JSONResponse:
    """200 only when every model is covered in Serve's own view (its controller runs each
    replica's `check_health`). Asking the controller, rather than sending a request, keeps the
    answer right while replicas are busy at capacity. The answer is kept for a second, so a
    flood of unauthenticated probes cannot turn into a flood of controller calls."""
    state = request.app.state
    if not hasattr(state, "health_lock"):
        state.health_lock = asyncio.Lock()
    async with state.health_lock:  # probes that arrive during a call wait for its answer
        cached = getattr(state, "health", None)
        if cached is None or monotonic() - cached[0] >= HEALTH_CACHE_S:
            state.health = (monotonic(), *await _health(list(state.handles)))
        _, body, status = state.health
    return JSONResponse(body, status_code=status)


async def _health(names: list[str]) -> tuple[dict, int]:
    status = await asyncio.to_thread(serve.status)
    app_status = status.applications.get(serve.get_replica_context().app_name)
    deployments = app_status.deployments if app_status else {}
    down = [n for n in names if not covered(deployments.get(deployment_name(n)))]
    return {"status": "unavailable" if down else "ok", "models": names, "down": down}, 503 if down else 200


def _capacity(cfg: RaydiantConfig, model: str) -> ModelCapacity:
    deployment = cfg.serve.deployment(model)
    return ModelCapacity(cfg.spec(model).max_batch_size, deployment.max_ongoing_requests,
                         deployment.autoscaling.min_replicas, deployment.autoscaling.max_replicas,
                         cfg.serve.ingress_replicas)


async def _running_replicas(models: list[str]) -> dict[str, int]:
    """RUNNING replicas of each model's deployment in this application, in Serve's view."""
    status = await asyncio.to_thread(serve.status)
    app_status = status.applications.get(serve.get_replica_context().app_name)
    deployments = app_status.deployments if app_status else {}
    return {model: deployments[deployment_name(model)].replica_states.get(ReplicaState.RUNNING, 0)
            for model in models if deployment_name(model) in deployments}


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000, graceful_shutdown_timeout_s=30)
@serve.ingress()
class Ingress:
    async def __init__(self, config: dict, models: dict, secrets_token: str | None = None):
        """`config` holds no secret (serve/secrets.py): they come from the secret holder by
        `secrets_token`, or from this replica's environment, config and files."""
        cfg = RaydiantConfig.model_validate(config)
        settings = cfg.serve
        secrets = await asyncio.to_thread(for_replica, cfg, secrets_token)
        keys = ApiKeys(list(secrets.api_keys))
        if not keys:
            raise RuntimeError("no API keys configured: set RAYDIANT_API_KEYS or serve.api_keys")
        storage = Storage(cfg.storage.root, signing_key=secrets.signing_key.encode(),
                          public_url=settings.public_url or "")
        await asyncio.to_thread(lambda: storage.served_here)  # asks the credential chain once, off the loop
        capacities = {name: _capacity(cfg, name) for name in models}
        store = open_store(cfg.tasks, secrets.redis_url)
        self.dispatcher = Dispatcher(store, storage, models, settings, capacities,
                                     lambda: _running_replicas(list(models)))
        tasks = TaskService({name: cfg.spec(name) for name in models}, self.dispatcher, storage, settings)
        services = registry.services(tasks)
        if listens_beyond_loopback(settings.host) and (
                weak := weak_secrets(list(secrets.api_keys), secrets.signing_key, secrets.webhook_secret)):
            raise RuntimeError(f"refusing to serve on {settings.host} with weak secrets: {'; '.join(weak)}")
        tasks.webhook_secrets = TenantSecrets(secrets.webhook_secret, secrets.webhook_previous_secret)
        self.webhooks = Webhooks(store, settings.webhooks, tasks.webhook_secrets, tasks.policy,
                                 registry.webhook_bodies(services), owner=self.dispatcher.owner)
        self.dispatcher.on_end = self.webhooks.task_ended
        self.dispatcher.start()
        self._scan = every(settings.lease_s / 2, self.webhooks.scan)
        self._fastapi = app = create_app()
        app.state.settings = settings
        app.state.gate = Gate(keys, RateLimiter(settings.rate_limit, secrets.redis_url), settings.max_body_bytes)
        app.state.trusted_proxies = trusted_networks(settings.trusted_proxies)
        app.state.anonymous_limiter = RateLimiter(settings.anonymous_rate_limit, secrets.redis_url,
                                                  namespace="address")
        app.state.storage = storage
        app.state.handles = models
        app.state.services = services

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self._fastapi
