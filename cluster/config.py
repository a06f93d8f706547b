"""Configuration: pydantic models loaded from YAML (`configs/*.yaml`).

Every model forbids unknown keys, so a typo fails at load with the key named. A config's
`models:` section maps API names to overrides of the built-in catalogue entry (usually just
`source:`); a new name must say which catalogue entry it is `like:`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cluster.models import CATALOGUE, ModelSpec

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
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


class RaydiantConfig(BaseModel):
    """The whole configuration file."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelConfig] = Field(description="Models to serve, by API name.")

    def spec(self, name: str) -> ModelSpec:
        """The catalogue entry of `name` with this config's overrides applied."""
        entry = self.models[name]
        base = CATALOGUE[entry.like or name]
        overrides = entry.model_dump(exclude_none=True, exclude={"like"})
        return ModelSpec.model_validate(base.model_dump() | overrides | {"name": name})

    def specs(self) -> dict[str, ModelSpec]:
        return {name: self.spec(name) for name in self.models}

    def check_names(self) -> None:
        for name, entry in self.models.items():
            base = entry.like or name
            if base not in CATALOGUE:
                known = ", ".join(CATALOGUE)
                hint = f"'like: {entry.like}' is not" if entry.like else "it is not"
                raise ConfigError(f"models.{name}: {hint} a catalogue model ({known}); "
                                  f"set 'like:' to one of them")


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
