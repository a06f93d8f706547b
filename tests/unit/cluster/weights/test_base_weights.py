"""The base-weights fingerprint (cluster/weights/base_weights.py): any change to a loaded model's
own weights is found, whether a value, a tensor swapped for another, or a layer added; adapter
layers that PEFT adds beside the base ones are not base weights."""

from __future__ import annotations

import torch
from peft import LoraConfig, inject_adapter_in_model

from cluster.weights.base_weights import BaseWeights


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 4))


def test_an_untouched_model_passes_and_a_changed_value_is_named():
    net = model()
    base = BaseWeights({"denoiser": net})
    assert base.problem() is None
    with torch.no_grad():
        net[1].weight[3] += 1e-3  # a norm nudged, as a Control LoRA's file would
    assert "1.weight" in base.problem()


def test_a_swapped_tensor_and_a_new_layer_are_found():
    net = model()
    base = BaseWeights({"denoiser": net})
    net[2].weight = torch.nn.Parameter(net[2].weight.detach().clone())  # same values, another tensor
    assert "is not the tensor" in base.problem()
    net = model()
    base = BaseWeights({"denoiser": net})
    net.append(torch.nn.Linear(4, 4))
    assert base.problem() is not None


def test_lora_layers_beside_the_base_are_not_base_weights():
    net = model()
    base = BaseWeights({"denoiser": net})
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["0", "2"]), net, adapter_name="a")
    assert base.problem() is None
