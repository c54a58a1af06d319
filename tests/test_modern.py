"""Lesson 26's subclass of the one GPT (gptcourse.modern): bad switches refused in one line, a modern run
saved, loaded, resumed and sampled like any other — its class named in the checkpoint, looked up among the
classes a program passes, never imported — a learner's own class trained and loaded the same way, and Muon's
state surviving a checkpoint."""

import dataclasses, os, subprocess, sys
import pytest
import torch
import torch.nn as nn

from gptcourse.chargpt import PRESETS
from gptcourse.checkpoint import CheckpointError, load_model, model_meta, save_step
from gptcourse.gpt2 import GPT, Block, char_config
from gptcourse.modern import ARCHS, MODERN, ModernConfig, ModernGPT, Muon, RMSNorm, Rotary, muon_adamw
from gptcourse.trainers import CHAR_PRESETS, Arch, train_char

TINY = dict(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32)
QUIET = dict(progress=False, log=lambda *a: None)


@pytest.mark.parametrize(
    'field, value, says',
    [
        ('mlp', 'moe', "mlp must be 'gpt2', 'swiglu' or 'relu2'"),
        ('rope', 'yes', 'rope must be True or False'),
        ('activation', 'tanh', "activation must be 'gelu_tanh'"),
        ('qk_norm', 1, 'qk_norm must be True or False'),
    ],
)
def test_bad_switches_are_refused_with_the_choices(field, value, says):
    with pytest.raises(ValueError, match=says):
        ModernConfig(**TINY, **{field: value})


def test_a_modern_checkpoint_loads_into_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = ModernGPT(ModernConfig(**TINY, **MODERN))
    with torch.no_grad():  # zero-initialised projections: give the blocks something to do
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_step(tmp_path, 1, model, None, **model_meta(model))
    loaded, _ = load_model(tmp_path, classes=[GPT, ModernGPT])
    assert type(loaded) is ModernGPT and loaded.config == model.config
    x = torch.randint(0, 65, (2, 16))
    assert torch.allclose(loaded(x)[0], model.eval()(x)[0], atol=1e-6)
    assert isinstance(loaded.transformer.h[1].attn.rotary, Rotary) and isinstance(
        loaded.transformer.ln_f, RMSNorm
    )


def test_a_modern_run_is_refused_by_a_program_that_does_not_pass_its_class_and_never_imports_it(tmp_path):
    "The checkpoint names gptcourse.modern:ModernGPT; a program that knows only GPT is told so, in one line."
    train_char(
        'cpu',
        tmp_path / 'run',
        max_steps=5,
        eval_interval=5,
        eval_iters=1,
        device='cpu',
        arch=ARCHS['modern'],
        **QUIET,
    )
    code = f'''
import sys, torch
from gptcourse.checkpoint import CheckpointError, load_model
from gptcourse.kv_cache import generate_cached
try: load_model({str(tmp_path / "run")!r})
except CheckpointError as e: print(str(e).count('\\n'), 'not among the classes given' in str(e))
print('gptcourse.modern' in sys.modules)
from gptcourse.modern import ModernGPT
model, meta = load_model({str(tmp_path / "run")!r}, classes=[ModernGPT])
print(generate_cached(model, torch.zeros(1, 1, dtype=torch.long), 8, seed=0).shape)'''
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split('\n')[:3] == ['0 True', 'False', 'torch.Size([1, 9])'], r.stdout


class ScaleNorm(nn.Module):
    "A learner's own norm: x / |x| · g·√n (Nguyen & Salazar, 2019)."

    def __init__(self, n: int):
        super().__init__()
        self.g, self.n = nn.Parameter(torch.ones(())), n

    def forward(self, x):
        return self.g * self.n**0.5 * x / x.norm(dim=-1, keepdim=True).clamp(min=1e-5)


class ScaleNormGPT(GPT):
    "Lesson 08's GPT with the learner's ScaleNorm in every block and at the end."

    def __init__(self, config):
        super().__init__(config)
        for block in self.transformer.h:
            block.ln_1, block.ln_2 = ScaleNorm(config.n_embd), ScaleNorm(config.n_embd)
        self.transformer.ln_f = ScaleNorm(config.n_embd)


def test_a_learners_own_class_trains_saves_and_loads_where_it_is_passed(tmp_path):
    arch = Arch('scalenorm', ScaleNormGPT)
    res = train_char(
        'cpu',
        tmp_path / 'run',
        max_steps=20,
        eval_interval=10,
        eval_iters=2,
        device='cpu',
        arch=arch,
        **QUIET,
    )
    assert isinstance(res.model.transformer.ln_f, ScaleNorm) and res.history.loss[-1] < res.history.loss[0]
    with pytest.raises(
        CheckpointError, match=r'holds a model of class test_modern:ScaleNormGPT, which is not among'
    ):
        load_model(tmp_path / 'run')
    model, meta = load_model(tmp_path / 'run', classes=[ScaleNormGPT])
    assert type(model) is ScaleNormGPT and meta['run']['arch'] == 'scalenorm'
    assert torch.equal(model.transformer.ln_f.g, res.model.transformer.ln_f.g)


def test_with_every_switch_off_the_modern_model_is_lesson_08s():
    config = char_config(PRESETS['cpu'].model_config(65))
    twin, ref = ModernGPT(ModernConfig(**dataclasses.asdict(config))).eval(), GPT(config).eval()
    ref.load_state_dict(twin.state_dict())
    x = torch.randint(0, 65, (3, 32))
    with torch.no_grad():
        assert torch.equal(twin(x)[0], ref(x)[0])
    assert type(twin.transformer.h[0]).__mro__[1] is Block


def test_muon_state_survives_a_checkpoint():
    """Two steps, a state_dict round trip into a fresh optimizer, a third step: the same as three straight
    steps."""

    def run(split: bool):
        torch.manual_seed(0)
        model = ModernGPT(ModernConfig(**TINY, **MODERN))
        opt = muon_adamw(model, 1e-3)
        x, y = torch.randint(0, 65, (4, 16)), torch.randint(0, 65, (4, 16))
        for i in range(3):
            if split and i == 2:
                state = opt.state_dict()
                opt = muon_adamw(model, 1e-3)
                opt.load_state_dict(state)
            opt.zero_grad()
            model(x, y)[1].backward()
            opt.step()
        return model.state_dict()

    a, b = run(False), run(True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_muon_defaults_and_groups():
    model = GPT(char_config(PRESETS['cpu'].model_config(65)))
    opt = muon_adamw(model, 3e-4, muon_lr=0.05)
    muon, adam = opt.param_groups
    assert muon['muon'] and muon['lr'] * muon['lr_scale'] == pytest.approx(0.05) and muon['momentum'] == 0.95
    assert (
        not adam['muon'] and adam['lr'] == 3e-4 and adam['lr_scale'] == 1.0 and adam['betas'] == (0.9, 0.95)
    )
    assert all(p.dim() == 2 for p in muon['params']) and isinstance(opt, Muon)


def test_a_loop_that_sets_the_rate_keeps_muons_own():
    """The loop sets every group's rate to the run's; the Muon group's step is still muon_lr's, by hand for
    SGD-like steps."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(6, 4))
    opt = Muon([dict(params=[w], muon=True, lr=1e-3, lr_scale=20.0, momentum=0.0)])
    g = torch.randn(6, 4)
    w.grad, before = g.clone(), w.detach().clone()
    from gptcourse.modern import orthogonalize

    opt.step()
    assert torch.allclose(w, before - 0.02 * (6 / 4) ** 0.5 * orthogonalize(g), atol=1e-6)


def test_a_modern_run_resumes_exactly_and_keeps_its_architecture(tmp_path):
    kw = dict(eval_interval=10, eval_iters=2, device='cpu', **QUIET)
    straight = train_char('cpu', tmp_path / 'a', max_steps=20, arch=ARCHS['modern'], **kw)
    train_char('cpu', tmp_path / 'b', max_steps=20, stop_after=10, arch=ARCHS['modern'], **kw)
    resumed = train_char(None, tmp_path / 'b', resume=True, arch=ARCHS['modern'], **kw)
    assert resumed.model.config == straight.model.config and straight.history.loss == resumed.history.loss
    assert all(
        torch.equal(a, b)
        for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values())
    )
    with pytest.raises(ValueError, match='trained as the modern architecture, not lecture'):
        train_char(None, tmp_path / 'b', resume=True, max_steps=30, **kw)


def test_cli_resumes_with_the_runs_own_arch_and_refuses_another_in_one_line(tmp_path):
    run = [
        sys.executable,
        '-m',
        'gptcourse.cli',
        'train',
        '--preset',
        'cpu',
        '--out',
        str(tmp_path / 'r'),
        '--eval-iters',
        '2',
        '--eval-interval',
        '5',
        '--max-new-tokens',
        '0',
        '--no-progress',
    ]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run(
        run + ['--max-steps', '5', '--arch', 'modern'], capture_output=True, text=True, timeout=300, env=env
    )
    assert r.returncode == 0, r.stderr[-2000:]
    resume = [
        sys.executable,
        '-m',
        'gptcourse.cli',
        'train',
        '--out',
        str(tmp_path / 'r'),
        '--resume',
        '--no-progress',
        '--max-new-tokens',
        '0',
    ]
    r = subprocess.run(
        resume + ['--max-steps', '10', '--arch', 'lecture'],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 1 and r.stderr.strip().count('\n') == 0, r.stderr
    assert 'trained as the modern architecture, not lecture' in r.stderr
    r = subprocess.run(resume + ['--max-steps', '10'], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and 'modern architecture' in r.stderr + r.stdout, r.stderr[-2000:]


def test_every_architecture_builds_and_modern_is_every_change():
    for name, arch in ARCHS.items():
        assert arch.name == name
        config = arch.config(CHAR_PRESETS['cpu'], 65)
        model = arch.model(config)
        assert model(torch.zeros(1, 4, dtype=torch.long))[0].shape == (1, 4, 65)
    cfg = ARCHS['modern'].config(CHAR_PRESETS['cpu'], 65)
    assert {k: getattr(cfg, k) for k in MODERN} == MODERN and cfg.n_embd == PRESETS['cpu'].n_embd
