"""What the adapter boundary costs, at 1x, 10x and 100x: the base-weight fingerprint check a
replica's health check runs, and the check of an adapter file before it is loaded.

    .venv/bin/python -m bench.adapter_safety [--sizes 1,10,100]

Base weights: a stack of linear layers holding 1x, 10x and 100x the tiny FLUX's bytes (fp32, on
this CPU); `BaseWeights.problem()` timed (medians of 5), and its cost per GB. Adapter files: a
LoRA over N of those layers at rank 16, its header check alone (no tensor read) and the whole
check (header, tensors, alpha folded), per MB of file. Ratios are to the 1x row, measured in the
same run.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from cluster.lora.adapter_file import AdapterChecker
from cluster.lora.cache import LocalLora
from cluster.spec.loras import Lora
from cluster.weights.base_weights import BaseWeights

HIDDEN = 256  # each layer 256 x 256 fp32: 256 KiB


class Denoiser(torch.nn.Module):
    def __init__(self, layers: int):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(HIDDEN, HIDDEN) for _ in range(layers))


class Pipeline:  # what AdapterChecker reads of a pipeline: its class's loader and a transformer
    transformer = None

    @classmethod
    def lora_state_dict(cls, state_dict, return_alphas=False):
        return state_dict, None


def median_ms(call, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def adapter_file(folder: Path, layers: int) -> LocalLora:
    tensors = {}
    for i in range(layers):
        tensors[f"transformer.blocks.{i}.lora_A.weight"] = torch.randn(16, HIDDEN)
        tensors[f"transformer.blocks.{i}.lora_B.weight"] = torch.randn(HIDDEN, 16)
    path = folder / f"lora-{layers}.safetensors"
    save_file(tensors, str(path))
    data = path.read_bytes()
    return LocalLora(Lora(path.name, "local", str(path), 1.0), path, hashlib.sha256(data).hexdigest(), len(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--layers", type=int, default=16, help="layers at 1x (16 x 256 KiB: about the tiny FLUX)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="raydiant-adapter-bench-"))
    base_rows = None
    print(f"{'size':>5} {'weights MB':>10} {'check ms':>9} {'ms/GB':>7} {'ratio':>6} | {'file MB':>7} "
          f"{'header ms':>9} {'whole ms':>8} {'ms/MB':>6} {'ratio':>6}")
    for size in (int(s) for s in args.sizes.split(",")):
        layers = args.layers * size
        model = Denoiser(layers)
        weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        fingerprint = BaseWeights({"transformer": model})
        check_ms = median_ms(fingerprint.problem)
        checker = AdapterChecker(Pipeline(), model, "bench", max_rank=64)
        local = adapter_file(folder, layers)
        header_ms = median_ms(lambda: checker._header(local))
        whole_ms = median_ms(lambda: checker.read(local))
        file_mb = local.size / 2**20
        base_rows = base_rows or (check_ms, whole_ms)
        print(f"{size:>4}x {weights_mb:>10.1f} {check_ms:>9.2f} {check_ms / weights_mb * 1024:>7.0f} "
              f"{check_ms / base_rows[0]:>6.1f} | {file_mb:>7.1f} {header_ms:>9.2f} {whole_ms:>8.2f} "
              f"{whole_ms / file_mb:>6.1f} {whole_ms / base_rows[1]:>6.1f}")


if __name__ == "__main__":
    main()
