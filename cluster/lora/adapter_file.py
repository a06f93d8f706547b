"""The checked adapter file: a caller's safetensors file, proven to be only a LoRA for this model.

A LoRA file is code-free, but what diffusers does with its keys is not harmless: `norm_q` /
`norm_k` tensors of a FLUX "Control LoRA" are written into the base transformer, and an A matrix
wider than its layer makes diffusers swap the base Linear for a wider one. Either changes the
model every other request renders with. So nothing of a file reaches the pipeline until it is
shown to hold only LoRA matrices on linear layers the denoiser has, with exactly their shapes:

1. The header, before any tensor is read (`safetensors` reads only the JSON header here): a
   bounded header, floating-point tensors of at most two dimensions (convolutions have four).
   A file in diffusers' own layout (`<denoiser>.<layer>.lora_A.weight`, ...) is checked whole
   from the header: names, shapes and ranks.
2. Other trainers' layouts (kohya, XLabs, ...) are converted by the pipeline class's own
   `lora_state_dict` (a class method: it reads the dict, never the model), then checked the same
   way. What cannot be converted is refused, never stripped: a key the check does not know is
   named in the error.
3. The tensors: finite values, A and B of each layer of one rank, alpha folded into B.

The result, `CheckedAdapter`, holds each layer's A and B in float32 on the CPU. Both adapter
holders load from it (`cluster/lora/adapters.py` as named PEFT adapters, `cluster/lora/hotswap.py` into
the compiled slot), so neither ever hands diffusers a file. Every refusal is the caller's
error, `InvalidParameter` naming `loras` and the key.
"""

from __future__ import annotations

import inspect
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cluster.lora.cache import LocalLora, LoraUnavailable
from cluster.spec.errors import RenderError

MAX_HEADER_BYTES = 16 * 2**20  # a LoRA's header lists a few thousand tensors: ~1 MiB
_FLOATS = {"F16", "BF16", "F32", "F64"}
_A, _B = ".lora_A.weight", ".lora_B.weight"


@dataclass(frozen=True)
class AdapterLayer:
    """One linear layer's update: `up @ down`, alpha / rank already folded into `up`."""

    down: torch.Tensor  # A: rank x in_features, float32
    up: torch.Tensor  # B: out_features x rank, float32


@dataclass(frozen=True)
class CheckedAdapter:
    sha256: str
    rank: int  # the largest rank of its layers
    layers: dict[str, AdapterLayer]  # by the layer's module name in the denoiser

    def peft_state_dict(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The adapter as `load_lora_adapter(..., prefix=None)` takes it (scaling 1: alpha folded)."""
        weights = {}
        for name, layer in self.layers.items():
            weights[f"{name}{_A}"] = layer.down.to(device, dtype)
            weights[f"{name}{_B}"] = layer.up.to(device, dtype)
        return weights


class AdapterChecker:
    """Checks adapter files against one pipeline's denoiser."""

    def __init__(self, pipeline, denoiser: torch.nn.Module, model: str, max_rank: int):
        self.pipeline_class = type(pipeline)
        self.prefix = "transformer" if hasattr(pipeline, "transformer") else "unet"
        self.model = model
        self.max_rank = max_rank
        # The denoiser's own linear layers (not an adapter's: those are named lora_*).
        self.targets = {name: (layer.in_features, layer.out_features)
                        for name, layer in denoiser.named_modules()
                        if isinstance(layer, torch.nn.Linear) and ".lora_" not in f".{name}"}

    def read(self, local: LocalLora) -> CheckedAdapter:
        """The adapter in `local`, checked; raises `LoraUnavailable` naming what is wrong."""
        header, metadata = self._header(local)
        if _in_diffusers_layout(header):  # checked whole before a tensor is read
            self._check_layout(local, self._own_layers(local, {key: shape for key, (_, shape) in header.items()}))
            scaling = self._saved_scaling(local, metadata)
            tensors = _load(local.file)
            return self._assembled(local, self._own_layers(local, tensors),
                                   self._alphas({k: v for k, v in tensors.items() if k.endswith(".alpha")}), scaling)
        state_dict, alphas = self._converted(local)
        self._check_layout(local, {key: tuple(value.shape) for key, value in state_dict.items()})
        return self._assembled(local, state_dict, self._alphas(alphas))

    # --- 1. the header ------------------------------------------------------------------------

    def _header(self, local: LocalLora) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict]:
        """(key -> (dtype, shape), the file's text metadata), read from the header only."""
        try:
            with open(local.file, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                if length > MAX_HEADER_BYTES:
                    raise self._refuse(local, f"has a header of {length} bytes (at most {MAX_HEADER_BYTES})")
                parsed = json.loads(f.read(length))
        except LoraUnavailable:
            raise
        except (OSError, ValueError, struct.error, RecursionError):
            raise self._refuse(local, "is not a readable safetensors file") from None
        if not isinstance(parsed, dict):
            raise self._refuse(local, "is not a readable safetensors file")
        header, metadata = {}, parsed.get("__metadata__")
        for key, entry in parsed.items():
            if key == "__metadata__":
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
                raise self._refuse(local, "is not a readable safetensors file")
            dtype, shape = entry.get("dtype"), tuple(entry["shape"])
            if dtype not in _FLOATS:
                raise self._refuse(local, f"has {key} of type {dtype}, not floating point")
            if len(shape) > 2:
                raise self._refuse(local, f"has {key} of {len(shape)} dimensions (a convolution's); "
                                          f"only linear layers take adapters")
            header[key] = (dtype, shape)
        if not header:
            raise self._refuse(local, "holds no tensors")
        return header, metadata if isinstance(metadata, dict) else {}

    def _saved_scaling(self, local: LocalLora, metadata: dict) -> "Callable[[int], float] | None":
        """The scaling that diffusers' `save_lora_weights` recorded for the denoiser (its
        `lora_adapter_metadata`: lora_alpha, rslora), as a function of a layer's rank; None when
        the file records none. Settings that change what the matrices mean (DoRA, per-layer
        patterns) are refused: rendering without them would be another adapter."""
        raw = metadata.get("lora_adapter_metadata")
        if not raw:
            return None
        try:
            saved = json.loads(raw)
        except (ValueError, RecursionError):
            raise self._refuse(local, "has lora_adapter_metadata that is not JSON") from None
        if not isinstance(saved, dict):
            raise self._refuse(local, "has lora_adapter_metadata that is not a JSON object")
        ours = {key.removeprefix(f"{self.prefix}."): value for key, value in saved.items()
                if key.startswith(f"{self.prefix}.") or "." not in key}
        for setting in ("use_dora", "alpha_pattern", "rank_pattern"):
            if ours.get(setting):
                raise self._refuse(local, f"has {setting} in its lora_adapter_metadata, which is not taken")
        alpha = ours.get("lora_alpha")
        if alpha is None:
            return None
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
            raise self._refuse(local, f"has a lora_alpha of {str(alpha)[:40]!r} in its metadata, not a number")
        if ours.get("use_rslora"):
            return lambda rank: alpha / math.sqrt(rank)
        return lambda rank: alpha / rank

    # --- 2. the layout ------------------------------------------------------------------------

    def _converted(self, local: LocalLora) -> tuple[dict[str, torch.Tensor], dict]:
        """Another trainer's layout through the pipeline class's own conversion: the denoiser's
        layers in diffusers' layout, and the alphas."""
        from diffusers.utils import convert_unet_state_dict_to_peft

        read = self.pipeline_class.lora_state_dict
        try:
            if "return_alphas" in inspect.signature(read).parameters:  # FLUX family
                state_dict, alphas = read(_load(local.file), return_alphas=True)
            else:
                state_dict, alphas = read(_load(local.file))  # SD family: always (state dict, alphas)
            state_dict = self._own_layers(local, state_dict)
            if state_dict and not any(key.endswith(_A) for key in state_dict):
                state_dict = convert_unet_state_dict_to_peft(state_dict)
        except LoraUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - diffusers' converters raise anything on odd keys
            raise self._refuse(local, f"is in no LoRA layout this model's loader knows "
                                      f"({type(exc).__name__})") from None
        return state_dict, alphas or {}

    def _own_layers(self, local: LocalLora, state_dict: dict) -> dict:
        """The denoiser's entries without their prefix; a component other than the denoiser is refused."""
        others = sorted({key.split(".")[0] for key in state_dict
                         if not key.startswith(f"{self.prefix}.") and not key.endswith(".alpha")})
        if others:
            raise self._refuse(local, f"has layers of {', '.join(others)}; only the {self.prefix}'s linear "
                                      f"layers take adapters here")
        return {key.removeprefix(f"{self.prefix}."): value for key, value in state_dict.items()
                if not key.endswith(".alpha")}

    def _check_layout(self, local: LocalLora, shapes: dict[str, tuple]) -> None:
        """Every key is a LoRA A or B matrix of a linear layer the denoiser has, of its exact
        shape, with its partner, of a rank within the cap."""
        for key, shape in shapes.items():
            if key.endswith(_B):
                continue
            if not key.endswith(_A):
                raise self._refuse(local, f"has {key}, not a LoRA A or B matrix of a linear layer")
            name = key.removesuffix(_A)
            if name not in self.targets:
                raise self._refuse(local, f"has {key}: the model has no linear layer {name}")
            if f"{name}{_B}" not in shapes:
                raise self._refuse(local, f"has {key} without its B matrix")
            in_features, out_features = self.targets[name]
            down, up = tuple(shape), tuple(shapes[f"{name}{_B}"])
            if len(down) != 2 or len(up) != 2 or down[1] != in_features or up[0] != out_features or up[1] != down[0]:
                raise self._refuse(local, f"has {name} of shapes A {list(down)}, B {list(up)}; layer {name} takes "
                                          f"A [rank, {in_features}] and B [{out_features}, rank]")
            if not 1 <= down[0] <= self.max_rank:
                raise self._refuse(local, f"has {name} of rank {down[0]}; this model takes ranks "
                                          f"1..{self.max_rank}")
        for key in shapes:
            if key.endswith(_B) and f"{key.removesuffix(_B)}{_A}" not in shapes:
                raise self._refuse(local, f"has {key} without its A matrix")

    # --- 3. the tensors -----------------------------------------------------------------------

    def _assembled(self, local: LocalLora, state_dict: dict[str, torch.Tensor],
                   alphas: dict[str, torch.Tensor | float],
                   saved_scaling: "Callable[[int], float] | None" = None) -> CheckedAdapter:
        layers: dict[str, AdapterLayer] = {}
        for key, down in state_dict.items():
            if not key.endswith(_A):
                continue
            name = key.removesuffix(_A)
            down, up = down.float(), state_dict[f"{name}{_B}"].float()
            alpha = alphas.get(name, down.shape[0])
            if isinstance(alpha, torch.Tensor) and alpha.numel() != 1:
                raise self._refuse(local, f"has an alpha of {alpha.numel()} values for {name}, not one number")
            alpha = float(alpha)
            if not (torch.isfinite(down).all() and torch.isfinite(up).all() and math.isfinite(alpha)):
                raise self._refuse(local, f"has values that are not finite numbers in {name}")
            scaling = saved_scaling(down.shape[0]) if saved_scaling and name not in alphas else alpha / down.shape[0]
            layers[name] = AdapterLayer(down.contiguous(), (up * scaling).contiguous())
        if not layers:
            raise self._refuse(local, "has no LoRA layers")
        return CheckedAdapter(local.sha256, max(layer.down.shape[0] for layer in layers.values()), layers)

    def _alphas(self, alphas: dict) -> dict:
        """Alphas by layer name (trainers write `<prefix>.<layer>.alpha`)."""
        return {key.removeprefix(f"{self.prefix}.").removesuffix(".alpha"): value for key, value in alphas.items()}

    def _refuse(self, local: LocalLora, why: str) -> LoraUnavailable:
        return LoraUnavailable(RenderError.invalid("loras", f"{local.lora.path}: {why}; model {self.model} takes "
                                                            f"LoRA matrices on its denoiser's linear layers only"))


def _in_diffusers_layout(header: dict) -> bool:
    return all(key.endswith((_A, _B, ".alpha")) for key in header)


def _load(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(file))
