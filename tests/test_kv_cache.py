"""Lesson 21 beyond its notebook: what the cache refuses, with a message that says so."""

import pytest, torch
from gptcourse.kv_cache import KVCache


def test_the_cache_refuses_what_it_cannot_do():
    """A 17th position in a cache of 16, another batch size mid-sequence, a layer it does not have; after
    reset() all is fine."""
    nh, hs = 3, 8
    cache = KVCache(n_layer=1, max_len=16)
    x = torch.randn(2, nh, 10, hs)
    cache.attend(0, x, x, x)
    y = torch.randn(2, nh, 7, hs)
    with pytest.raises(ValueError, match='more than max_len=16'):
        cache.attend(0, y, y, y)
    z = torch.randn(3, nh, 1, hs)
    with pytest.raises(ValueError, match='batch size changed from 2 to 3'):
        cache.attend(0, z, z, z)
    with pytest.raises(IndexError, match='layer 1 does not exist'):
        cache.attend(1, z, z, z)
    with pytest.raises(ValueError, match='n_layer >= 1'):
        KVCache(0, 16)
    cache.reset()
    cache.attend(0, z, z, z)
    assert cache.length == 1 and cache.k[0].shape == (3, nh, 16, hs)


def test_top_p_keeps_the_nucleus_of_a_known_distribution():
    """Probabilities 0.5, 0.3, 0.15, 0.05: top-p 0.6 keeps the first two, 0.8 the first two, 0.81 three, 1.0
    all four."""
    from gptcourse.kv_cache import top_p_filter

    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda p: (top_p_filter(logits, p) > float('-inf'))[0].tolist()
    assert kept(0.5) == [True, False, False, False] and kept(0.6) == kept(0.8) == [True, True, False, False]
    assert kept(0.81) == [True, True, True, False] and kept(1.0) == [True] * 4
    with pytest.raises(ValueError, match=r'top_p must be in \(0, 1\]'):
        top_p_filter(logits, 1.5)


def test_a_full_cache_takes_no_more_tokens():
    """A model whose cache holds block_size positions refuses another token before attending: no position is
    left."""
    from gptcourse.gpt2 import GPT, GPTConfig

    m = GPT(GPTConfig(block_size=16, vocab_size=101, n_layer=2, n_head=2, n_embd=16)).eval()
    cache = KVCache.for_model(m)
    with torch.no_grad():
        m(torch.zeros(1, 16, dtype=torch.long), kv_cache=cache)
        with pytest.raises(ValueError, match=r'length 17 \(16 cached \+ 1 new\): block_size is 16'):
            m(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)
