"""Lesson 05's modules against their definitions: heads side by side then a projection; a ReLU MLP of width
4n."""

import pytest, torch
from torch.nn import functional as F
from gptcourse.multihead import FeedForward, MultiHeadAttention


def test_multihead_is_its_heads_concatenated_then_projected():
    torch.manual_seed(0)
    m = MultiHeadAttention(n_embd=16, n_head=4, block_size=8).eval()
    x = torch.randn(2, 5, 16)
    want = F.linear(torch.cat([h(x) for h in m.heads], -1), m.proj.weight, m.proj.bias)
    assert torch.allclose(m(x), want, atol=1e-6) and len(m.heads) == 4 and m.heads[0].key.out_features == 4
    with pytest.raises(ValueError, match='must be divisible by n_head'):
        MultiHeadAttention(10, 3, 8)


def test_feedforward_is_a_relu_mlp_of_width_4n():
    torch.manual_seed(0)
    f = FeedForward(6).eval()
    x = torch.randn(3, 6)
    (w1, b1), (w2, b2) = [(l.weight, l.bias) for l in f.net if isinstance(l, torch.nn.Linear)]
    assert w1.shape == (24, 6) and torch.allclose(f(x), (x @ w1.T + b1).clamp(min=0) @ w2.T + b2, atol=1e-6)
