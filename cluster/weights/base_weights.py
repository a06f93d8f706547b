"""`BaseWeights`: the fingerprint of a loaded model's own weights, to prove nothing changed them.

Requests bring adapters, and adapters go into the same modules as the base weights. The checks
of cluster/lora/adapter_file.py keep every file to LoRA matrices; this is the proof that they did:
taken once the model is loaded (and quantized, and on its device), it holds every base
parameter and buffer with its shape, dtype, storage address and a checksum of its values.
`problem()` says what changed: a tensor replaced (a module swapped for a wider one), reshaped,
moved or rewritten in place (a norm overwritten). A replica's health check calls it, so a
replica whose base model changed is replaced by Serve instead of serving wrong pixels.

Adapter layers (PEFT's `lora_*` parameters) are not part of the base; PEFT keeps the base
layer's own tensors inside its wrapper, so they stay the same objects.

Costs: one pass over the weights per check (a sum per tensor, brought back in one transfer per
device). Measured in bench/base_weights.py; on a GPU the pass is memory-bound (FLUX's 24 GB of
bf16 weights read once: about 10 ms at H100 bandwidth, not yet measured there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class _Held:
    name: str
    tensor: torch.Tensor
    shape: tuple[int, ...]
    dtype: torch.dtype
    address: int
    checksum: float | None  # None: a tensor type whose values cannot be summed (a quantized one)


class BaseWeights:
    def __init__(self, modules: dict[str, torch.nn.Module], fixed_storage: bool = True):
        """`modules`: the pipeline's components by name. `fixed_storage`: False where weights move
        between devices by design (CPU offload), so only their values are compared."""
        self.modules = modules
        self.fixed_storage = fixed_storage
        found = self._base_tensors()
        sums = _checksums([tensor for _, tensor in found])
        self._held = [_Held(name, tensor, tuple(tensor.shape), tensor.dtype, _address(tensor), checksum)
                      for (name, tensor), checksum in zip(found, sums)]
        self._ids = {id(held.tensor) for held in self._held}

    def _base_tensors(self) -> list[tuple[str, torch.Tensor]]:
        found = []
        for component, module in self.modules.items():
            for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
                if ".lora_" not in f".{name}":
                    found.append((f"{component}.{name}", tensor))
        return found

    def problem(self) -> str | None:
        """What changed in the base weights since load, or None."""
        current = self._base_tensors()
        for name, tensor in current:
            if id(tensor) not in self._ids:
                return f"{name} is not the tensor the model was loaded with"
        if len(current) != len(self._held):
            return f"the model has {len(current)} base tensors, not the {len(self._held)} it was loaded with"
        for held in self._held:
            tensor = held.tensor
            if tuple(tensor.shape) != held.shape or tensor.dtype != held.dtype:
                return f"{held.name} changed shape or type"
            if self.fixed_storage and _address(tensor) != held.address:
                return f"{held.name} moved to other storage"
        for held, checksum in zip(self._held, _checksums([held.tensor for held in self._held])):
            if held.checksum is not None and checksum != held.checksum:
                return f"{held.name} changed its values"
        return None


def _address(tensor: torch.Tensor) -> int:
    try:
        return tensor.data_ptr()
    except Exception:  # noqa: BLE001 - tensor subclasses without one storage (quantized)
        return 0


def _checksums(tensors: list[torch.Tensor]) -> list[float | None]:
    """Each tensor's sum in float64, computed where it lives and brought back in one transfer
    per device (one synchronisation, not one per tensor); None for a tensor that cannot be
    summed (a quantized subclass: its shape and storage are still compared)."""
    sums: list[torch.Tensor | None] = []
    with torch.no_grad():
        for tensor in tensors:
            try:
                sums.append(tensor.detach().sum(dtype=torch.float64))
            except Exception:  # noqa: BLE001 - a tensor subclass that cannot be summed
                sums.append(None)
    by_device: dict[torch.device, list[int]] = {}
    for index, total in enumerate(sums):
        if total is not None:
            by_device.setdefault(total.device, []).append(index)
    values: list[float | None] = [None] * len(tensors)
    for indices in by_device.values():
        for index, value in zip(indices, torch.stack([sums[i] for i in indices]).cpu().tolist()):
            values[index] = value
    return values
