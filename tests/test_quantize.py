"""Lesson 23 beyond its notebook: the rounding on every shape and group, the int8 kernel on every branch (a
wrong scale or a dropped rounding step fails here), where Int8Linear takes the kernel,
and every way it can fail."""

import copy, os, shutil
import pytest, torch
from torch.nn import functional as F


@pytest.fixture
def kernel_cache(tmp_path, monkeypatch):
    "A fresh, empty folder for compiled kernels, and q8_kernel() forgotten before and after the test."
    from gptcourse.quantize import q8_kernel

    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    q8_kernel.cache_clear()
    yield tmp_path / 'gptcourse' / 'kernels'
    q8_kernel.cache_clear()


@pytest.mark.parametrize('group', [0, -32, 5, 36, 200, 32.0, '32'])
def test_quantize_refuses_a_group_that_does_not_divide_the_row(group):
    from gptcourse.quantize import quantize

    with pytest.raises(ValueError, match='group must divide the row length 96'):
        quantize(torch.randn(4, 96), group)


@pytest.mark.parametrize(
    'W',
    [torch.randn(96), torch.randn(2, 4, 96), torch.randint(0, 9, (4, 96)), torch.randn(4, 96).to(torch.int8)],
)
def test_quantize_refuses_what_is_not_a_float_matrix(W):
    from gptcourse.quantize import quantize

    with pytest.raises(ValueError, match='2-D float matrix'):
        quantize(W)


@pytest.mark.parametrize(
    'q, scale',
    [
        (torch.zeros(4, 96, dtype=torch.int8), torch.ones(3, 3)),  # rows differ
        (torch.zeros(4, 96, dtype=torch.int8), torch.ones(4, 5)),  # 5 groups do not divide 96
        (torch.zeros(96, dtype=torch.int8), torch.ones(4, 3)),  # not a matrix
        (torch.zeros(4, 96, dtype=torch.int8), torch.ones(4)),
    ],
)
def test_dequantize_refuses_scales_that_do_not_fit(q, scale):
    from gptcourse.quantize import dequantize

    with pytest.raises(ValueError, match='do not match'):
        dequantize(q, scale)


@pytest.mark.parametrize('group', [None, 1, 16, 32, 96])
def test_every_weight_comes_back_within_half_a_step(group):
    "Half a step of its own group, elementwise (up to float32's rounding); the largest of a group exactly."
    from gptcourse.quantize import dequantize, quantize

    g = torch.Generator().manual_seed(0)
    W = torch.randn(37, 96, generator=g) * torch.logspace(-3, 1, 37)[:, None]  # rows of very different size
    W[3] = 0  # a row of zeros: zeros back, no NaN
    q, scale = quantize(W, group)
    gs = 96 if group is None else group
    assert q.dtype == torch.int8 and scale.shape == (37, 96 // gs) and q.abs().max() <= 127
    back = dequantize(q, scale)
    half = (scale / 2).repeat_interleave(gs, dim=1)
    assert ((back - W).abs() <= half + 2 * torch.finfo(torch.float32).eps * W.abs()).all()
    assert torch.equal(back[3], torch.zeros(96)) and not back.isnan().any()
    top = W.abs().reshape(37, -1, gs).argmax(-1)  # the largest weight of each group is ±127 · scale
    assert (q.reshape(37, -1, gs).gather(-1, top[..., None]).abs()[scale > 0] == 127).all()


def _q8(kernel, x, q, scale, b=None):
    from gptcourse.quantize import pack

    group, y = q.size(1) // scale.size(1), torch.empty(x.size(0), q.size(0))
    packed = pack(q, group)  # held here: a temporary's memory could be freed before the kernel reads it
    ptr = lambda t: None if t is None else t.data_ptr()
    kernel(ptr(x), ptr(packed), ptr(scale), ptr(b), ptr(y), *x.shape, q.size(0), group)
    return y


@pytest.mark.parametrize('out_f', [1, 7, 8, 9, 17, 24])
@pytest.mark.parametrize('group, rows', [(1, 8), (2, 2), (16, 8), (96, 8), (32, 3)])
def test_pack_stores_each_block_of_rows_group_by_group(out_f, group, rows):
    "Checked element by element against where each weight must go; unpack undoes it."
    from gptcourse.quantize import pack, unpack

    q = torch.randint(-127, 128, (out_f, 96), dtype=torch.int8)
    p = pack(q, group, rows)
    flat, n = p.flatten(), out_f - out_f % rows
    for r in range(out_f):
        for i in range(0, 96, 5):
            if r < n:  # block r // rows, row r % rows in it, group i // group
                at = (r // rows) * rows * 96 + (i // group * rows + r % rows) * group + i % group
            else:
                at = r * 96 + i
            assert flat[at] == q[r, i]
    assert p.is_contiguous() and torch.equal(unpack(p, group, rows), q)


@pytest.mark.parametrize('m', [1, 3, 8])
@pytest.mark.parametrize('in_f, group', [(16, 16), (48, 16), (96, 32), (96, 96), (768, 32)])
@pytest.mark.parametrize('out_f', [1, 7, 8, 9, 17])
def test_the_kernel_computes_the_dequantized_product_on_every_branch(m, in_f, group, out_f):
    """Rows that fill no block of 8, exactly one, or blocks and a remainder; one or many groups; with and
    without a bias: F.linear of the dequantized weights, to float32 rounding."""
    from gptcourse.quantize import dequantize, q8_kernel, quantize

    kernel, note = q8_kernel()
    if kernel is None and shutil.which(os.environ.get('CC') or 'cc'):
        pytest.fail(f'a C compiler is here but no kernel: {note}')  # e.g. one that fails its own check
    if kernel is None:
        pytest.skip(note)
    g = torch.Generator().manual_seed(m * 1000 + in_f * 10 + out_f)
    x, W, b = (torch.randn(*s, generator=g) for s in ((m, in_f), (out_f, in_f), (out_f,)))
    W[:, :group] *= 50  # the first group's scale is far from the others': a wrong scale index shows
    q, scale = quantize(W, group)
    Wd = dequantize(q, scale)
    bound = 1e-5 * (x.abs() @ Wd.abs().T + b.abs()) + 1e-6
    assert ((_q8(kernel, x, q, scale, b) - F.linear(x, Wd, b)).abs() <= bound).all()
    assert ((_q8(kernel, x, q, scale) - F.linear(x, Wd)).abs() <= bound).all()


def test_int8_linear_takes_the_kernel_only_where_it_computes_the_same():
    """Too many rows, float64, a group the kernel cannot take, autocast, gradients: F.linear of the
    dequantized weight; a few float32 rows (even non-contiguous): the kernel, with the same numbers."""
    from gptcourse.quantize import Int8Linear, dequantize, q8_kernel, quantize

    torch.manual_seed(0)
    plain = torch.nn.Linear(96, 10)
    ref = lambda x, layer: F.linear(x, layer.dequantized().to(x.dtype), layer.bias.to(x.dtype))
    assert torch.equal(Int8Linear(plain).dequantized(), dequantize(*quantize(plain.weight)))
    with torch.no_grad():
        for group in (32, 96, 24, None):  # 24: not a multiple of 16, so F.linear
            layer = Int8Linear(plain, group)
            xt = torch.randn(96, 2).t()  # non-contiguous rows
            assert torch.allclose(layer(xt), ref(xt, layer), atol=1e-5)
            many = torch.randn(Int8Linear.max_rows + 1, 96)
            assert torch.equal(layer(many), ref(many, layer))
            assert torch.equal(layer(xt.double()), ref(xt.double(), layer))
            with torch.autocast('cpu', dtype=torch.bfloat16):
                assert layer(xt).dtype == torch.bfloat16
    with pytest.raises(RuntimeError):
        Int8Linear(plain)(torch.randn(1, 95))  # a wrong width: F.linear refuses it, the kernel never sees it
    layer, x = Int8Linear(plain), torch.randn(1, 96, requires_grad=True)
    layer(x).sum().backward()  # with gradients: F.linear, and they flow to the input
    assert torch.allclose(x.grad[0], layer.dequantized().sum(0), atol=1e-6)
    assert q8_kernel()[0] is not None or 'kernel' in q8_kernel()[1] or 'compiler' in q8_kernel()[1]


def test_use_int8_kernel_quantizes_every_linear_and_the_tied_output_layer():
    "No nn.Linear is left, the tied embedding keeps its float rows, and the logits are the rounded model's."
    from gptcourse.gpt2 import GPT, GPTConfig
    from gptcourse.kv_cache import KVCache
    from gptcourse.quantize import Int8Linear, dequantize, int8_bytes_per_token, quantize, use_int8_kernel

    torch.manual_seed(0)
    cfg = GPTConfig(block_size=16, vocab_size=70, n_layer=2, n_head=2, n_embd=32)
    model = GPT(cfg).eval()
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for m in rounded.transformer.h.modules():  # the blocks' Linears; the tied embedding stays float
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(dequantize(*quantize(m.weight)))
    emb = model.transformer.wte.weight.detach().clone()
    use_int8_kernel(model)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert isinstance(model.lm_head, Int8Linear) and torch.equal(model.transformer.wte.weight, emb)
    n_w = sum(m.q.numel() for m in model.modules() if isinstance(m, Int8Linear))
    n_b = sum(m.bias.numel() for m in model.modules() if isinstance(m, Int8Linear) and m.bias is not None)
    assert int8_bytes_per_token(model) == n_w + 4 * n_w // 32 + 4 * n_b
    x = torch.randint(0, 70, (1, 9))
    with torch.no_grad():
        ref = F.linear(model.transformer.ln_f(_hidden(rounded, x)), model.lm_head.dequantized())
        cache = KVCache.for_model(model)
        steps = torch.stack([model(x[:, t : t + 1], kv_cache=cache)[0][0, -1] for t in range(9)])
    assert torch.allclose(steps, ref[0], atol=1e-4)


def _hidden(model, x):
    "The residual stream after the last block, before ln_f."
    h = model.embed(x)
    for block in model.transformer.h:
        h = block(h)
    return h


def test_without_a_compiler_int8_linear_still_computes(kernel_cache, monkeypatch):
    "No compiler: q8_kernel() says so, writes nothing, and Int8Linear multiplies by the dequantized weight."
    from gptcourse.quantize import Int8Linear, q8_kernel

    monkeypatch.setenv('CC', 'no-such-compiler-here')
    kernel, note = q8_kernel()
    assert kernel is None and note == 'no C compiler (no-such-compiler-here) found'
    layer = Int8Linear(torch.nn.Linear(64, 5))
    with torch.no_grad():
        x = torch.randn(1, 64)
        assert torch.equal(layer(x), F.linear(x, layer.dequantized(), layer.bias))
    assert not kernel_cache.exists() or not any(kernel_cache.iterdir())


def test_a_kernel_with_a_wrong_scale_is_not_used(kernel_cache, monkeypatch, tmp_path):
    "A library that loads but forgets the scales is refused by q8_kernel()'s own check."
    from gptcourse.quantize import Q8_C, q8_kernel

    real = shutil.which('cc')
    if real is None:
        pytest.skip('no C compiler here')
    (tmp_path / 'wrong.c').write_text(
        Q8_C.replace('acc[k] += S[(long)(r + k) * ng + c] * s[k]', 'acc[k] += s[k]')
    )
    cc = tmp_path / 'wrong-cc'
    cc.write_text(
        f'#!/bin/sh\n[ $# -gt 1 ] || exec {real} "$@"\nfor a; do out=$a; done\n'
        f'exec {real} -O3 -shared -fPIC {tmp_path}/wrong.c -o "$out"\n'
    )
    cc.chmod(0o755)
    monkeypatch.setenv('CC', str(cc))
    kernel, note = q8_kernel()
    assert kernel is None and 'disagrees with F.linear' in note
