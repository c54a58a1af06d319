"""gptcourse.blocks beyond its lesson: LayerNorm1d equals nn.LayerNorm where eps matters (tiny variance)."""

import torch
from gptcourse.blocks import LayerNorm1d


def test_layernorm_eps_on_inputs_of_tiny_variance():
    torch.manual_seed(0)
    x = torch.randn(4, 8, 32) * 1e-3  # variance ~1e-6: eps (1e-5) dominates it, so a wrong eps shows
    ours, ref = LayerNorm1d(32), torch.nn.LayerNorm(32)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(32))
        ours.bias.copy_(torch.randn(32))
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    assert torch.allclose(ours(x), ref(x), atol=1e-4)
    assert not torch.allclose(LayerNorm1d(32, eps=1e-6)(x), torch.nn.LayerNorm(32)(x), atol=1e-2)
