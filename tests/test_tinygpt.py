"""Lesson 29 beyond its notebook: what the tinygrad port refuses, each with one message that says what is
wrong, and the optimizer that holds a tied tensor once."""

import pytest, torch

pytest.importorskip('tinygrad')
from gptcourse.gpt2 import GPT, GPTConfig
from gptcourse.tinygpt import TinyGPT, load_torch, pick_device, tiny_adamw

CFG = GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8)


@pytest.fixture(scope='module')
def device():
    name = pick_device(('CPU',))
    if name is None:
        pytest.skip('tinygrad has no usable CPU device here (is clang installed?)')
    return name


def test_an_unknown_device_is_skipped_with_its_reason(capsys):
    from tinygrad.helpers import DEV

    before = DEV.value
    try:
        assert pick_device(('NOSUCHDEVICE',)) is None
        assert repr(DEV) == 'PYTHON'  # tinygrad's emulator: models can still be built
    finally:
        DEV.value = before
    assert 'tinygrad cannot use NOSUCHDEVICE' in capsys.readouterr().out


def test_what_the_port_leaves_out_is_refused():
    with pytest.raises(ValueError, match='TinyGPT has no dropout: got dropout=0.1'):
        TinyGPT(GPTConfig(**{**CFG.__dict__, 'dropout': 0.1}))
    with pytest.raises(ValueError, match='bias=False'):
        TinyGPT(GPTConfig(**{**CFG.__dict__, 'bias': False}))


def test_a_state_dict_that_does_not_fit_is_refused_in_one_message(device):
    sd = GPT(CFG).state_dict()
    wrong = dict(sd, **{'transformer.h.0.mlp.c_fc.weight': torch.zeros(8, 32)})  # transposed: (32, 8) wanted
    with pytest.raises(ValueError) as e:
        load_torch(TinyGPT(CFG), wrong)
    assert str(e.value) == (
        'the state dict does not fit this TinyGPT: '
        'transformer.h.0.mlp.c_fc.weight: given (8, 32), model (32, 8)'
    )
    odd = {k: v for k, v in sd.items() if k != 'transformer.ln_f.bias'} | {'extra.weight': torch.zeros(1)}
    missing = r"missing \['transformer.ln_f.bias'\]; unexpected \['extra.weight'\]"
    with pytest.raises(ValueError, match=missing):
        load_torch(TinyGPT(CFG), odd)


def test_an_untied_head_is_refused_by_a_tied_model_and_loaded_by_an_untied_one(device):
    cfg = GPTConfig(**{**CFG.__dict__, 'tie_weights': False})
    sd = GPT(cfg).state_dict()
    with pytest.raises(ValueError, match='lm_head.weight differs from transformer.wte.weight'):
        load_torch(TinyGPT(CFG), sd)
    model = load_torch(TinyGPT(cfg), sd)
    assert model.lm_head.weight is not model.transformer['wte'].weight
    assert (model.lm_head.weight.numpy() == sd['lm_head.weight'].numpy()).all()


def test_loading_keeps_the_tie_and_a_long_sequence_is_refused(device):
    from tinygrad import Tensor

    model = load_torch(TinyGPT(CFG), GPT(CFG).state_dict())
    assert model.lm_head.weight is model.transformer['wte'].weight
    with pytest.raises(ValueError, match='length 9: block_size is 8'):
        model(Tensor.zeros(1, 9, dtype='int32'))


def test_the_optimizer_holds_each_tensor_once_and_decays_the_matrices_only():
    model = TinyGPT(CFG)
    opt = tiny_adamw(model, weight_decay=0.1, lr=1e-3)
    decay, rest = opt[0], opt[1]
    assert decay.wd == 0.1 and rest.wd == 0.0
    assert all(p.ndim >= 2 for p in decay.params) and all(p.ndim == 1 for p in rest.params)
    assert len(decay.params) + len(rest.params) == len(list(GPT(CFG).parameters()))  # wte/lm_head once
