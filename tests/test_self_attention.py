"""Lesson 04's `Head` against attention written from its formula: softmax(Q Kᵀ / √d, masked to the past) V."""

import math
import pytest, torch
from gptcourse.self_attention import Head


def reference(x, Wq, Wk, Wv):
    "One causal head, from the formula, with plain loops over the positions."
    B, T, _ = x.shape
    out = torch.zeros(B, T, Wv.size(0))
    for b in range(B):
        for t in range(T):
            q = Wq @ x[b, t]
            scores = torch.stack([q @ (Wk @ x[b, s]) / math.sqrt(Wk.size(0)) for s in range(t + 1)])
            w = scores.softmax(0)
            out[b, t] = sum(w[s] * (Wv @ x[b, s]) for s in range(t + 1))
    return out


def test_head_is_the_formula():
    torch.manual_seed(0)
    h = Head(n_embd=12, head_size=5, block_size=8).eval()
    x = torch.randn(2, 6, 12)
    assert torch.allclose(h(x), reference(x, h.query.weight, h.key.weight, h.value.weight), atol=1e-5)


def test_head_looks_only_at_the_past_and_refuses_a_long_input():
    torch.manual_seed(0)
    h = Head(8, 4, block_size=6).eval()
    x = torch.randn(1, 6, 8)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 8)  # change the future of position 3
    assert torch.equal(h(x)[:, :4], h(y)[:, :4]) and not torch.allclose(h(x)[:, 4:], h(y)[:, 4:])
    with pytest.raises(ValueError, match='longer than block_size 6'):
        h(torch.randn(1, 7, 8))
