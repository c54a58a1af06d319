"""Lesson 22 beyond its notebook: the kernel on every branch, where DecodeLinear takes it, and every way it
can fail."""

import pytest, torch


@pytest.fixture
def kernel_cache(tmp_path, monkeypatch):
    "A fresh, empty folder for compiled kernels, and gemv_kernel() forgotten before and after the test."
    from gptcourse.decode import gemv_kernel

    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    gemv_kernel.cache_clear()
    yield tmp_path / 'gptcourse' / 'kernels'
    gemv_kernel.cache_clear()


def _gemv(kernel, x, W, b=None):
    y = torch.empty(x.size(0), W.size(0))
    kernel(x.data_ptr(), W.data_ptr(), None if b is None else b.data_ptr(), y.data_ptr(), *x.shape, W.size(0))
    return y


@pytest.mark.parametrize('m', [1, 2, 8])
@pytest.mark.parametrize('in_f', [1, 15, 16, 17, 768])
@pytest.mark.parametrize('out_f', [1, 7, 8, 9, 50])
def test_the_kernel_computes_what_linear_does_on_every_branch(m, in_f, out_f):
    """Rows and columns that fill no block, exactly one, or some blocks and a remainder; with and without a
    bias."""
    from gptcourse.decode import gemv_kernel

    kernel, note = gemv_kernel()
    if kernel is None:
        pytest.skip(note)
    g = torch.Generator().manual_seed(m * 1000 + in_f * 10 + out_f)
    x, W, b = (
        torch.randn(m, in_f, generator=g),
        torch.randn(out_f, in_f, generator=g),
        torch.randn(out_f, generator=g),
    )
    assert torch.allclose(_gemv(kernel, x, W, b), torch.nn.functional.linear(x, W, b), atol=1e-4)
    assert torch.allclose(_gemv(kernel, x, W), torch.nn.functional.linear(x, W), atol=1e-4)


def test_decode_linear_takes_the_kernel_only_where_it_is_the_same_as_linear():
    """Gradients, too many rows, float64, CPU autocast: F.linear, exactly. A non-contiguous input and one row:
    the kernel, with the same numbers."""
    from gptcourse.decode import DecodeLinear, use_decode_kernel

    torch.manual_seed(0)
    plain = torch.nn.Linear(24, 10)
    fast = use_decode_kernel(torch.nn.Sequential(torch.nn.Linear(24, 10)))[0]
    fast.load_state_dict(plain.state_dict())
    assert isinstance(fast, DecodeLinear)
    x = torch.randn(3, 24, requires_grad=True)
    fast(x).sum().backward()
    g_fast = x.grad.clone()
    x.grad = None
    plain(x).sum().backward()
    assert torch.equal(g_fast, x.grad)  # with gradients: F.linear
    with torch.no_grad():
        xt = torch.randn(24, 2).t()  # non-contiguous rows
        assert torch.allclose(fast(xt), plain(xt), atol=1e-5)
        many = torch.randn(DecodeLinear.max_rows + 1, 24)
        assert torch.equal(fast(many), plain(many))  # too many rows: F.linear
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert fast(xt).dtype == plain(xt).dtype == torch.bfloat16  # autocast: F.linear
        fast.double()
        plain.double()
        assert torch.equal(fast(xt.double()), plain(xt.double()))  # float64: F.linear


def test_decode_kernel_keeps_checkpoints_and_reads_the_current_weights():
    "No new state in checkpoints; after load_state_dict the kernel reads the new weights."
    from gptcourse.gpt2 import GPT, GPTConfig
    from gptcourse.decode import DecodeLinear, use_decode_kernel

    cfg = GPTConfig(block_size=16, vocab_size=50, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(0)
    a, b = GPT(cfg).eval(), GPT(cfg).eval()
    x = torch.randint(0, 50, (1, 1))
    before = {k: v.clone() for k, v in a.state_dict().items()}
    use_decode_kernel(a)
    with torch.no_grad():
        a(x)
    assert a.state_dict().keys() == before.keys() and all(
        torch.equal(a.state_dict()[k], before[k]) for k in before
    )
    a.load_state_dict(b.state_dict())
    with torch.no_grad():
        assert torch.allclose(a(x)[0], b(x)[0], atol=1e-5)
    assert isinstance(a.lm_head, DecodeLinear) and isinstance(a.lm_head, torch.nn.Linear)


def test_without_a_compiler_decoding_keeps_linears_path(kernel_cache, monkeypatch):
    "No compiler: gemv_kernel() says so, writes nothing, and DecodeLinear still computes what nn.Linear does."
    from gptcourse.decode import gemv_kernel, use_decode_kernel

    monkeypatch.setenv('CC', 'no-such-compiler-here')
    kernel, note = gemv_kernel()
    assert kernel is None and note == 'no C compiler (no-such-compiler-here) found'
    torch.manual_seed(0)
    plain = torch.nn.Linear(8, 4)
    fast = use_decode_kernel(torch.nn.Sequential(torch.nn.Linear(8, 4)))[0]
    fast.load_state_dict(plain.state_dict())
    with torch.no_grad():
        x = torch.randn(1, 8)
        assert torch.equal(fast(x), plain(x))
    assert not kernel_cache.exists() or not any(kernel_cache.iterdir())


def test_a_compiler_that_fails_leaves_no_library_behind(kernel_cache, monkeypatch, tmp_path):
    """A compiler that writes half a file and fails: every flag set is tried, nothing is kept, gemv_kernel()
    says why."""
    from gptcourse.decode import KERNEL_FLAGS, gemv_kernel

    cc = tmp_path / 'broken-cc'
    cc.write_text(
        '#!/bin/sh\necho "$@" >> ' + str(tmp_path / 'calls') + '\n[ $# -gt 1 ] || exit 0\n'
        'for a; do out=$a; done\necho half > "$out"\nexit 1\n'
    )
    cc.chmod(0o755)
    monkeypatch.setenv('CC', str(cc))
    kernel, note = gemv_kernel()
    assert kernel is None and note.startswith('no kernel (') and 'failed: ' in note
    assert len((tmp_path / 'calls').read_text().splitlines()) == 1 + len(
        KERNEL_FLAGS
    )  # --version, then each set
    assert not any(kernel_cache.iterdir())  # the temporary files went too


def test_a_kernel_that_computes_wrong_numbers_is_not_used(kernel_cache, monkeypatch, tmp_path):
    "A library that loads but disagrees with F.linear is refused."
    import shutil
    from gptcourse.decode import gemv_kernel

    real = shutil.which('cc')
    if real is None:
        pytest.skip('no C compiler here')
    cc = tmp_path / 'wrong-cc'
    cc.write_text(
        f'#!/bin/sh\n[ $# -gt 1 ] || exec {real} "$@"\nfor a; do out=$a; done\n'
        f'exec {real} -shared -fPIC {tmp_path}/wrong.c -o "$out"\n'
    )  # compiles a wrong gemv
    (tmp_path / 'wrong.c').write_text(
        'void gemv(const float *x, const float *W, const float *b, float *y, int m, '
        'int in, int out) { for (int i = 0; i < m * out; i++) y[i] = 0; }\n'
    )
    cc.chmod(0o755)
    monkeypatch.setenv('CC', str(cc))
    kernel, note = gemv_kernel()
    assert kernel is None and 'disagrees with F.linear' in note


def test_the_compiled_kernel_is_kept_and_loaded_again(kernel_cache):
    """The first call compiles into the cache; a new process (here: a cleared cache) loads that file,
    compiling nothing."""
    from gptcourse.decode import gemv_kernel

    kernel, note = gemv_kernel()
    if kernel is None:
        pytest.skip(note)
    (lib,) = kernel_cache.glob('*.so')
    stamps = {f: f.stat().st_mtime_ns for f in kernel_cache.iterdir()}
    assert sorted(f.suffix for f in stamps) == ['.sha256', '.so']
    gemv_kernel.cache_clear()
    kernel2, note2 = gemv_kernel()
    assert kernel2 is not None and str(lib) in note2
    assert {f: f.stat().st_mtime_ns for f in kernel_cache.iterdir()} == stamps  # nothing written again


def test_a_library_the_cache_did_not_build_is_never_loaded(kernel_cache, tmp_path):
    """A library put where the kernel would be (its constructor would run on loading) is built over, never
    loaded."""
    import shutil, subprocess
    import sys
    from gptcourse.decode import gemv_kernel

    first = subprocess.run(
        [
            sys.executable,
            '-c',
            'from gptcourse.decode import gemv_kernel; print(gemv_kernel()[0] is not None)',
        ],
        capture_output=True,
        text=True,
    )  # built by another process
    if first.stdout.strip() != 'True':
        pytest.skip('no kernel here')
    (lib,) = kernel_cache.glob('*.so')
    marker = tmp_path / 'ran'
    (tmp_path / 'evil.c').write_text(
        '#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
        f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n'
        'void gemv(void) {}\n'
    )
    subprocess.run(
        [shutil.which('cc'), '-shared', '-fPIC', str(tmp_path / 'evil.c'), '-o', str(tmp_path / 'evil.so')],
        check=True,
    )
    shutil.copy(tmp_path / 'evil.so', lib)  # the recorded sha256 no longer fits
    gemv_kernel.cache_clear()
    kernel, note = gemv_kernel()
    assert (
        kernel is not None and not marker.exists() and lib.read_bytes() != (tmp_path / 'evil.so').read_bytes()
    )


def test_a_kernel_folder_others_can_write_into_is_not_used(kernel_cache):
    from gptcourse.decode import gemv_kernel

    kernel_cache.mkdir(parents=True)
    kernel_cache.chmod(0o777)
    kernel, note = gemv_kernel()
    if kernel is None:
        pytest.skip(note)
    assert str(kernel_cache) not in note and not any(kernel_cache.iterdir())


def test_an_input_of_the_wrong_width_is_refused_as_linear_refuses_it():
    """The kernel would read past a narrower x (or ignore the rest of a wider one): one line, a ValueError as
    the library's bad input is, and the RuntimeError that nn.Linear raises, on every path."""
    from gptcourse.decode import DecodeLinear

    lin = DecodeLinear(16, 4)
    for width in (8, 32):
        for x in (torch.randn(1, width), torch.randn(9, width).double()):  # the kernel's path, F.linear's
            with torch.no_grad(), pytest.raises(ValueError, match=f'^DecodeLinear: x has {width} .*16$'):
                lin(x)
            with torch.no_grad(), pytest.raises(RuntimeError):
                lin(x)


def test_a_compiler_that_never_answers_is_given_up_on(kernel_cache, monkeypatch, tmp_path):
    "`cc --version` that hangs: gemv_kernel() returns within its timeout, no kernel, and says why."
    import time
    import gptcourse.decode as decode

    cc = tmp_path / 'hanging-cc'
    cc.write_text('#!/bin/sh\nsleep 60\n')
    cc.chmod(0o755)
    monkeypatch.setenv('CC', str(cc))
    monkeypatch.setattr(decode, 'CC_TIMEOUT', 1)
    t0 = time.perf_counter()
    kernel, note = decode.gemv_kernel()
    assert time.perf_counter() - t0 < 10 and kernel is None, note
    assert note.startswith('no kernel (') and 'timed out' in note, note


def test_where_a_compiler_exists_both_kernels_build_and_agree(kernel_cache):
    """The kernel tests skip without a kernel, so a kernel that no longer builds (or no longer agrees with
    F.linear) would only show as skips: where a C compiler exists, not building is a failure."""
    import os, shutil
    from gptcourse.decode import gemv_kernel
    from gptcourse.quantize import q8_kernel

    cc = os.environ.get('CC') or 'cc'
    if not shutil.which(cc):
        pytest.skip(f'no C compiler ({cc}) here: the kernels are not expected to build')
    q8_kernel.cache_clear()
    try:
        for name, (kernel, note) in (('gemv', gemv_kernel()), ('q8', q8_kernel())):
            assert kernel is not None, f'{cc} is here, yet the {name} kernel was not built: {note}'
    finally:
        q8_kernel.cache_clear()
