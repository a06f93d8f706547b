"""The ingress deployment: one FastAPI app with the API façades, result files and /healthz."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.schema import DeploymentStatus

from cluster.config import RaydiantConfig, StorageConfig
from cluster.storage import Storage
from serve.auth import ApiKeys, RateLimiter, configured_keys
from serve.dashscope.router import router as dashscope_router
from serve.dashscope.service import DashScopeService, request_id
from serve.deployment import deployment_name
from serve.files import router as files_router
from serve.tasks.dispatch import Dispatcher
from serve.tasks.factory import open_store

log = logging.getLogger(__name__)

def create_app() -> FastAPI:
    """A fresh app: routes only. The replica fills `app.state` (one app per replica, so its
    state belongs to that replica)."""
    app = FastAPI(title="raydiant", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(dashscope_router, prefix="/api/v1")
    app.include_router(files_router)
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_exception_handler(Exception, internal_error)
    return app


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"request_id": request_id(), "code": "InternalError",
                         "message": "an internal error occurred"}, status_code=500)


async def healthz(request: Request) -> JSONResponse:
    """200 only when every model deployment is HEALTHY in Serve's own view (its controller runs
    each replica's `check_health`). Asking the controller, rather than sending a request,
    keeps the answer right while replicas are busy at capacity."""
    names = list(request.app.state.handles)
    status = await asyncio.to_thread(serve.status)
    app_status = status.applications.get(serve.get_replica_context().app_name)
    deployments = app_status.deployments if app_status else {}
    down = [n for n in names if getattr(deployments.get(deployment_name(n)), "status", None)
            != DeploymentStatus.HEALTHY]
    status = 503 if down else 200
    return JSONResponse({"status": "unavailable" if down else "ok", "models": names, "down": down},
                        status_code=status)


def signing_key(config: StorageConfig) -> bytes:
    explicit = os.environ.get("RAYDIANT_SIGNING_KEY") or config.signing_key
    if explicit:
        return explicit.encode()
    path = Path(config.signing_key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        staging.write_text(secrets.token_hex(32))
        staging.chmod(0o600)
        try:
            os.link(staging, path)  # atomic create-if-absent: concurrent replicas agree on one key
        except FileExistsError:
            pass
        finally:
            staging.unlink()
    return path.read_text().strip().encode()


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000, graceful_shutdown_timeout_s=30)
@serve.ingress()
class Ingress:
    async def __init__(self, config: dict, models: dict):
        cfg = RaydiantConfig.model_validate(config)
        keys = ApiKeys(configured_keys(cfg.serve.api_keys))
        if not keys:
            raise RuntimeError("no API keys configured: set RAYDIANT_API_KEYS or serve.api_keys")
        storage = Storage(cfg.storage.root, signing_key=signing_key(cfg.storage),
                          public_url=cfg.serve.public_url or "")
        concurrency = {
            name: cfg.serve.deployment(name).autoscaling.max_replicas * cfg.serve.deployment(name).max_ongoing_requests
            for name in models}
        self.dispatcher = Dispatcher(open_store(cfg.tasks), storage, models, cfg.serve, concurrency)
        self.dispatcher.start()
        specs = {name: cfg.spec(name) for name in models}
        self._fastapi = app = create_app()
        app.state.settings = cfg.serve
        app.state.api_keys = keys
        app.state.rate_limiter = RateLimiter(cfg.serve.rate_limit.requests_per_second, cfg.serve.rate_limit.burst)
        app.state.storage = storage
        app.state.handles = models
        app.state.dashscope = DashScopeService(specs, self.dispatcher, storage, cfg.serve)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self._fastapi
