"""gptcourse.kv_cache beyond its lesson: what the cache refuses, with a message that says so."""
import pytest, torch
from gptcourse.kv_cache import KVCache


def test_the_cache_refuses_what_it_cannot_do():
    """A 17th position in a cache of 16, another batch size mid-sequence, a layer it does not have; after reset() all is
    fine."""
    nh, hs = 3, 8
    cache = KVCache(n_layer=1, max_len=16)
    x = torch.randn(2, nh, 10, hs)
    cache.attend(0, x, x, x)
    y = torch.randn(2, nh, 7, hs)
    with pytest.raises(ValueError, match='more than max_len=16'): cache.attend(0, y, y, y)
    z = torch.randn(3, nh, 1, hs)
    with pytest.raises(ValueError, match='batch size changed from 2 to 3'): cache.attend(0, z, z, z)
    with pytest.raises(IndexError, match='layer 1 does not exist'): cache.attend(1, z, z, z)
    with pytest.raises(ValueError, match='n_layer >= 1'): KVCache(0, 16)
    cache.reset(); cache.attend(0, z, z, z)
    assert cache.length == 1 and cache.k[0].shape == (3, nh, 16, hs)


def test_decode_layout_keeps_checkpoints_and_follows_every_change_of_the_weights():
    "Lesson 10's DecodeLinear: no new state in checkpoints; its (in, out) copy follows load_state_dict and .to()."
    from gptcourse.gpt2 import GPT, GPTConfig
    from gptcourse.kv_cache import DecodeLinear, decode_layout
    cfg = GPTConfig(block_size=16, vocab_size=50, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(0); a, b = GPT(cfg).eval(), GPT(cfg).eval()
    x = torch.randint(0, 50, (1, 1))
    before = {k: v.clone() for k, v in a.state_dict().items()}
    decode_layout(a)
    with torch.no_grad(): a(x)                                              # the copies are made
    assert a.state_dict().keys() == before.keys() and all(torch.equal(a.state_dict()[k], before[k]) for k in before)
    a.load_state_dict(b.state_dict())                                       # in place: the versions move on
    with torch.no_grad(): assert torch.allclose(a(x)[0], b(x)[0], atol=1e-6)
    a.double()                                                              # new tensors: the copies are remade
    with torch.no_grad(): assert a(x)[0].dtype == torch.float64
    assert isinstance(a.lm_head, DecodeLinear) and isinstance(a.lm_head, torch.nn.Linear)
