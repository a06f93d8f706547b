"""LoRA adapters per request: what a caller may name, checked once into a `Lora`.

A request carries up to `LoraPolicy.max` adapters, each `{path, scale}`. `path` is one of:

- a configured name (`loras.named` in the config: `ghibli: s3://bucket/loras/ghibli.safetensors`);
- an http(s) URL of a `.safetensors` file, fetched under the address rules of cluster/storage/guarded_fetch.py;
- a Hugging Face hub id, `org/repo` (its `pytorch_lora_weights.safetensors`) or
  `org/repo/file.safetensors`;
- a local path (`/...`, or `./...` taken from the root) under the configured `loras.local_root`
  (no way out of it: `..` and links that leave it are refused);
- an fsspec URI under one of the configured `loras.fsspec_prefixes` (the service's credentials
  must not read whatever bucket a caller names).

Which of these kinds a model takes is its `sources`. Only safetensors files are ever loaded
(never a pickle: `.bin`, `.pt`, `.ckpt` names are refused here, and the loader reads only a
safetensors header and tensors). `resolve_loras` is called by `ModelSpec.resolve`, the one check
a request gets; it never fetches anything (the replica or the batch worker does, once per node).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from cluster.spec.errors import RenderError

LoraKind = Literal["named", "https", "hub", "local", "fsspec"]
DEFAULT_SOURCES: list[LoraKind] = ["named", "https", "hub", "local", "fsspec"]
HUB_FILE = "pytorch_lora_weights.safetensors"  # what diffusers' save_lora_weights writes
_HUB = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+\.safetensors)?$")
_PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class LoraPolicy(BaseModel):
    """Which adapters one model's requests may name (the config's `loras` section and the
    model's own `max_loras` and `lora_sources`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max: int = Field(3, ge=0, description="Most adapters per request (0: this model takes none).")
    sources: list[LoraKind] = Field(default_factory=lambda: list(DEFAULT_SOURCES),
                                    description="Kinds of path accepted: named, https, hub, local, fsspec.")
    named: dict[str, str] = Field(default_factory=dict, description="Configured adapters: name -> location.")
    local_root: str | None = Field(None, description="Local paths must be under this folder (none: refused).")
    fsspec_prefixes: list[str] = Field(default_factory=list,
                                       description="fsspec URIs must start with one of these (none: refused).")
    max_scale: float = Field(4.0, gt=0, description="Largest |scale|.")
    max_rank: int = Field(256, ge=1, le=4096, description="Largest rank of an adapter's layer.")


@dataclass(frozen=True)
class LoraRef:
    """An adapter as a caller wrote it: nothing checked yet."""

    path: str
    scale: float = 1.0


@dataclass(frozen=True)
class Lora:
    """A checked adapter: where its file comes from, and its scale."""

    path: str  # as the caller named it (records and metadata show this)
    kind: Literal["https", "hub", "local", "fsspec"]  # of `location` (a configured name resolved)
    location: str  # URL, hub id (org/repo/file.safetensors), absolute local path or fsspec URI
    scale: float
    trusted: bool = False  # configured by the operator (`loras.named`): fetched with the service's credentials


@dataclass(frozen=True)
class AppliedLora:
    """An adapter as it was applied to an image: what records, answers and metadata show."""

    path: str
    sha256: str  # of the safetensors file
    scale: float

    def as_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "scale": self.scale}


def adapter_set_id(loras: tuple[Lora, ...]) -> str:
    """The identity of a set of adapters with their scales (`resolve_loras` puts them in one
    order): one device batch holds one set, and Serve routes a request to a replica that holds
    its set by this id."""
    if not loras:
        return ""
    canonical = json.dumps([[lora.location, lora.scale] for lora in loras])
    return "loras-" + hashlib.sha256(canonical.encode()).hexdigest()[:20]


def resolve_loras(refs: tuple[LoraRef, ...], policy: LoraPolicy, model: str) -> tuple[Lora, ...] | RenderError:
    """Check a request's adapters against a model's policy (errors name the parameter `loras`)."""
    if len(refs) > policy.max:
        if policy.max == 0:
            return RenderError.invalid("loras", f"are not taken by model {model}")
        return RenderError.invalid("loras", f"must be at most {policy.max} for model {model}, got {len(refs)}")
    resolved: list[Lora] = []
    for i, ref in enumerate(refs):
        lora = _resolve_one(ref, policy)
        if isinstance(lora, str):
            return RenderError.invalid("loras", f"item {i}: {lora}")
        if any(earlier.location == lora.location for earlier in resolved):
            return RenderError.invalid("loras", f"item {i}: path names an adapter already in the list; give it once "
                                                f"with the sum of the scales")
        resolved.append(lora)
    # A set is a set: the same adapters in any order are one set (one batch key, one cache
    # entry); the engine adds their deltas in the order of their files' hashes.
    return tuple(sorted(resolved, key=lambda lora: (lora.location, lora.scale)))


def _resolve_one(ref: LoraRef, policy: LoraPolicy) -> Lora | str:
    """The adapter, or what follows `loras[i].` in the error."""
    if not isinstance(ref.scale, (int, float)) or isinstance(ref.scale, bool) or not math.isfinite(ref.scale):
        return f"scale must be a number, got {ref.scale!r}"
    if abs(ref.scale) > policy.max_scale:
        return f"scale must be -{policy.max_scale:g}..{policy.max_scale:g}, got {ref.scale:g}"
    path = ref.path.strip() if isinstance(ref.path, str) else ""
    if not path:
        return "path must not be empty"
    if path in policy.named:
        if "named" not in policy.sources:
            return "path: configured adapters are not taken by this model"
        located = _classify(policy.named[path], policy, trusted=True)
        if isinstance(located, str):
            return f"path {path!r}: its configured location is wrong: {located}"
        kind, location = located
        return Lora(path=path, kind=kind, location=location, scale=float(ref.scale), trusted=True)
    located = _classify(path, policy, trusted=False)
    if isinstance(located, str):
        return f"path {located}"
    kind, location = located
    if kind not in policy.sources:
        return f"path: {kind} adapters are not taken by this model (it takes: {', '.join(policy.sources) or 'none'})"
    return Lora(path=path, kind=kind, location=location, scale=float(ref.scale))


def _classify(path: str, policy: LoraPolicy, trusted: bool) -> tuple[str, str] | str:
    """(kind, location) of a path, or why it cannot be one. `trusted`: a location from the
    config, which may be a local path or fsspec URI outside the caller's limits."""
    if len(path) > 2048:
        return "is longer than 2048 characters"
    lowered = path.lower().split("?", 1)[0]
    if lowered.endswith(_PICKLES):
        return "names a pickle file: only .safetensors adapters are loaded"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "holds control characters"
    if lowered.startswith(("http://", "https://")):
        if not lowered.endswith(".safetensors"):
            return "must be the URL of a .safetensors file"
        try:
            parts = urlsplit(path)
            parts.port  # noqa: B018 - raises for a port out of range
        except ValueError:
            return "is not a valid http(s) URL"
        if "@" in parts.netloc:  # records and logs keep the path: no credentials in it
            return "must not carry credentials (user:password@)"
        return "https", path
    if "://" in path:
        if not lowered.endswith(".safetensors"):
            return "must name a .safetensors file"
        if not trusted and (problem := _outside_prefixes(path, policy.fsspec_prefixes)):
            return problem
        return "fsspec", path
    if path.startswith(("/", "./", "../", "~")):
        return _local(path, policy, trusted)
    if ".." in path.split("/"):
        return "must not hold a '..' segment"
    if _HUB.match(path) and not path.split("/")[1].lower().endswith(".safetensors"):
        return "hub", path if lowered.endswith(".safetensors") else f"{path}/{HUB_FILE}"
    return (f"is not a configured name, an http(s) URL, a hub id (org/repo or org/repo/file.safetensors) "
            f"or a local path (starting with / or ./): {path!r}")


def _outside_prefixes(uri: str, prefixes: list[str]) -> str | None:
    """Why a caller's storage URI is not under one of the configured prefixes, or None. Matched
    as paths, not as text: `s3://bucket/loras` does not cover `s3://bucket/loras-private/`, and
    no `..` segment or `::` chain (fsspec's way of reading one URL through another) is taken."""
    if "::" in uri:
        return "is a chained storage URI (::), which is not taken"
    scheme, _, rest = uri.partition("://")
    if any(segment in ("..", ".") for segment in rest.split("/")):
        return "must not hold '.' or '..' segments"
    for prefix in prefixes:
        base = prefix.rstrip("/")
        if uri.startswith(base + "/") and base.partition("://")[0] == scheme:
            return None
    return "is a storage URI outside the configured loras.fsspec_prefixes"


def _local(path: str, policy: LoraPolicy, trusted: bool) -> tuple[str, str] | str:
    """An absolute local path; a caller's must be under `loras.local_root` (relative paths are
    taken from it), once links are followed."""
    if not path.lower().endswith(".safetensors"):
        return "must name a .safetensors file"
    given = os.path.expanduser(path)
    if trusted:
        return "local", os.path.realpath(given)
    if policy.local_root is None:
        return "is a local path, and no loras.local_root is configured"
    root = os.path.realpath(os.path.expanduser(policy.local_root))
    full = os.path.realpath(given if os.path.isabs(given) else os.path.join(root, given))
    if os.path.commonpath([full, root]) != root:
        return "leaves loras.local_root"
    return "local", full


MAX_LORA_ITEMS = 16  # read at most this many (each model's own limit is checked by `resolve_loras`)
MAX_LORA_TEXT = 64 * 1024  # characters of a list sent as JSON text (a batch column, a multipart field)


def read_lora_list(value: Any) -> tuple[LoraRef, ...] | RenderError:
    """A request's `loras` as any door sends it: a list of `{path, scale}` objects (scale
    defaults to 1), or the same list as JSON text. The one reader of the HTTP doors, the batch
    job's `loras` column and the CLI's `--lora` flags (`lora_flag_item`); errors name `loras`."""
    if isinstance(value, str):
        if len(value) > MAX_LORA_TEXT:
            return RenderError.invalid("loras", f"must be a JSON list of {{path, scale}} of at most {MAX_LORA_TEXT} characters")
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
            return RenderError.invalid("loras", "must be a JSON list of {path, scale}")
    if not isinstance(value, list) or len(value) > MAX_LORA_ITEMS:
        return RenderError.invalid("loras", f"must be a list of at most {MAX_LORA_ITEMS} {{path, scale}} objects")
    refs = []
    for i, item in enumerate(value):
        ref = _lora_item(item)
        if isinstance(ref, str):
            return RenderError.invalid("loras", f"item {i} {ref}")
        refs.append(ref)
    return tuple(refs)


def _lora_item(item: Any) -> LoraRef | str:
    """One `{path, scale}` object, or what is wrong with it."""
    if not isinstance(item, dict):
        return f"must be an object {{path, scale}}, got {str(item)[:40]!r}"
    if unknown := sorted(str(key) for key in item if key not in ("path", "scale")):
        return f"has an unknown field {unknown[0][:40]!r} (fields: path, scale)"
    path, scale = item.get("path"), item.get("scale")
    if not isinstance(path, str) or not path:
        return "needs a path (text)"
    if scale is None:
        return LoraRef(path, 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        return f"scale must be a number, got {str(scale)[:40]!r}"
    try:
        scale = float(scale)
    except OverflowError:  # an integer of hundreds of digits
        return "scale must be a number in range"
    return LoraRef(path, scale) if math.isfinite(scale) else "scale must be a finite number"


def lora_flag_item(value: str) -> dict:
    """`PATH` or `PATH@SCALE` as a command line gives it (`@`: URLs and paths hold `:`), as the
    `{path, scale}` item `read_lora_list` reads."""
    path, at, scale = value.rpartition("@")
    if at:
        try:
            return {"path": path, "scale": float(scale)}
        except ValueError:
            pass
    return {"path": value}
