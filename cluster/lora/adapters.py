"""LoRA adapters inside one loaded pipeline: loaded on demand, kept warm, switched per batch.

Through diffusers' own PEFT integration, on the denoiser alone: each adapter file, once checked
(cluster/lora/adapter_file.py: only LoRA matrices on the denoiser's linear layers, of their exact
shapes), is loaded once as a named adapter (`load_lora_adapter(layers, adapter_name=...)`, the
name fixed by the file's sha256), and a device batch activates its set with
`set_adapters(names, scales)`, or `disable_lora()` for a batch without adapters. The
pipeline-wide `load_lora_weights` is never used: it writes a Control LoRA's norms into the base
model and swaps a layer for a wider one when a file asks, and neither is undone by deleting an
adapter. The adapters of a set are applied in the order of their files' sha256 (their deltas
add in that order), so a set renders the same pixels in whatever order a request lists it.
Weights are never fused: fusing changes the base weights' last bits, and a request must render
the same pixels alone or in any batch, before or after any other set.
Up to `slots` sets stay loaded, in LRU order with an admission filter: a set that is not kept
is loaded for its batch and kept only when it was used lately at least as often as the set it
would evict (`RecentUses`; counted per device batch). Plain LRU lets every one-off set push out
a popular one. Measured through the service (bench/lora.py: 2 replicas of 3 slots, 20 sets
drawn by a Zipf law of exponent 2): 0.94 of device batches warm with the filter, 0.82 with plain
LRU; 0.93 is the 6 most popular sets' share, what a perfect static placement would get.
An adapter that neither a kept set nor the current batch uses is deleted from the pipeline,
which leaves the base model exactly as it was.

All of this runs on the device's thread, between two batches (`activate`), never during one.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable

from cluster.engine.speed import denoiser
from cluster.lora.adapter_file import AdapterChecker, CheckedAdapter
from cluster.lora.cache import LocalLora, LoraUnavailable
from cluster.lora.recent_uses import RecentUses
from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.loras import AppliedLora, Lora, adapter_set_id

log = logging.getLogger(__name__)


def adapter_name(local: LocalLora) -> str:
    return "l" + local.sha256[:16]


class PipelineAdapters:
    def __init__(self, pipeline, slots: int, model: str = "", max_rank: int = 256,
                 after_load: Callable[[], None] = lambda: None):
        """`after_load`: run once new adapter layers are in the pipeline (the CPU's batch
        invariance patches the new layers)."""
        self.pipeline = pipeline
        self.module = denoiser(pipeline)
        self.checker = (AdapterChecker(pipeline, self.module, model, max_rank)
                        if self.module is not None and hasattr(self.module, "load_lora_adapter") else None)
        # Files checked when their request came in, their tensors kept until the device loads
        # them; and the hashes of files that passed (tiny), so a known file is not read again
        # for every request. Two threads use them: a replica's admission check and the device.
        self._checked: OrderedDict[str, CheckedAdapter] = OrderedDict()  # sha256 -> adapter, LRU
        self._passed: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.slots = slots
        self.after_load = after_load
        self._sets: OrderedDict[str, tuple[str, ...]] = OrderedDict()  # set id -> adapter names, LRU order
        self._passing: tuple[str, tuple[str, ...]] | None = None  # a set loaded for its batch, not kept
        self.recent = RecentUses(window=20 * slots)  # ~20 batches per slot: enough to rank, quick to fade
        self._active: str | None = ""  # the set the pipeline applies now ("" none; None unknown)
        self.loads = 0  # adapter files loaded (a cold set costs one per adapter)
        self.load_s = 0.0
        self.hits = self.misses = 0  # device batches whose set was kept loaded, or not

    @property
    def supported(self) -> bool:
        return self.checker is not None

    def activate(self, loras: tuple[Lora, ...], files: dict[str, LocalLora]) -> tuple[AppliedLora, ...]:
        """Make the pipeline apply `loras` (their files in `files`, by location) to the next
        batch; returns what was applied, for records and metadata. Raises `LoraUnavailable`
        for a file that fails its check; the pipeline is then as it was."""
        set_id = adapter_set_id(loras)
        loras = in_canonical_order(loras, files)
        if not loras:
            if self._active != "":
                self.module.disable_lora()
                self._active = ""
            return ()
        names = self._load(set_id, [files[lora.location] for lora in loras])
        if self._active != set_id:
            self.module.enable_lora()
            self.module.set_adapters(list(names), [lora.scale for lora in loras])
            self._active = set_id
        return tuple(AppliedLora(lora.path, files[lora.location].sha256, lora.scale) for lora in loras)

    def problem(self, loras: tuple[Lora, ...], files: dict[str, LocalLora]) -> RenderError | None:
        """Why these files cannot be loaded here (one that fails its check), or None."""
        try:
            for lora in loras:
                local = files[lora.location]
                with self._lock:
                    passed = local.sha256 in self._passed
                if not passed:
                    self._check(local)
        except LoraUnavailable as exc:
            return exc.error
        return None

    def _check(self, local: LocalLora) -> CheckedAdapter:
        """The file read and checked (outside the lock: a large file holds up no other thread),
        kept until the device loads it."""
        checked = self.checker.read(local)
        with self._lock:
            self._checked[local.sha256] = checked
            while len(self._checked) > 4 * self.slots:
                self._checked.popitem(last=False)
            self._passed[local.sha256] = None
            while len(self._passed) > 1024:
                self._passed.popitem(last=False)
        return checked

    def _take(self, local: LocalLora) -> CheckedAdapter:
        """A checked adapter for the device to load (read again if it was let go meanwhile)."""
        with self._lock:
            checked = self._checked.pop(local.sha256, None)
        if checked is not None:
            return checked
        if not local.file.exists():  # evicted from the node's cache since its request was prepared
            raise LoraUnavailable(RenderError(
                ErrorCode.INTERNAL, f"the adapter file of {local.lora.path} left this node's cache before its "
                                    f"batch ran; retry"))
        return self.checker.read(local)

    def _load(self, set_id: str, locals_: list[LocalLora]) -> tuple[str, ...]:
        self.recent.note(set_id)
        if set_id in self._sets:
            self._sets.move_to_end(set_id)
            self.hits += 1
            return self._sets[set_id]
        if self._passing is not None and self._passing[0] == set_id:
            self.hits += 1  # the same set as a batch before: still loaded
            names = self._passing[1]
            if self._admits(set_id):  # asked often enough by now to be kept
                self._keep(set_id, names)
                self._delete_unused(names)
            return names
        self.misses += 1
        names = tuple(adapter_name(local) for local in locals_)
        if self._admits(set_id):
            self._keep(set_id, names)
        else:
            self._passing = (set_id, names)
        self._delete_unused(names)  # before loading: at most `slots` + 1 sets in memory
        try:
            self._load_files(names, locals_)
        except BaseException:
            self._sets.pop(set_id, None)
            self._passing = None
            self._delete_unused(())  # what the failed set loaded goes; kept sets stay
            raise
        return names

    def _keep(self, set_id: str, names: tuple[str, ...]) -> None:
        self._sets[set_id] = names
        while len(self._sets) > self.slots:
            self._sets.popitem(last=False)
        self._passing = None

    def _admits(self, set_id: str) -> bool:
        if len(self._sets) < self.slots:
            return True
        victim = next(iter(self._sets))
        return self.recent.count(set_id) >= self.recent.count(victim)

    def _delete_unused(self, current: tuple[str, ...]) -> None:
        needed = set(current) | {name for names in self._sets.values() for name in names}
        unused = [name for name in self.loaded() if name not in needed]
        if unused:
            self.module.delete_adapters(unused)
            self._active = None  # the pipeline's active adapters changed under us

    def _load_files(self, names: tuple[str, ...], locals_: list[LocalLora]) -> None:
        loaded = set(self.loaded())
        fresh = [(name, local) for name, local in zip(names, locals_) if name not in loaded]
        if not fresh:
            return
        started = time.perf_counter()
        parameter = next(self.module.parameters())
        for name, local in fresh:
            weights = self._take(local).peft_state_dict(parameter.device, parameter.dtype)
            # Several named adapters in one model is the point here: PEFT's warning is not news.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                self.module.load_lora_adapter(weights, adapter_name=name, prefix=None)
        self.after_load()
        self.loads += len(fresh)
        self.load_s += time.perf_counter() - started
        log.info("loaded %d LoRA adapter(s) in %.2fs", len(fresh), time.perf_counter() - started)

    def loaded(self) -> list[str]:
        """Names of the adapters in the pipeline now."""
        return sorted(getattr(self.module, "peft_config", {}) or {}) if self.supported else []

    def kept_sets(self) -> list[str]:
        return list(self._sets)

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "loads": self.loads, "load_s": round(self.load_s, 3),
                "kept_sets": len(self._sets)}


def in_canonical_order(loras: tuple[Lora, ...], files: dict[str, LocalLora]) -> tuple[Lora, ...]:
    """A set's adapters in the order of their files' content hashes (then scales): the order in
    which their deltas add, the same whatever order a request named them in."""
    return tuple(sorted(loras, key=lambda lora: (files[lora.location].sha256, lora.scale)))
