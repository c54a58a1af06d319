"""gptcourse.train beyond its lesson: checkpoints whose header was changed are refused, weights that hold NaN are
never written, and run folders keep what they must."""
import os
import pytest, torch
from gptcourse.train import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint, save_step


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def test_a_changed_header_byte_is_detected(tmp_path):
    path = save_checkpoint(tmp_path / 'c.safetensors', _model(), step=1234, lr=0.0006)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], 'little')
    header = raw[8:8 + n]
    assert b'1234' in header
    (tmp_path / 'd.safetensors').write_bytes(raw[:8] + header.replace(b'1234', b'9234') + raw[8 + n:])
    with pytest.raises(CheckpointError, match='do not match the sha256'): load_checkpoint(tmp_path / 'd.safetensors')
    assert load_checkpoint(path)['step'] == 1234


def test_non_finite_weights_are_never_written(tmp_path):
    m = _model()
    save_step(tmp_path, 10, m, keep=2); save_step(tmp_path, 20, m, keep=2)
    with torch.no_grad(): m.weight[0, 0] = float('nan')
    with pytest.raises(CheckpointError, match='hold NaN or inf'): save_step(tmp_path, 30, m, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ['step_0000010.safetensors', 'step_0000020.safetensors']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['step_0000010.safetensors', 'step_0000020.safetensors']


@pytest.mark.parametrize('keep', [0, -1])
def test_keep_below_one_is_refused_before_anything_is_deleted(tmp_path, keep):
    save_step(tmp_path, 10, _model())
    with pytest.raises(ValueError, match='keep must be at least 1'): save_step(tmp_path, 20, _model(), keep=keep)
    assert [p.name for p in list_checkpoints(tmp_path)] == ['step_0000010.safetensors']


def test_meta_must_be_json(tmp_path):
    with pytest.raises(TypeError, match='JSON-serialisable'): save_checkpoint(tmp_path / 'x.safetensors', _model(),
                                                                              bad={1, 2})
    assert list(tmp_path.iterdir()) == []


def _tiny_gpt(seed=0, **kw):
    from gptcourse.gpt2 import GPT, GPTConfig
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=2, n_head=2, n_embd=32, **kw))


def _train_steps(model, precision, steps=40, lr=3e-3):
    "`steps` steps of fit on a fixed repeating sequence; returns the per-step losses."
    from gptcourse.train import fit
    x = torch.arange(16).repeat(8, 1) % 32
    batch = lambda split: (x[:, :-1], x[:, 1:])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    return fit(model, batch, opt, steps, precision=precision, progress=False).loss


def test_device_policy_table():
    from gptcourse.train import device_policy
    table = {('cuda', (7, 5)): ('float16', True, False, True), ('cuda', (7, 0)): ('float16', True, False, True),
             ('cuda', (8, 0)): ('bfloat16', False, True, True), ('cuda', (8, 6)): ('bfloat16', False, True, True),
             ('cuda', (8, 9)): ('bfloat16', False, True, True), ('cuda', (9, 0)): ('bfloat16', False, True, True),
             ('cpu', None): ('float32', False, False, False), ('mps', None): ('float32', False, False, False)}
    for (dev, cap), want in table.items():
        p = device_policy(dev, cap)
        assert (p.dtype, p.scaler, p.tf32, p.fused_adamw) == want, (dev, cap, p)


def test_bf16_autocast_trains_on_cpu():
    from gptcourse.train import Precision
    fp32 = _train_steps(_tiny_gpt(), Precision('cpu', 'float32'))
    bf16 = _train_steps(_tiny_gpt(), Precision('cpu', 'bfloat16'))
    assert bf16[-1] < bf16[0] - 1.5 and abs(bf16[-1] - fp32[-1]) < 0.2, (bf16[0], bf16[-1], fp32[-1])


def test_fp16_grad_scaler_skips_an_inf_step_and_still_trains():
    from gptcourse.train import Precision
    p = Precision('cpu', 'float16')
    assert p.scaler.is_enabled()
    model = _tiny_gpt()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [t.detach().clone() for t in model.parameters()]
    scale = p.scaler.get_scale()
    x = torch.arange(16)[None] % 32
    with p.autocast(): loss = model(x[:, :-1], x[:, 1:])[1]
    p.scaler.scale(loss * float('inf')).backward()        # a step whose gradients overflow
    p.scaler.step(opt); p.scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))   # skipped
    assert p.scaler.get_scale() < scale                                        # and the scale backed off
    losses = _train_steps(_tiny_gpt(), Precision('cpu', 'float16'))
    assert losses[-1] < losses[0] - 1.5, (losses[0], losses[-1])


def test_torch_compile_on_cpu_equals_eager_and_its_checkpoint_loads_eagerly(tmp_path):
    from gptcourse.train import load_checkpoint, maybe_compile, save_checkpoint
    eager = _tiny_gpt().eval()
    compiled = maybe_compile(eager, True)
    assert compiled is not eager and hasattr(compiled, '_orig_mod')
    x = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(): assert torch.allclose(compiled(x)[0], eager(x)[0], atol=1e-5)
    path = save_checkpoint(tmp_path / 'c.safetensors', compiled)
    fresh = _tiny_gpt(seed=5).eval()
    load_checkpoint(path, fresh)
    with torch.no_grad(): assert torch.equal(fresh(x)[0], eager(x)[0])


def test_a_run_folder_that_cannot_take_files_is_refused_before_any_step(tmp_path):
    "A file where the folder should be or above it, a folder that takes no files: one CheckpointError; nothing made."
    from gptcourse.train import CheckpointError, check_run_dir
    (tmp_path/'afile').write_text('x')
    with pytest.raises(CheckpointError, match='afile cannot be a run folder: .*afile is a file'):
        check_run_dir(tmp_path/'afile')
    with pytest.raises(CheckpointError, match='afile/run cannot be a run folder: .*afile is a file'):
        check_run_dir(tmp_path/'afile'/'run')
    (tmp_path/'locked').mkdir(); (tmp_path/'locked').chmod(0o500)
    try:
        if os.access(tmp_path/'locked', os.W_OK): pytest.skip('root writes anywhere: no read-only folder to test')
        with pytest.raises(CheckpointError, match='cannot write checkpoints into .*locked/run: Permission denied'):
            check_run_dir(tmp_path/'locked'/'run')
    finally: (tmp_path/'locked').chmod(0o700)
    assert check_run_dir(tmp_path/'new'/'run') == tmp_path/'new'/'run' and not (tmp_path/'new').exists()
