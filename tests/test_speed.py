"""Lesson 13 beyond its notebook: training in bfloat16 and in float16 with its scaler on a CPU, and
torch.compile on a CPU computing what the eager model computes, its checkpoint loading into a plain model."""

import pytest, torch
from gptcourse.gpt2 import GPT, GPTConfig
from gptcourse.speed import Precision, device_policy


def _tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=2, n_head=2, n_embd=32, **kw))


def _train_steps(model, precision, steps=40, lr=3e-3):
    """`steps` steps of lesson 13's loop on a fixed repeating sequence, in `precision`; returns the per-step
    losses."""
    x = torch.arange(16).repeat(8, 1) % 32
    opt, losses = torch.optim.AdamW(model.parameters(), lr=lr), []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with precision.autocast():
            loss = model(x[:, :-1], x[:, 1:])[1]
        precision.backward(loss)
        precision.step(opt)
        losses.append(loss.item())
    return losses


def test_bf16_autocast_trains_on_cpu():
    fp32 = _train_steps(_tiny_gpt(), Precision('cpu', 'float32'))
    bf16 = _train_steps(_tiny_gpt(), Precision('cpu', 'bfloat16'))
    assert bf16[-1] < bf16[0] - 1.5 and abs(bf16[-1] - fp32[-1]) < 0.2, (bf16[0], bf16[-1], fp32[-1])


def test_fp16_grad_scaler_skips_an_inf_step_and_still_trains():
    p = Precision('cpu', 'float16')
    assert p.scaler.is_enabled()
    model = _tiny_gpt()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [t.detach().clone() for t in model.parameters()]
    scale = p.scaler.get_scale()
    x = torch.arange(16)[None] % 32
    with p.autocast():
        loss = model(x[:, :-1], x[:, 1:])[1]
    p.backward(loss * float('inf'))  # a step whose gradients overflow
    p.unscale(opt)
    p.step(opt)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # skipped
    assert p.scaler.get_scale() < scale  # and the scale backed off
    losses = _train_steps(_tiny_gpt(), Precision('cpu', 'float16'))
    assert losses[-1] < losses[0] - 1.5, (losses[0], losses[-1])


def test_torch_compile_on_cpu_equals_eager_and_its_checkpoint_loads_eagerly(tmp_path):
    from gptcourse.checkpoint import load_checkpoint, save_checkpoint

    eager = _tiny_gpt().eval()
    compiled = device_policy('cpu', compile=True).compiled(eager)
    assert compiled is not eager and compiled._orig_mod is eager
    x = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(compiled(x)[0], eager(x)[0], atol=1e-5)
    path = save_checkpoint(tmp_path / 'c.safetensors', compiled)
    fresh = _tiny_gpt(seed=5).eval()
    load_checkpoint(path, fresh)
    with torch.no_grad():
        assert torch.equal(fresh(x)[0], eager(x)[0])


@pytest.mark.parametrize(
    'cap, dtype',
    [
        ((7, 0), 'float16'),
        ((7, 5), 'float16'),
        ((8, 0), 'bfloat16'),
        ((8, 6), 'bfloat16'),
        ((8, 9), 'bfloat16'),
        ((9, 0), 'bfloat16'),
    ],
)
def test_the_policy_follows_nvidia_s_capabilities(cap, dtype):
    """Tensor cores for bfloat16 and TF32 arrived with Ampere (compute capability 8.0), per NVIDIA's data
    sheets."""
    p = device_policy('cuda', capability=cap)
    assert (p.dtype, p.tf32, p.fused_adamw, p.compile) == (dtype, dtype == 'bfloat16', True, True)
