"""Lesson 26's options of the one GPT (gptcourse.modern): bad names refused in one line, the modern configuration
saved, loaded, resumed and sampled like any other — from a program that never imports lesson 26 — and Muon's state
surviving a checkpoint."""
import dataclasses, os, subprocess, sys
import pytest
import torch

from gptcourse.chargpt import PRESETS
from gptcourse.checkpoint import load_model, save_step
from gptcourse.gpt2 import GPT, GPTConfig, char_config
from gptcourse.modern import ARCHS, MODERN, Muon, QKNorm, Rotary, muon_adamw
from gptcourse.trainers import train_char

TINY = GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32)
QUIET = dict(progress=False, log=lambda *a: None)


@pytest.mark.parametrize('field, value', [('norm', 'batchnorm'), ('pos', 'sinusoidal'), ('activation', 'tanh'),
                                          ('mlp', 'moe'), ('qk', ('alibi',)), ('norm', 'modern:nothing'),
                                          ('norm', '../etc:passwd')])
def test_unknown_names_are_refused_with_the_choices(field, value):
    with pytest.raises(ValueError, match=f"unknown {field.replace('qk', 'qk map')} "):
        GPTConfig(**{field: value})


def test_a_modern_checkpoint_loads_into_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(TINY, **MODERN))
    with torch.no_grad():                    # zero-initialised projections: give the blocks something to do
        for p in model.parameters(): p.add_(0.01 * torch.randn_like(p))
    save_step(tmp_path, 1, model, None, config=dataclasses.asdict(model.config))
    loaded, _ = load_model(tmp_path)
    assert loaded.config == model.config and loaded.config.qk == ('modern:QKNorm', 'modern:Rotary')
    x = torch.randint(0, 65, (2, 16))
    assert torch.allclose(loaded(x)[0], model.eval()(x)[0], atol=1e-6)
    assert [type(f) for f in loaded.transformer.h[1].attn.qk_maps] == [QKNorm, Rotary]


def test_a_modern_run_samples_in_a_process_that_never_imports_lesson_20(tmp_path):
    "The config names its parts 'modern:Name': loading it imports gptcourse.modern then, and only then."
    train_char('cpu', tmp_path / 'run', max_steps=5, eval_interval=5, eval_iters=1, device='cpu', arch='modern',
               **ARCHS['modern'], **QUIET)
    code = f'''
import sys, torch
import gptcourse.data
assert 'gptcourse.modern' not in sys.modules and 'gptcourse.trainers' not in sys.modules
from gptcourse.checkpoint import load_model
from gptcourse.train import generate
from gptcourse.kv_cache import cached_next_logits
model, meta = load_model({str(tmp_path / "run")!r})
print(generate(model, torch.zeros(1, 1, dtype=torch.long), 8, seed=0, next_logits=cached_next_logits(model)).shape)
print('gptcourse.modern' in sys.modules)'''
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split('\n')[:2] == ['torch.Size([1, 9])', 'True']


def test_muon_state_survives_a_checkpoint():
    "Two steps, a state_dict round trip into a fresh optimizer, a third step: the same as three straight steps."
    def run(split: bool):
        torch.manual_seed(0)
        model = GPT(dataclasses.replace(TINY, **MODERN)); opt = muon_adamw(model, 1e-3)
        x, y = torch.randint(0, 65, (4, 16)), torch.randint(0, 65, (4, 16))
        for i in range(3):
            if split and i == 2:
                state = opt.state_dict(); opt = muon_adamw(model, 1e-3); opt.load_state_dict(state)
            opt.zero_grad(); model(x, y)[1].backward(); opt.step()
        return model.state_dict()
    a, b = run(False), run(True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_muon_defaults_and_groups():
    model = GPT(char_config(PRESETS['cpu'].model_config(65)))
    opt = muon_adamw(model, 3e-4, muon_lr=0.05)
    muon, adam = opt.param_groups
    assert muon['muon'] and muon['lr'] == 0.05 and muon['momentum'] == 0.95
    assert not adam['muon'] and adam['lr'] == 3e-4 and adam['betas'] == (0.9, 0.95)
    assert all(p.dim() == 2 for p in muon['params']) and isinstance(opt, Muon)


def test_a_modern_run_resumes_exactly_and_keeps_its_architecture(tmp_path):
    kw = dict(eval_interval=10, eval_iters=2, device='cpu', **QUIET)
    straight = train_char('cpu', tmp_path / 'a', max_steps=20, arch='modern', **ARCHS['modern'], **kw)
    train_char('cpu', tmp_path / 'b', max_steps=20, stop_after=10, arch='modern', **ARCHS['modern'], **kw)
    resumed = train_char(None, tmp_path / 'b', resume=True, **kw)            # keeps its own architecture
    assert resumed.model.config == straight.model.config and straight.history.loss == resumed.history.loss
    assert all(torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(),
                                                 resumed.model.state_dict().values()))
    with pytest.raises(ValueError, match='a resumed run keeps its arch, gpt, optimizer'):
        train_char(None, tmp_path / 'b', resume=True, max_steps=30, arch='lecture', **ARCHS['lecture'], **kw)


def test_cli_refuses_another_arch_on_resume_in_one_line(tmp_path):
    run = [sys.executable, '-m', 'gptcourse.cli', 'train', '--preset', 'cpu', '--out', str(tmp_path / 'r'),
           '--eval-iters', '2', '--eval-interval', '5', '--max-new-tokens', '0', '--no-progress']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run(run + ['--max-steps', '5', '--arch', 'modern'], capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, '-m', 'gptcourse.cli', 'train', '--out', str(tmp_path / 'r'), '--resume',
                        '--max-steps', '10', '--arch', 'lecture'], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 1 and r.stderr.strip().count('\n') == 0, r.stderr
    assert 'a resumed run keeps its arch, gpt, optimizer' in r.stderr


def test_every_architecture_is_a_charrun_and_modern_is_every_change():
    from gptcourse.trainers import CHAR_PRESETS
    for name, arch in ARCHS.items():
        run = CHAR_PRESETS['cpu'].changed(arch=name, **arch)[0]
        GPT(dataclasses.replace(char_config(run.model_config(65)), **run.gpt))   # every one builds
    cfg = dataclasses.replace(TINY, **MODERN)
    assert {k: getattr(cfg, k) for k in MODERN} == MODERN and cfg.n_embd == TINY.n_embd
