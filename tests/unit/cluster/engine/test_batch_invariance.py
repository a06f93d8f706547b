"""The CPU batch-invariance patch: a row computes the same bits alone or inside a batch."""

from __future__ import annotations

import torch

from cluster.engine.batch_invariance import make_batch_invariant


def test_vector_layers_give_identical_rows_for_any_batch():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(256, 16), torch.nn.SiLU(), torch.nn.Linear(16, 48))
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    assert make_batch_invariant([mlp, conv]) == 4
    x = torch.randn(8, 256)
    image = torch.randn(8, 4, 32, 32)
    with torch.no_grad():
        alone = mlp(x[:1])
        alone_image = conv(image[:1])
        for batch in (2, 3, 4, 8):
            assert torch.equal(mlp(x[:batch])[:1], alone)
            assert torch.equal(conv(image[:batch])[:1], alone_image)


def test_patched_layers_keep_shapes_and_values():
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 8)
    x = torch.randn(2, 3, 32)
    reference = layer(x)
    make_batch_invariant([layer])
    out = layer(x)
    assert out.shape == (2, 3, 8)
    assert torch.allclose(out, reference, atol=1e-6)
