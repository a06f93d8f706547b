"""The `raydiant` command: the render core's own commands (`models`, `generate`), and the mount
point for the commands of `serve/` and `jobs/`.

Those packages register their commands through the `raydiant.commands` entry points (see
pyproject.toml), so the render core imports nothing from them.

Every user error (unknown model, size not allowed, unreadable weights, bad config) ends with one
line on stderr naming the problem and exit status 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from cluster.spec.catalogue import parse_size
from cluster.spec.config import ConfigError, RaydiantConfig, load_config

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="raydiant: a distributed render cluster for text-to-image diffusion models.")
models_app = typer.Typer(no_args_is_help=True, help="Inspect the model catalogue, pull weights, build tiny models.")
app.add_typer(models_app, name="models")

# Piped output gets a wide console, so tables are not cut at 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=200)
errors = Console(stderr=True)

ConfigOption = typer.Option(None, "--config", "-c", help="Config YAML (default: configs/local.yaml).")
# The core's parameter names as `generate` spells them, for its error messages.
_FLAGS = {"prompt": "PROMPT", "negative_prompt": "--negative", "size": "--size", "steps": "--steps", "loras": "--lora",
          "quality": "--quality",
          "guidance": "--guidance", "n": "--n", "seed": "--seed", "image": "--image"}


def fail(message: str) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def load(path: Optional[Path]) -> RaydiantConfig:
    """The config at `path` (default: the embedded one), or exit 2 naming what is wrong."""
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc))


@models_app.command("list")
def models_list(config: Optional[Path] = ConfigOption) -> None:
    """Table of the configured models: family, weight source, defaults and limits."""
    table = Table("model", "family", "source", "default size", "steps", "guidance", "n", "batch")
    for name, spec in load(config).specs().items():
        table.add_row(name, spec.family.value, spec.source, spec.default_size,
                      f"{spec.default_steps} ({spec.min_steps}..{spec.max_steps})",
                      f"{spec.guidance_name} {spec.default_guidance:g} ({spec.min_guidance:g}..{spec.max_guidance:g})",
                      f"1..{spec.max_n}", str(spec.max_batch_size))
    console.print(table)


@models_app.command("build-tiny")
def models_build_tiny(directory: Path = typer.Argument(..., help="Output directory.")) -> None:
    """Build tiny random-weight pipelines: DIR/flux, DIR/flux-kontext, DIR/sdxl, DIR/sd15."""
    from cluster.doubles.tiny_pipelines import build_all_tiny

    quiet_libraries()
    for family, path in build_all_tiny(directory).items():
        console.print(f"{family.value:13} {path}")


@models_app.command("pull")
def models_pull(
    models: Optional[list[str]] = typer.Argument(None, help="Models to pull (default: every configured one)."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Bring models' weights into the cache now (a service's first start then loads, not downloads)."""
    from cluster.weights.pull import pull
    from cluster.weights.sources import ModelLoadError

    cfg = load(config)
    names = models or list(cfg.models)
    if unknown := [name for name in names if name not in cfg.models]:
        fail(f"unknown model(s): {', '.join(unknown)}; configured: {', '.join(cfg.models)}")
    quiet_libraries()
    failed = False
    for name in names:
        try:
            console.print(f"{name}: {pull(cfg.models[name].source)}", highlight=False, soft_wrap=True)
        except ModelLoadError as exc:
            errors.print(f"{name}: {exc}", highlight=False, soft_wrap=True)
            failed = True
    if failed:
        raise typer.Exit(1)


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="What to draw."),
    model: str = typer.Option("flux-schnell", "--model", "-m", help="Model name (see `raydiant models list`)."),
    n: int = typer.Option(1, "--n", "-n", help="Images to render (seeded seed, seed+1, ...)."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s", help="Seed of the first image (default: random)."),
    size: Optional[str] = typer.Option(None, "--size", help="W*H, e.g. 1024*1024 (default: the model's)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps (default: the model's)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", "--scale", help="Guidance (default: the model's)."),
    negative: Optional[str] = typer.Option(None, "--negative", help="Negative prompt."),
    image: Optional[Path] = typer.Option(None, "--image", help="Input image (edit models)."),
    lora: Optional[list[str]] = typer.Option(None, "--lora", help="A LoRA adapter, PATH or PATH@SCALE (repeat for "
                                                                 "several): a configured name, URL, hub id or path."),
    quality: Optional[str] = typer.Option(None, "--quality", help="lossless (default) or fast (a step cache)."),
    metadata: bool = typer.Option(True, "--metadata/--no-metadata", help="Write sampling parameters into the PNG."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Output directory."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu, ... (default: cuda if present)."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Render images in this process (no Ray): the quickest way to check a model's weights."""
    from cluster.spec.errors import RenderError
    from cluster.spec.loras import lora_flag_item, read_lora_list
    from cluster.spec.request import RenderRequest

    cfg = load(config)
    if model not in cfg.models:
        fail(f"unknown model '{model}'; configured: {', '.join(cfg.models)}")
    width = height = None
    if size is not None:
        parsed = parse_size(size)
        if parsed is None:
            fail(f"--size must look like W*H (e.g. 1024*1024), got '{size}'")
        width, height = parsed
    init_image = None
    if image is not None:
        try:
            init_image = image.read_bytes()
        except OSError as exc:
            fail(f"cannot read --image {image}: {exc.strerror}")
    loras = read_lora_list([lora_flag_item(value) for value in lora or ()])
    if isinstance(loras, RenderError):
        fail(loras.text(_FLAGS["loras"]))
    request = RenderRequest(model=model, prompt=prompt, negative_prompt=negative, width=width,
                            height=height, steps=steps, guidance=guidance, seed=seed, n=n,
                            add_sampling_metadata=metadata, init_image=init_image,
                            loras=loras, quality=quality)
    spec = cfg.spec(model)
    resolved = spec.resolve(request)
    if isinstance(resolved, RenderError):
        fail(resolved.text(_FLAGS.get(resolved.param or "")))

    from cluster.engine.renderer import Renderer  # torch and diffusers: only for a request that can render
    from cluster.lora.cache import cache_for
    from cluster.weights.sources import ModelLoadError

    quiet_libraries()
    try:
        with console.status(f"loading {model} from {spec.source}"):
            renderer = Renderer(spec.model_copy(update={"warmup": False}), device=device,
                                lora_cache=cache_for(cfg))
        with console.status(f"rendering {n} image(s)"):
            results = renderer.render([resolved])
    except ModelLoadError as exc:
        fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for result in results:
        if result.error:
            failed += 1
            errors.print(f"image {result.index}: {result.error.text()} ({result.error.code.value})")
            continue
        path = out / f"{model}-{result.seed}.png"
        path.write_bytes(result.image)  # type: ignore[arg-type]
        console.print(f"{path}  seed={result.seed}  {result.width}x{result.height}  "
                      f"{result.inference_s:.2f}s (batch {result.batch_size})")
    if failed:
        raise typer.Exit(1)


def quiet_logging() -> None:
    """Warnings and up only, without importing any library: for a command whose process loads
    no model (a batch job's driver: importing diffusers would cost it 3.5 s)."""
    # torchao (the `quantize:` option), imported with the pipelines, announces the kernels this
    # machine cannot load (CUDA builds, Triton) and registers enums torch now warns about:
    # notes for its developers, not for someone running a command.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def quiet_libraries() -> None:
    """Library progress bars and advice are noise in a CLI: for a command that loads models."""
    quiet_logging()
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def main() -> None:
    """The console script: mount the commands of serve/ and jobs/, then run."""
    for entry in entry_points(group="raydiant.commands"):
        entry.load()(app)
    app()


if __name__ == "__main__":
    main()
