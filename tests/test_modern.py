"""Lesson 12's options of the one GPT (gptcourse.modern): bad names refused in one line, the modern configuration
saved, loaded, resumed and sampled like any other, and Muon's state surviving a checkpoint."""
import dataclasses, os, subprocess, sys
import pytest
import torch

from gptcourse.chargpt import PRESETS, preset_config
from gptcourse.gpt2 import GPT, GPTConfig, char_config, load_gpt_checkpoint
from gptcourse.gpt2_train import train_chargpt
from gptcourse.modern import MODERN, Muon, QKNorm, Rotary, modern_config, muon_adamw
from gptcourse.train import save_step

TINY = GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32)


@pytest.mark.parametrize('field, value, allowed', [('norm', 'batchnorm', 'layernorm, rmsnorm'),
                                                   ('pos', 'sinusoidal', 'learned, none'),
                                                   ('activation', 'tanh', 'relu2')])
def test_unknown_names_are_refused_with_the_choices(field, value, allowed):
    with pytest.raises(ValueError, match=f"unknown {field} '{value}'.*{allowed}"):
        GPTConfig(**{field: value})


def test_unknown_mlp_and_qk_map_are_refused_when_the_model_is_built():
    with pytest.raises(ValueError, match="unknown mlp 'moe'.*swiglu"): GPT(dataclasses.replace(TINY, mlp='moe'))
    with pytest.raises(ValueError, match="unknown qk map 'alibi'.*rope"): GPT(dataclasses.replace(TINY, qk=('alibi',)))


def test_a_modern_checkpoint_loads_into_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = GPT(modern_config(TINY))
    with torch.no_grad():                    # zero-initialised projections: give the blocks something to do
        for p in model.parameters(): p.add_(0.01 * torch.randn_like(p))
    save_step(tmp_path, 1, model, None, config=dataclasses.asdict(model.config))
    loaded, _ = load_gpt_checkpoint(tmp_path)
    assert loaded.config == model.config and loaded.config.qk == ('qk_norm', 'rope')
    x = torch.randint(0, 65, (2, 16))
    assert torch.allclose(loaded(x)[0], model.eval()(x)[0], atol=1e-6)
    assert [type(f) for f in loaded.transformer.h[1].attn.qk_maps] == [QKNorm, Rotary]


def test_muon_state_survives_a_checkpoint():
    "Two steps, a state_dict round trip into a fresh optimizer, a third step: the same as three straight steps."
    def run(split: bool):
        torch.manual_seed(0)
        model = GPT(modern_config(TINY)); opt = muon_adamw(model, 1e-3)
        x, y = torch.randint(0, 65, (4, 16)), torch.randint(0, 65, (4, 16))
        for i in range(3):
            if split and i == 2:
                state = opt.state_dict(); opt = muon_adamw(model, 1e-3); opt.load_state_dict(state)
            opt.zero_grad(); model(x, y)[1].backward(); opt.step()
        return model.state_dict()
    a, b = run(False), run(True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_muon_defaults_and_groups():
    model = GPT(char_config(preset_config(PRESETS['cpu'])))
    opt = muon_adamw(model, 3e-4, muon_lr=0.05)
    muon, adam = opt.param_groups
    assert muon['muon'] and muon['lr'] == 0.05 and muon['momentum'] == 0.95
    assert not adam['muon'] and adam['lr'] == 3e-4 and adam['betas'] == (0.9, 0.95)
    assert all(p.dim() == 2 for p in muon['params']) and isinstance(opt, Muon)


def test_train_chargpt_modern_resumes_exactly(tmp_path):
    kw = dict(preset='cpu', eval_interval=10, eval_iters=2, device='cpu', progress=False, log=lambda *a: None)
    straight, h1 = train_chargpt(tmp_path / 'a', max_steps=20, arch='modern', **kw)
    train_chargpt(tmp_path / 'b', max_steps=10, arch='modern', **kw)
    resumed, h2 = train_chargpt(tmp_path / 'b', max_steps=20, resume=True, **kw)   # keeps its own architecture
    assert resumed.config == straight.config == modern_config(straight.config) and h1.loss == h2.loss
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
    with pytest.raises(ValueError, match='trained with --arch modern, not lecture'):
        train_chargpt(tmp_path / 'b', max_steps=30, resume=True, arch='lecture', **kw)


def test_cli_refuses_another_arch_on_resume_in_one_line(tmp_path):
    run = [sys.executable, '-m', 'gptcourse.cli', 'train', '--preset', 'cpu', '--out', str(tmp_path / 'r'),
           '--eval-iters', '2', '--eval-interval', '5', '--max-new-tokens', '0']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run(run + ['--max-steps', '5', '--arch', 'modern'], capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(run + ['--max-steps', '10', '--resume', '--arch', 'lecture'], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 1 and r.stderr.strip().count('\n') == 0, r.stderr
    assert 'trained with --arch modern, not lecture; leave out --arch to resume it' in r.stderr


def test_modern_is_every_change():
    cfg = modern_config(TINY)
    assert {k: getattr(cfg, k) for k in MODERN} == MODERN and cfg.n_embd == TINY.n_embd
