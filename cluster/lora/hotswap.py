"""LoRA adapters in a compiled pipeline: one adapter slot, rewritten in place, never a recompile.

Compiled code guards on the modules it traced: loading or deleting an adapter, or PEFT's
`set_adapters` (which reassigns each layer's scaling), would make every new set recompile. So a
compiled model's denoiser gets one adapter before it is compiled, `slot`, over every linear
layer of the denoiser, of rank `lora_rank`, all zeros, through diffusers' hotswap support
(`enable_lora_hotswap`: scalings become tensors). A device batch's set is then written into the
slot's tensors in place with diffusers' `load_lora_adapter(..., hotswap=True)` (PEFT copies into
the same storage and zeroes the layers the set leaves out); a batch without adapters zeroes the
slot, which adds exactly zero to every layer.

A set of several adapters goes into the one slot as one adapter: their A matrices stacked, their
B matrices side by side, each B multiplied by its scale x alpha / rank, zero-padded to
`lora_rank`, so the slot's own scaling stays 1 and the layer adds sum_i scale_i alpha_i / r_i
B_i A_i x, what PEFT computes with `set_adapters` (up to rounding order: close, not bit-equal).

What a compiled model refuses (`InvalidParameter` naming `loras`; the request's task fails
before any batch): a set whose ranks add up to more than `lora_rank`, and any file that fails
the checks of cluster/lora/adapter_file.py (anything but LoRA A/B matrices of the exact shapes on the
denoiser's linear layers).

Costs, stated: the slot is there for every request (rank `lora_rank` on every linear layer:
memory and time per step grow by about lora_rank / hidden size); a switch between sets is a copy
of the slot's tensors. Up to `slots` prepared sets stay in memory, least recently used first out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cluster.engine.speed import denoiser
from cluster.lora.adapter_file import AdapterChecker
from cluster.lora.adapters import in_canonical_order
from cluster.lora.cache import LocalLora, LoraUnavailable
from cluster.spec.errors import RenderError
from cluster.spec.loras import AppliedLora, Lora, adapter_set_id

log = logging.getLogger(__name__)

SLOT = "slot"


@dataclass(frozen=True)
class SlotLayer:
    """One adapter's matrices on one linear layer, its scaling (alpha / rank) folded into B."""

    down: torch.Tensor  # A: rank x in
    up: torch.Tensor  # B: out x rank, times alpha / rank


@dataclass(frozen=True)
class SlotAdapter:
    rank: int
    layers: dict[str, SlotLayer]  # by the layer's module name in the denoiser


class SlotAdapters:
    """The adapters of a compiled pipeline (same interface as `PipelineAdapters`)."""

    def __init__(self, pipeline, slots: int, rank: int, model: str,
                 after_load: Callable[[], None] = lambda: None):
        """Call before the denoiser is compiled: it adds the slot's layers."""
        self.pipeline = pipeline
        self.module = denoiser(pipeline)
        self.slots = slots
        self.rank = rank
        self.model = model
        self.targets = {name: layer for name, layer in self.module.named_modules()
                        if isinstance(layer, torch.nn.Linear)}
        self.checker = AdapterChecker(pipeline, self.module, model, max_rank=rank)
        self._sets: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()  # set id -> slot weights
        self._parsed: OrderedDict[str, SlotAdapter] = OrderedDict()  # sha256 -> adapter, LRU
        self._parsed_lock = threading.Lock()
        self._active = ""  # the set the slot holds ("" none: all zeros)
        self.loads = 0
        self.load_s = 0.0
        self.hits = self.misses = 0
        self._add_slot()
        after_load()

    supported = True

    def _add_slot(self) -> None:
        self.module.enable_lora_hotswap(target_rank=self.rank)
        zeros = {}
        for name, layer in self.targets.items():
            dtype = layer.weight.dtype if layer.weight.is_floating_point() else torch.float32
            zeros[f"{name}.lora_A.weight"] = torch.zeros(self.rank, layer.in_features, dtype=dtype)
            zeros[f"{name}.lora_B.weight"] = torch.zeros(layer.out_features, self.rank, dtype=dtype)
        self.module.load_lora_adapter(zeros, adapter_name=SLOT, prefix=None)
        self._parameters = [p for name, p in self.module.named_parameters() if f".{SLOT}." in name]

    # --- the per-batch switch ---------------------------------------------------------------

    def activate(self, loras: tuple[Lora, ...], files: dict[str, LocalLora]) -> tuple[AppliedLora, ...]:
        """Write `loras` into the slot for the next batch (raises `LoraUnavailable` for a set
        the slot cannot take); returns what was applied."""
        set_id = adapter_set_id(loras)
        loras = in_canonical_order(loras, files)
        if set_id != self._active:
            if loras:
                weights = self._prepared(set_id, loras, files)
                self.module.load_lora_adapter(weights, adapter_name=SLOT, prefix=None, hotswap=True)
            else:
                for parameter in self._parameters:
                    parameter.data.zero_()
            self._active = set_id
        elif loras:
            self._prepared(set_id, loras, files)  # counts the hit, keeps the LRU order
        return tuple(AppliedLora(lora.path, files[lora.location].sha256, lora.scale) for lora in loras)

    def _prepared(self, set_id: str, loras: tuple[Lora, ...], files: dict[str, LocalLora]) -> dict[str, torch.Tensor]:
        if set_id in self._sets:
            self.hits += 1
            self._sets.move_to_end(set_id)
            return self._sets[set_id]
        self.misses += 1
        weights = self._merge([(self._adapter(files[lora.location]), lora.scale) for lora in loras])
        self._sets[set_id] = weights
        while len(self._sets) > self.slots:
            self._sets.popitem(last=False)
        return weights

    def _merge(self, parts: list[tuple[SlotAdapter, float]]) -> dict[str, torch.Tensor]:
        """One adapter of rank `self.rank` doing what the parts do together."""
        too_wide = self._over_rank(sum(adapter.rank for adapter, _ in parts))
        if too_wide is not None:
            raise LoraUnavailable(too_wide)
        parameter = self._parameters[0]
        weights: dict[str, torch.Tensor] = {}
        for name in sorted({name for adapter, _ in parts for name in adapter.layers}):
            layer = self.targets[name]
            down = torch.zeros(self.rank, layer.in_features)
            up = torch.zeros(layer.out_features, self.rank)
            offset = 0
            for adapter, scale in parts:
                if name in adapter.layers:
                    part = adapter.layers[name]
                    down[offset:offset + part.down.shape[0]] = part.down  # a layer's rank may be below
                    up[:, offset:offset + part.up.shape[1]] = part.up * scale  # its adapter's largest
                offset += adapter.rank
            weights[f"{name}.lora_A.weight"] = down.to(parameter.device, parameter.dtype)
            weights[f"{name}.lora_B.weight"] = up.to(parameter.device, parameter.dtype)
        return weights

    # --- reading adapter files --------------------------------------------------------------

    def problem(self, loras: tuple[Lora, ...], files: dict[str, LocalLora]) -> RenderError | None:
        """Why the slot cannot take this set, or None (checked when a request comes in)."""
        try:
            return self._over_rank(sum(self._adapter(files[lora.location]).rank for lora in loras))
        except LoraUnavailable as exc:
            return exc.error

    def _over_rank(self, total: int) -> RenderError | None:
        if total <= self.rank:
            return None
        return RenderError.invalid("loras", f"have ranks adding up to {total}; compiled model {self.model} takes "
                                            f"at most {self.rank} in all (its lora_rank)")

    def _adapter(self, local: LocalLora) -> SlotAdapter:
        # Two threads ask: the replica's admission check (`problem`) and the device's `activate`.
        # The file is read outside the lock, so a large one never holds up the other thread.
        with self._parsed_lock:
            if local.sha256 in self._parsed:
                self._parsed.move_to_end(local.sha256)
                return self._parsed[local.sha256]
        started = time.perf_counter()
        adapter = self._read(local)
        log.info("read LoRA adapter %s (rank %d, %d layers) in %.2fs", local.lora.path, adapter.rank,
                 len(adapter.layers), time.perf_counter() - started)
        with self._parsed_lock:
            self.loads += 1
            self.load_s += time.perf_counter() - started
            self._parsed[local.sha256] = adapter
            while len(self._parsed) > 4 * self.slots:
                self._parsed.popitem(last=False)
        return adapter

    def _read(self, local: LocalLora) -> SlotAdapter:
        checked = self.checker.read(local)  # raises LoraUnavailable naming what is refused
        return SlotAdapter(checked.rank, {name: SlotLayer(layer.down, layer.up)
                                          for name, layer in checked.layers.items()})

    # --- what the replica reports -----------------------------------------------------------

    def kept_sets(self) -> list[str]:
        return list(self._sets)

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "loads": self.loads, "load_s": round(self.load_s, 3),
                "kept_sets": len(self._sets)}
