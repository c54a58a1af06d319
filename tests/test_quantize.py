"""Lesson 23 beyond its notebook: the rounding on every shape and group, the int8 kernel on every branch (a
wrong scale or a dropped rounding step fails here), where Int8Linear takes the kernel,
and every way it can fail."""

import copy, os, shutil, subprocess
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
    for layer in (Int8Linear(plain), Int8Linear(plain, 24)):  # a wrong width, either path: lesson 22's error
        with pytest.raises(ValueError, match='^Int8Linear: x has 95 numbers .*96$'):
            layer(torch.randn(1, 95))
        with pytest.raises(RuntimeError):
            layer(torch.randn(1, 95))
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


def _compiler_of(source: str, folder, flags: str) -> str:
    """A `cc` that answers `--version` as the real one does but builds `source` (with `flags`) whatever it is
    asked to build: a kernel that loads but computes something else."""
    real = shutil.which('cc')
    if real is None:
        pytest.skip('no C compiler here')
    (folder / 'wrong.c').write_text(source)
    cc = folder / 'wrong-cc'
    cc.write_text(
        f'#!/bin/sh\n[ $# -gt 1 ] || exec {real} "$@"\nfor a; do out=$a; done\n'
        f'exec {real} {flags} -shared -fPIC {folder}/wrong.c -o "$out"\n'
    )
    cc.chmod(0o755)
    return str(cc)


def test_a_kernel_with_a_wrong_scale_is_not_used(kernel_cache, monkeypatch, tmp_path):
    "A library that loads but forgets the scales is refused by q8_kernel()'s own check."
    from gptcourse.quantize import Q8_C, q8_kernel

    wrong = Q8_C.replace('acc[k] += S[(long)(r + k) * ng + c] * s[k]', 'acc[k] += s[k]')
    monkeypatch.setenv('CC', _compiler_of(wrong, tmp_path, '-O3'))
    kernel, note = q8_kernel()
    assert kernel is None and 'disagrees with F.linear' in note


# Lesson 23's second kernel: x rounded to int8 too, integer dot products (Q8DOT_C, Int8DotLinear).


def built_for_this_cpu(kernel, note: str, what: str):
    """`kernel`, if a C compiler here built it for this CPU. No kernel where a compiler is, or one built
    without AVX-512 VNNI where the compiler offers it (a VNNI build that disagrees would pass as the plain
    one), is a failure, not a skip."""
    cc = os.environ.get('CC') or 'cc'
    if kernel is None and shutil.which(cc):
        pytest.fail(f'a C compiler is here but no {what}: {note}')
    if kernel is None:
        pytest.skip(note)
    ask = [cc, '-march=native', '-dM', '-E', '-x', 'c', os.devnull]  # what the compiler knows of this CPU
    vnni = '__AVX512VNNI__' in subprocess.run(ask, capture_output=True, text=True).stdout
    if vnni and '-march=native' not in note:
        pytest.fail(f'this CPU has AVX-512 VNNI, but the {what} was not the one built for it: {note}')
    return kernel


def _dot_kernel():
    "q8dot_kernel()'s function, built for this CPU."
    from gptcourse.quantize import q8dot_kernel

    return built_for_this_cpu(*q8dot_kernel(), 'integer kernel')


def _dot(kernel, x, q, scale, b=None):
    "`kernel` on `x` and the int8 `q` with its `scale`, stored as Int8DotLinear stores them."
    from gptcourse.quantize import q8_blocks

    group, y = q.size(1) // scale.size(1), torch.empty(x.size(0), q.size(0))
    blocks = q8_blocks(q, scale)  # held: the kernel reads it
    ptr = lambda t: None if t is None else t.data_ptr()
    kernel(ptr(x), ptr(blocks), ptr(b), ptr(y), *x.shape, q.size(0), group)
    return y


@pytest.mark.parametrize('out_f, group', [(1, 4), (16, 32), (21, 32), (80, 16), (2304, 32)])
def test_q8_blocks_holds_each_group_scales_before_its_integers(out_f, group):
    """Read back by hand from the bytes: block b, group c starts at byte c·(64 + 16·group) of its block with
    the 16 rows' scales as float32, then column i of row r at 64 + 16·(i − i % 4) + 4·r + i % 4, plus 128;
    the rows past out_f are zeros; `q8_unblocks` gives `(q, scale)` back."""
    from gptcourse.quantize import q8_blocks, q8_unblocks, quantize

    g = torch.Generator().manual_seed(out_f)
    q, scale = quantize(torch.randn(out_f, 96, generator=g), group)
    blocks = q8_blocks(q, scale)
    nb, ng = -(-out_f // 16), 96 // group
    assert blocks.dtype == torch.uint8 and blocks.shape == (nb, ng, 64 + 16 * group)
    flat = blocks.reshape(nb, -1)
    for r, i in ((0, 0), (out_f - 1, 95), (out_f // 2, 37 % group + group * (ng - 1)), (out_f - 1, 3)):
        b, c, k = r // 16, i // group, i % group
        at = c * (64 + 16 * group)
        assert flat[b, at + 64 + 16 * (k - k % 4) + 4 * (r % 16) + k % 4] == int(q[r, i]) + 128
        assert flat[b, at + 4 * (r % 16) : at + 4 * (r % 16) + 4].view(torch.float32) == scale[r, c]
    padded = torch.arange(16 * nb) >= out_f
    q_all = blocks[..., 64:].reshape(nb, ng, -1, 16, 4).permute(0, 3, 1, 2, 4).reshape(16 * nb, -1)
    assert (q_all[padded] == 128).all()
    assert all(map(torch.equal, q8_unblocks(blocks, out_f), (q, scale)))


@pytest.mark.parametrize('m', [1, 3, 8])
@pytest.mark.parametrize('in_f, group', [(16, 16), (48, 16), (96, 32), (96, 96), (768, 32), (64, 4)])
@pytest.mark.parametrize('out_f', [1, 15, 16, 17, 33, 64, 80, 129])
def test_the_dot_kernel_computes_the_product_of_x_and_w_both_rounded(m, in_f, group, out_f):
    """Rows that fill no block of 16, exactly one, or blocks and a remainder; one group or many: F.linear of
    x and W both rounded by `quantize` and back, to float32 rounding."""
    from gptcourse.quantize import dequantize, quantize

    kernel = _dot_kernel()
    g = torch.Generator().manual_seed(m * 1000 + in_f * 10 + out_f)
    x, W, b = (torch.randn(*s, generator=g) for s in ((m, in_f), (out_f, in_f), (out_f,)))
    W[:, :group] *= 50  # the first group's scales are far from the others': a wrong scale index shows
    x[:, -group:] *= 20  # and so is x's last group
    x_hat, W_hat = dequantize(*quantize(x, group)), dequantize(*quantize(W, group))
    bound = 1e-5 * (x_hat.abs() @ W_hat.abs().T + b.abs()) + 1e-6
    q, scale = quantize(W, group)
    assert ((_dot(kernel, x, q, scale, b) - F.linear(x_hat, W_hat, b)).abs() <= bound).all()
    assert ((_dot(kernel, x, q, scale) - F.linear(x_hat, W_hat)).abs() <= bound).all()


@pytest.mark.parametrize('group', [4, 32, 96])
def test_the_dot_kernel_rounds_x_exactly_as_quantize_rounds_it(group):
    """Through an identity matrix (127 on the diagonal, a scale of 1/127) the kernel returns x as it rounded
    it: equal to `dequantize(*quantize(x))` up to float32 rounding, where one step off (truncating instead of
    rounding, a wrong scale, a dropped rounding) is a whole step of x's scale away."""
    from gptcourse.quantize import dequantize, quantize

    kernel = _dot_kernel()
    g = torch.Generator().manual_seed(group)
    x = torch.randn(3, 96, generator=g) * torch.logspace(-2, 2, 96)
    x[1, :group] = 0  # a group of zeros: zeros back, no NaN
    x[2, 5] = 0.5 * x[2].abs().max()  # (ties and near-ties of the rounding are everywhere in 3 x 96 numbers)
    q, scale = torch.eye(96, dtype=torch.int8) * 127, torch.full((96, 96 // group), 1 / 127)
    got, want = _dot(kernel, x, q, scale), dequantize(*quantize(x, group))
    step = quantize(x, group)[1].repeat_interleave(group, dim=1)
    assert ((got - want).abs() <= 1e-3 * step + 1e-30).all()
    assert not got.isnan().any() and torch.equal(got[1, :group], torch.zeros(group))


def test_the_dot_kernel_without_vnni_makes_the_same_sums(kernel_cache, monkeypatch):
    "Built for any CPU (-O3 alone: no AVX-512 VNNI), the plain C rows give what the VNNI rows give."
    from gptcourse import decode
    from gptcourse.quantize import dequantize, q8dot_kernel, quantize

    if shutil.which(os.environ.get('CC') or 'cc') is None:
        pytest.skip('no C compiler here')
    monkeypatch.setattr(decode, 'KERNEL_FLAGS', (('-O3',),))
    q8dot_kernel.cache_clear()
    kernel, note = q8dot_kernel()
    q8dot_kernel.cache_clear()
    assert kernel is not None and '-march' not in note, note
    g = torch.Generator().manual_seed(1)
    x, W, b = (torch.randn(*s, generator=g) for s in ((2, 192), (37, 192), (37,)))
    x_hat, W_hat = dequantize(*quantize(x)), dequantize(*quantize(W))
    bound = 1e-5 * (x_hat.abs() @ W_hat.abs().T + b.abs())
    assert ((_dot(kernel, x, *quantize(W), b) - F.linear(x_hat, W_hat, b)).abs() <= bound).all()


def test_a_dot_kernel_that_forgets_x_scale_is_not_used(kernel_cache, monkeypatch, tmp_path):
    "A library that loads but multiplies by the weights' scales alone is refused by q8dot_kernel()'s check."
    from gptcourse.quantize import Q8DOT_C, q8dot_kernel

    wrong = Q8DOT_C.replace('_mm512_set1_ps(sx[c])', '_mm512_set1_ps(1)').replace('* sx[c])', '* 1)')
    assert wrong != Q8DOT_C
    monkeypatch.setenv('CC', _compiler_of(wrong, tmp_path, '-O3 -march=native'))
    q8dot_kernel.cache_clear()
    kernel, note = q8dot_kernel()
    q8dot_kernel.cache_clear()
    assert kernel is None and 'disagrees with F.linear' in note


def test_int8_dot_linear_rounds_x_on_every_path():
    """The same weights as Int8Linear's, stored in the kernel's order; the kernel (a few rows) and F.linear
    (many rows, float64, gradients) both multiply x rounded by `quantize` with the rounded weights."""
    from gptcourse.quantize import Int8DotLinear, Int8Linear, dequantize, quantize

    torch.manual_seed(0)
    plain = torch.nn.Linear(96, 21)
    layer = Int8DotLinear(plain)
    assert layer.blocks.dtype == torch.uint8 and layer.blocks.shape == (2, 3, 64 + 16 * 32)
    assert layer.q is None and layer.scale is None  # held once, as the kernel reads them
    assert torch.equal(layer.dequantized(), Int8Linear(plain).dequantized())
    x_hat = lambda x: dequantize(*quantize(x.reshape(-1, 96))).view(x.shape)
    ref = lambda x: F.linear(x_hat(x), layer.dequantized(), layer.bias)
    with torch.no_grad():
        for x in (torch.randn(96, 2).t(), torch.randn(1, 1, 96), torch.randn(Int8DotLinear.max_rows + 1, 96)):
            assert torch.allclose(layer(x), ref(x), atol=1e-5)
            assert not torch.allclose(layer(x), F.linear(x, layer.dequantized(), layer.bias), atol=1e-4)
        x = torch.randn(1, 96, dtype=torch.float64)
        assert layer(x).dtype == torch.float64
        assert torch.allclose(layer(x), ref(x.float()).double(), atol=1e-5)
    for x in (torch.randn(1, 95), torch.randn(20, 95)):  # a wrong width, on the kernel's path and F.linear's
        with pytest.raises(ValueError, match='^Int8DotLinear: x has 95 numbers .*96$'):
            layer(x)
    _dot_kernel()


def test_use_int8_kernel_takes_the_layer_to_use():
    "Every nn.Linear becomes an Int8DotLinear, the output layer too; a token reads what Int8Linear's read."
    from gptcourse.gpt2 import GPT, GPTConfig
    from gptcourse.quantize import Int8DotLinear, int8_bytes_per_token, use_int8_kernel

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=70, n_layer=2, n_head=2, n_embd=32)).eval()
    dot = use_int8_kernel(copy.deepcopy(model), 32, Int8DotLinear)
    assert not any(isinstance(m, torch.nn.Linear) for m in dot.modules())
    assert isinstance(dot.lm_head, Int8DotLinear)
    pad = (-70 % 16) * (32 + 4 * 32 // 32)  # lm_head's 70 rows fill 5 blocks of 16: 10 zero rows more
    assert int8_bytes_per_token(dot) == int8_bytes_per_token(use_int8_kernel(copy.deepcopy(model))) + pad
