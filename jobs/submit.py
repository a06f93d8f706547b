"""Laptop side: submit `raydiant render ...` to a remote Ray cluster with the Job Submission SDK.

The project directory travels as the job's `working_dir` (without .venv, outputs, tests), and the
job runs the same `raydiant` CLI there, so what works locally works on the cluster.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from cluster.errors import first_line

PROJECT = Path(__file__).resolve().parent.parent
EXCLUDES = [".venv", "var", "tests", ".git", "**/__pycache__", "*.egg-info", ".pytest_cache", "bench"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class SubmitError(Exception):
    """The cluster is unreachable, or a job cannot be found (message says which)."""


@contextmanager
def failing_as(what: str) -> Iterator[None]:
    """Any failure of the Job Submission SDK inside, as one `SubmitError` line naming `what`."""
    try:
        yield
    except SubmitError:
        raise
    except Exception as exc:  # noqa: BLE001 - the SDK raises many types for one failure
        raise SubmitError(f"{what} failed: {first_line(exc)}") from None


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - connection failures come in many types
        reason = first_line(exc)
        hint = ("; set RAY_AUTH_MODE=token and put the cluster's token in ~/.ray/auth_token"
                if "authentication" in reason.lower() else "")
        raise SubmitError(f"cannot reach the Ray cluster at {address}: {reason}{hint}") from None


def runtime_env(extra_file: Path | None) -> dict[str, Any]:
    env: dict[str, Any] = {"working_dir": str(PROJECT), "excludes": EXCLUDES,
                           "env_vars": {"PYTHONPATH": "."}}
    if extra_file is not None:
        extra = yaml.safe_load(extra_file.read_text()) or {}
        env = env | extra | {"env_vars": env["env_vars"] | extra.get("env_vars", {})}
    return env


def submit(address: str, args: list[str], extra_env: Path | None = None) -> str:
    """Submit `raydiant <args>`; returns the job id."""
    entrypoint = "python -m cluster.cli " + " ".join(shlex.quote(a) for a in args)
    with failing_as(f"job submission to {address}"):
        return client(address).submit_job(entrypoint=entrypoint, runtime_env=runtime_env(extra_env))


def follow(address: str, job_id: str, write: Callable[[str], None]) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    jobs = client(address)

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(job_id):
            write(lines)

    asyncio.run(tail())
    while (status := str(jobs.get_job_status(job_id).value)) not in TERMINAL:
        time.sleep(0.5)
    return status


def call(address: str, method: str, *args: Any) -> Any:
    with failing_as(method.replace("_", " ")):
        return getattr(client(address), method)(*args)
