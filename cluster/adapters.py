"""LoRA adapters inside one loaded pipeline: loaded on demand, kept warm, switched per batch.

Through diffusers' own PEFT integration: each adapter file is loaded once as a named adapter
(`load_lora_weights(state_dict, adapter_name=...)`, the name fixed by the file's sha256), and a
device batch activates its set with `set_adapters(names, scales)`, or `disable_lora()` for a
batch without adapters. Weights are never fused: fusing changes the base weights' last bits, and
a request must render the same pixels alone or in any batch, before or after any other set.
Up to `slots` sets stay loaded (LRU); an adapter no kept set uses is deleted from the pipeline,
which leaves the base model exactly as it was.

All of this runs on the device's thread, between two batches (`activate`), never during one.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import OrderedDict
from typing import Callable

from cluster.lora_cache import LocalLora
from cluster.loras import AppliedLora, Lora, adapter_set_id

log = logging.getLogger(__name__)


def adapter_name(local: LocalLora) -> str:
    return "l" + local.sha256[:16]


class PipelineAdapters:
    def __init__(self, pipeline, slots: int, after_load: Callable[[], None] = lambda: None):
        """`after_load`: run once new adapter layers are in the pipeline (the CPU's batch
        invariance patches the new layers)."""
        self.pipeline = pipeline
        self.slots = slots
        self.after_load = after_load
        self._sets: OrderedDict[str, tuple[str, ...]] = OrderedDict()  # set id -> adapter names, LRU order
        self._active: str | None = ""  # the set the pipeline applies now ("" none; None unknown)
        self.loads = 0  # adapter files loaded (a cold set costs one per adapter)
        self.load_s = 0.0
        self.hits = self.misses = 0  # device batches whose set was kept loaded, or not

    @property
    def supported(self) -> bool:
        return hasattr(self.pipeline, "load_lora_weights")

    def activate(self, loras: tuple[Lora, ...], files: dict[str, LocalLora]) -> tuple[AppliedLora, ...]:
        """Make the pipeline apply `loras` (their files in `files`, by location) to the next
        batch; returns what was applied, for records and metadata."""
        set_id = adapter_set_id(loras)
        if not loras:
            if self._active != "":
                self.pipeline.disable_lora()
                self._active = ""
            return ()
        names = self._load(set_id, [files[lora.location] for lora in loras])
        if self._active != set_id:
            self.pipeline.enable_lora()
            self.pipeline.set_adapters(list(names), [lora.scale for lora in loras])
            self._active = set_id
        return tuple(AppliedLora(lora.path, files[lora.location].sha256, lora.scale) for lora in loras)

    def _load(self, set_id: str, locals_: list[LocalLora]) -> tuple[str, ...]:
        if set_id in self._sets:
            self._sets.move_to_end(set_id)
            self.hits += 1
            return self._sets[set_id]
        self.misses += 1
        loaded = set(self.loaded())
        names = tuple(adapter_name(local) for local in locals_)
        fresh = [(name, local) for name, local in zip(names, locals_) if name not in loaded]
        if fresh:
            from safetensors.torch import load_file

            started = time.perf_counter()
            for name, local in fresh:
                # A state dict read by safetensors: no pickle is ever unpickled. Several named
                # adapters in one model is the point here: PEFT's warning about it is not news.
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                    self.pipeline.load_lora_weights(load_file(str(local.file)), adapter_name=name)
            self.after_load()
            self.loads += len(fresh)
            self.load_s += time.perf_counter() - started
            log.info("loaded %d LoRA adapter(s) in %.2fs", len(fresh), time.perf_counter() - started)
        self._sets[set_id] = names
        self._evict()
        return names

    def _evict(self) -> None:
        while len(self._sets) > self.slots:
            evicted_id, evicted = self._sets.popitem(last=False)
            kept = {name for names in self._sets.values() for name in names}
            unused = [name for name in evicted if name not in kept]
            if unused:
                self.pipeline.delete_adapters(unused)
            if self._active == evicted_id:
                self._active = None  # what the pipeline applies is not a kept set any more

    def loaded(self) -> list[str]:
        """Names of the adapters in the pipeline now."""
        listed = self.pipeline.get_list_adapters() if self.supported else {}
        return sorted({name for names in listed.values() for name in names})

    def kept_sets(self) -> list[str]:
        return list(self._sets)

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "loads": self.loads, "load_s": round(self.load_s, 3),
                "kept_sets": len(self._sets)}
