"""Laptop side: submit `raydiant render ...` to a remote Ray cluster with the Job Submission SDK.

What the job runs travels as its `working_dir`: the code (`cluster/`, `serve/`, `jobs/`), the
configs and `pyproject.toml`, copied into a folder of its own first, so nothing else of the
checkout can travel (`infra/` with a filled-in Secret, `var/` with generated keys, a `.env`), and
no file whose name says it is a secret (keys, tokens, `.env`, certificates) even inside those.
A config holding a secret in its text (API keys, a signing key, a webhook secret, a password in
a URL, a hub token, a private key) stops the submission, naming the file and the field: it
would be readable by anyone who can read the job's files.
The list is shown before it is sent. The job runs the same `raydiant` CLI there, so what works
locally works on the cluster.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import shlex
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from cluster.spec.errors import first_line

PROJECT = Path(__file__).resolve().parent.parent
SHIPPED = ["cluster", "serve", "jobs", "configs", "pyproject.toml"]  # what a job needs, nothing more
NEVER_SHIPPED = ["*.key", "*secret*", "*token*", ".env", ".env.*", "*.pem", "*.p12", "__pycache__", "*.pyc"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# A config's fields that hold secrets (cluster/spec/config.py), and secrets recognisable in any text.
SECRET_FIELDS = [("serve", "api_keys"), ("storage", "signing_key"), ("serve", "webhooks", "secret"),
                 ("serve", "webhooks", "previous_secret")]
SECRET_TEXT = {"a password in a URL": re.compile(r"://[^/@\s:]*:[^/@\s]+@"),
               "a Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}"),
               "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")}


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


def _never_shipped(name: str) -> bool:
    return any(fnmatch.fnmatch(name.lower(), pattern) for pattern in NEVER_SHIPPED)


def secrets_in(relative: str, text: str) -> list[str]:
    """What secrets a shipped file's text holds, named by field or kind (never the values)."""
    found = [kind for kind, pattern in SECRET_TEXT.items() if pattern.search(text)]
    if relative.endswith((".yaml", ".yml")):
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError:
            config = None
        for path in SECRET_FIELDS:
            value = config
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if value:
                found.append(".".join(path))
    return found


def package(destination: Path, project: Path = PROJECT) -> list[str]:
    """Copy what a job needs into `destination`; returns the files copied (relative paths).
    Raises SubmitError when a file to ship holds a secret."""
    copied: list[str] = []
    for top in SHIPPED:
        source = project / top
        paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        for path in paths:
            relative = path.relative_to(project)
            # A module's name is code, not a secret (`tiny_tokenizers.py`, `secrets.py`): the job
            # imports every module of the packages. Its folders' names, and every other file's,
            # are checked.
            named = relative.parts[:-1] if relative.suffix == ".py" else relative.parts
            if any(_never_shipped(part) for part in named):
                continue
            if path.suffix != ".py" and (found := secrets_in(str(relative), path.read_text(errors="replace"))):
                raise SubmitError(f"{relative} holds {', '.join(found)}: a shipped file is readable by anyone who "
                                  f"can read the job's files; put secrets in the cluster's environment (RAYDIANT_* "
                                  f"variables from a Secret) instead")
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination / relative)
            copied.append(str(relative))
    return copied


def describe(files: list[str]) -> str:
    """What travels, by top folder: shown before anything is sent."""
    counts: dict[str, int] = {}
    for name in files:
        top = name.split("/", 1)[0] + ("/" if "/" in name else "")
        counts[top] = counts.get(top, 0) + 1
    parts = ", ".join(f"{top} ({n} file{'s' if n != 1 else ''})" if top.endswith("/") else top
                      for top, n in counts.items())
    return f"shipping {len(files)} files: {parts}"


def runtime_env(working_dir: Path, extra_file: Path | None) -> dict[str, Any]:
    env: dict[str, Any] = {"working_dir": str(working_dir), "env_vars": {"PYTHONPATH": "."}}
    if extra_file is not None:
        extra = yaml.safe_load(extra_file.read_text()) or {}
        env = env | extra | {"env_vars": env["env_vars"] | extra.get("env_vars", {})}
    return env


def submit(address: str, args: list[str], extra_env: Path | None = None,
           show: Callable[[str], None] = lambda line: None) -> str:
    """Submit `raydiant <args>`; returns the job id. `show` hears what will travel, first."""
    entrypoint = "python -m cluster.cli " + " ".join(shlex.quote(a) for a in args)
    jobs = client(address)
    with tempfile.TemporaryDirectory(prefix="raydiant-job-") as folder:
        show(describe(package(Path(folder))))
        with failing_as(f"job submission to {address}"):  # uploads the folder before it returns
            return jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env(Path(folder), extra_env))


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
