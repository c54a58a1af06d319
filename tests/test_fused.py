"""Lesson 30's `FusedGPT`: one token a call to C decodes what the model's own forward computes, for every kind
of GPT the course builds; every other call is the model's; bad input is refused before C reads anything; and a
C that computes something else is never used (its build is refused by `fused_kernel()`'s own check)."""

import pytest, torch
from test_quantize import _compiler_of, built_for_this_cpu  # a stand-in `cc`; the check of a build

from gptcourse.gpt2 import GPT, GPTConfig
from gptcourse.kv_cache import KVCache, generate_cached
from gptcourse.quantize import Int8DotLinear, Int8Linear, use_int8_kernel
from gptcourse import fused
from gptcourse.fused import FUSED_C, FusedGPT, fused_kernel


def _model(group=16, **kw):
    torch.manual_seed(0)
    config = GPTConfig(**({'block_size': 16, 'vocab_size': 50, 'n_layer': 2, 'n_head': 2, 'n_embd': 32} | kw))
    return use_int8_kernel(GPT(config).eval(), group, Int8DotLinear)


@pytest.fixture
def calls(monkeypatch):
    "The C kernel, counting its calls: a test then knows that C, not the model, made what it compares."
    kernel, note = fused_kernel()
    built_for_this_cpu(kernel, note, 'fused kernel')
    count = []

    def counted(*args):
        count.append(args[5])  # the position decoded
        return kernel(*args)

    monkeypatch.setattr(fused, 'fused_kernel', lambda: (counted, note))
    return count


CONFIGS = [
    dict(),  # GPT-2's choices: GELU, biases, untied head
    dict(activation='relu', qkv_bias=True, head_bias=True),  # the lectures' character model
    dict(bias=False, tie_weights=True),  # no biases at all (NULL pointers in C), the tied embedding
    dict(n_head=4, n_embd=48),  # a head of 12 numbers: dot()'s loop of 16 never runs
    dict(n_layer=3, n_head=1, n_embd=64, group=32),  # one head of 64; groups of 32
    dict(n_embd=16, group=4),  # the smallest group
]


@pytest.mark.parametrize('kw', CONFIGS, ids=lambda kw: ','.join(f'{k}={v}' for k, v in kw.items()) or 'gpt2')
def test_fused_decodes_each_token_as_the_model_computes_it(kw, calls):
    """A 3-token prompt, then 9 tokens one at a time through the cache: each token's logits are those of the
    model's forward over the whole sequence (another path: F.linear of the rounded x), to float32 rounding; a
    rounding of x that float32's last bit flips may move a token by a step of x's scale, rarely."""
    model = _model(**kw)
    seq = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(1))
    fast, cache = FusedGPT(model), KVCache.for_model(model)
    with torch.no_grad():
        fast(seq[:, :3], kv_cache=cache)
        got = torch.cat([fast(seq[:, t : t + 1], kv_cache=cache)[0][0] for t in range(3, 12)])
        want = model(seq)[0][0, 3:]
    assert calls == list(range(3, 12)) and cache.length == 12
    gap = (got - want).abs().amax(-1)
    assert (gap < 1e-4).float().mean() >= 0.75 and gap.max() < 0.05, gap
    k_model = KVCache.for_model(model)
    with torch.no_grad():
        model(seq, kv_cache=k_model)  # the cache C filled holds the keys and values the model stores
    for a, b in zip(cache.k + cache.v, k_model.k + k_model.v):
        assert torch.allclose(a[:, :, :12], b[:, :, :12], atol=1e-3)


def test_generate_makes_the_model_tokens_through_c(calls):
    """Greedy decoding past block_size: the same tokens as the model's; C decodes positions 3..15, then the
    context outgrows block_size and lesson 21 feeds the model the last block_size tokens, every step."""
    model = _model()
    prompt = torch.tensor([[1, 2, 3]])
    want = generate_cached(model, prompt, 30, temperature=0)
    assert torch.equal(generate_cached(FusedGPT(model), prompt, 30, temperature=0), want)
    assert calls == list(range(3, 16))


def test_every_other_call_is_the_model_own(calls):
    "A prompt, a batch, gradients, training, no cache, an empty cache: the model's forward, exactly."
    model = _model()
    fast, one, prompt = FusedGPT(model), torch.tensor([[7]]), torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        for idx in (prompt, one, torch.tensor([[1, 2], [3, 4]])):  # no cache
            assert torch.equal(fast(idx)[0], model(idx)[0])
        for idx in (prompt, one):  # an empty cache: the model fills it
            assert torch.equal(fast(idx, kv_cache=KVCache.for_model(model))[0], model(idx)[0])
        a, b = KVCache.for_model(model), KVCache.for_model(model)
        fast(prompt, kv_cache=a), model(prompt, kv_cache=b)
        two = torch.tensor([[4, 5]])  # a prompt after the cache's tokens
        assert torch.equal(fast(two, kv_cache=a)[0], model(two, kv_cache=b)[0])
        batch = KVCache.for_model(model)
        fast(torch.tensor([[1, 2], [3, 4]]), kv_cache=batch)
        assert not fast._fast(torch.tensor([[5], [6]]), None, batch)  # a batch of two sequences
    assert not fast._fast(one, None, a)  # gradients are on here
    fast.train()
    with torch.no_grad():
        assert not fast._fast(one, None, a)  # training
    assert calls == []


def test_bad_input_is_refused_before_c_reads_it(calls):
    "A token outside the vocabulary, a full cache, a model C cannot read: one clear line, nothing cached."
    model = _model()
    fast, cache = FusedGPT(model), KVCache.for_model(model)
    with torch.no_grad():
        fast(torch.tensor([[1, 2, 3]]), kv_cache=cache)
        for bad in (50, -1):
            with pytest.raises(ValueError, match=f'^token id {bad} is outside the vocabulary: ids are 0..49'):
                fast(torch.tensor([[bad]]), kv_cache=cache)
        with pytest.raises(ValueError, match='token ids'):
            fast(torch.tensor([[1.0]]), kv_cache=cache)
        assert cache.length == 3 and calls == []
        fast(torch.arange(16)[None] % 50, kv_cache=(full := KVCache.for_model(model)))
        with pytest.raises(ValueError, match='^cannot forward a sequence of length 17'):
            fast(torch.tensor([[1]]), kv_cache=full)
        fast(torch.arange(5)[None], kv_cache=(small := KVCache(2, max_len=5)))  # room for 5 positions only
        with pytest.raises(ValueError, match=r'^KVCache: 5 positions cached \+ 1 new = 6, more than max_len'):
            fast(torch.tensor([[1]]), kv_cache=small)
        assert small.length == 5
    torch.manual_seed(0)
    plain = GPT(GPTConfig(block_size=8, vocab_size=50, n_layer=1, n_head=2, n_embd=32))
    for model in (plain, use_int8_kernel(plain, 16, Int8Linear)):
        with pytest.raises(ValueError, match='^FusedGPT decodes a GPT whose Linears are Int8DotLinear'):
            FusedGPT(model)


@pytest.fixture
def fresh_kernel(tmp_path, monkeypatch):
    "A fresh, empty folder for compiled kernels, and fused_kernel() forgotten before and after the test."
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    fused_kernel.cache_clear()
    yield
    fused_kernel.cache_clear()


@pytest.mark.parametrize(
    'old, new',
    [
        ('/ sqrtf(hd)', '/ hd'),  # attention's scale
        ('w[p] /= sum', 'w[p] /= 1'),  # the softmax's weights not divided by their sum
        ('for (int p = 0; p <= pos; p++) top', 'for (int p = 0; p < pos; p++) top'),  # the new token unseen
        ('for (int i = 0; i < C; i++) x[i] += a[i];', 'for (int i = 0; i < C; i++) x[i] = a[i];'),  # residual
        ('f[i] = gelu ?', 'f[i] = !gelu ?'),  # GELU and ReLU swapped
        ('1e-5f', '1e-2f'),  # LayerNorm's eps
        ('(x[i] - mean) * r * (wb[0]', '(x[i] - mean) * (wb[0]'),  # LayerNorm without its 1/σ
    ],
)
def test_a_kernel_that_computes_something_else_is_not_used(old, new, fresh_kernel, monkeypatch, tmp_path):
    assert FUSED_C.count(old) >= 1
    monkeypatch.setenv('CC', _compiler_of(FUSED_C.replace(old, new), tmp_path, '-O3 -march=native'))
    kernel, note = fused_kernel()
    assert kernel is None and 'disagrees' in note, note


def test_a_cache_c_cannot_read_goes_to_the_model(calls):
    """Keys and values of another dtype, on another device (here `meta`: no memory at all), of another shape
    or not contiguous: the model's forward, never a pointer C would misread."""
    model = _model()
    fast, prompt, one = FusedGPT(model), torch.tensor([[1, 2, 3]]), torch.tensor([[4]])
    with torch.no_grad():
        for change in (
            lambda t: t.double(),
            lambda t: torch.empty_like(t, device='meta'),
            lambda t: t[:, :, :8],
            lambda t: t.transpose(2, 3).contiguous().transpose(2, 3),
        ):
            cache = KVCache.for_model(model)
            fast(prompt, kv_cache=cache)
            cache.k[1] = change(cache.k[1])
            assert not fast._fast(one, None, cache)
        assert fast._fast(one, None, (good := KVCache.for_model(model))) is False  # empty: the model first
        fast(prompt, kv_cache=good)
        assert fast._fast(one, None, good)
    assert calls == []


def test_c_keeps_reading_memory_that_is_alive():
    "After the model's tensors are replaced (`.double()` frees the float32 ones), C still reads valid memory."
    import gc

    model = _model()
    fast = FusedGPT(model)
    prompt, cache = torch.tensor([[1, 2, 3]]), KVCache.for_model(model)
    with torch.no_grad():
        fast(prompt, kv_cache=cache)
        want = fast(torch.tensor([[4]]), kv_cache=cache)[0]
    model.double()  # the model's own tensors are new; the float32 ones are the FusedGPT's alone now
    gc.collect()
    assert all(t.dtype == torch.float32 for t in fast.held if t.is_floating_point())
    cache.length = 3
    with torch.no_grad():
        assert torch.equal(fast._step(torch.tensor([[4]]), cache, fused_kernel()[0]), want)


def test_without_a_kernel_the_model_decodes(monkeypatch):
    "No C compiler, or no build that agrees: every call is the model's, the same logits, nothing fails."
    model = _model()
    monkeypatch.setattr(fused, 'fused_kernel', lambda: (None, 'no C compiler (cc) found'))
    fast, mine, ref = FusedGPT(model), KVCache.for_model(model), KVCache.for_model(model)
    with torch.no_grad():
        for t, idx in enumerate(([[1, 2, 3]], [[4]], [[5]])):
            idx = torch.tensor(idx)
            assert torch.equal(fast(idx, kv_cache=mine)[0], model(idx, kv_cache=ref)[0]), t
    assert mine.length == ref.length == 5
