"""Lesson 16 beyond its notebook: a changed header byte, weights that hold NaN, keep-N that counts only good
checkpoints, crafted files whose digest is right but whose content is not what a run needs, and `load_model`
refusing a config that does not describe its tensors before it costs memory."""

import json, dataclasses
import pytest, torch
from safetensors.torch import save as st_save
from gptcourse.checkpoint import (
    CheckpointError,
    FORMAT,
    _digest,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    load_model,
    run_folder,
    save_checkpoint,
    save_step,
)
from gptcourse.gpt2 import GPT, GPTConfig


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def _crafted(path, tensors: dict, header: dict):
    "A checkpoint whose sha256 is right for whatever `header` says: what a careful forger would write."
    header = {'format': FORMAT, 'aliases': {}, 'meta': {}, 'optimizer': None} | header
    header['sha256'] = _digest(tensors, header)
    path.write_bytes(st_save(tensors, metadata={'gptcourse': json.dumps(header)}))
    return path


def test_a_changed_header_byte_is_detected(tmp_path):
    path = save_checkpoint(tmp_path / 'c.safetensors', _model(), step=1234, lr=0.0006)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], 'little')
    header = raw[8 : 8 + n]
    assert b'1234' in header
    (tmp_path / 'd.safetensors').write_bytes(raw[:8] + header.replace(b'1234', b'9234') + raw[8 + n :])
    with pytest.raises(CheckpointError, match='do not match the sha256'):
        load_checkpoint(tmp_path / 'd.safetensors')
    assert load_checkpoint(path)['step'] == 1234


def test_only_one_format_whose_digest_covers_the_header(tmp_path):
    t = {'model.weight': torch.zeros(3, 4), 'model.bias': torch.zeros(3)}
    _crafted(tmp_path / 'old.safetensors', t, {'format': 'gptcourse-checkpoint-1'})
    with pytest.raises(CheckpointError, match='is not a checkpoint of this course'):
        load_checkpoint(tmp_path / 'old.safetensors')


def test_non_finite_weights_are_never_written(tmp_path):
    m = _model()
    save_step(tmp_path, 10, m, keep=2)
    save_step(tmp_path, 20, m, keep=2)
    with torch.no_grad():
        m.weight[0, 0] = float('nan')
    with pytest.raises(CheckpointError, match='hold NaN or inf'):
        save_step(tmp_path, 30, m, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'step_0000010.safetensors',
        'step_0000020.safetensors',
    ]


@pytest.mark.parametrize('keep', [0, -1])
def test_keep_below_one_is_refused_before_anything_is_deleted(tmp_path, keep):
    save_step(tmp_path, 10, _model())
    with pytest.raises(ValueError, match='keep must be at least 1'):
        save_step(tmp_path, 20, _model(), keep=keep)
    assert [p.name for p in list_checkpoints(tmp_path)] == ['step_0000010.safetensors']


def test_keep_counts_only_checkpoints_that_verify(tmp_path):
    "A damaged newest file, then a resumed run with keep 1: the new checkpoint stays, the damaged one goes."
    for s in (10, 20, 30):
        save_step(tmp_path, s, _model(), keep=None)
    list_checkpoints(tmp_path)[-1].write_bytes(b'damaged')  # step 30
    f, meta = load_latest(tmp_path, log=lambda m: None)
    assert meta['step'] == 20
    save_step(tmp_path, 25, _model(), keep=1)  # the resumed run's first checkpoint
    assert [p.name for p in list_checkpoints(tmp_path)] == ['step_0000025.safetensors']
    assert load_latest(tmp_path)[1]['step'] == 25
    list_checkpoints(tmp_path)[0].write_bytes(b'damaged again')  # a damaged older one never counts either
    save_step(tmp_path, 35, _model(), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ['step_0000035.safetensors']


def test_meta_must_be_json(tmp_path):
    with pytest.raises(TypeError, match='JSON-serialisable'):
        save_checkpoint(tmp_path / 'x.safetensors', _model(), bad={1, 2})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    'header, msg',
    [
        ({'aliases': {'lm_head.weight': 'nope'}}, 'does not describe its tensors'),
        ({'meta': [1, 2]}, 'does not describe its tensors'),
        ({'aliases': 'x'}, 'does not describe its tensors'),
    ],
)
def test_crafted_headers_with_a_valid_digest_are_refused(tmp_path, header, msg):
    path = _crafted(
        tmp_path / 'c.safetensors', {'model.weight': torch.zeros(3, 4), 'model.bias': torch.zeros(3)}, header
    )
    with pytest.raises(CheckpointError, match=msg):
        load_checkpoint(path)


def test_a_crafted_newest_checkpoint_falls_back_to_the_good_one(tmp_path):
    "A newest file that verifies but whose meta the trainer cannot use is skipped like a broken one."
    save_step(tmp_path, 10, _model(), history='ok')
    _crafted(
        tmp_path / 'step_0000020.safetensors',
        {'model.weight': torch.zeros(3, 4), 'model.bias': torch.zeros(3)},
        {'meta': {'step': -5}},
    )

    def check(meta, path):
        if not isinstance(meta.get('step'), int) or meta['step'] < 0:
            raise CheckpointError('no step')

    said = []
    f, meta = load_latest(tmp_path, check=check, log=said.append)
    assert meta['step'] == 10 and said == ['skipping step_0000020.safetensors: no step']


def test_a_pipe_where_a_checkpoint_should_be_is_refused_not_waited_for(tmp_path):
    import os

    os.mkfifo(tmp_path / 'step_0000001.safetensors')
    with pytest.raises(CheckpointError, match='not a regular file'):
        load_checkpoint(tmp_path / 'step_0000001.safetensors')


def test_load_model_refuses_a_config_that_does_not_describe_its_tensors(tmp_path):
    "A small file whose (checksummed) config says 100,000 layers is refused before a layer is built."
    cfg = GPTConfig(block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=16)
    m = GPT(cfg)
    for bad, msg in (
        ({'n_layer': 1000}, 'does not fit this model: .*missing transformer.h.1.'),
        ({'block_size': 10**9}, 'GB of float32 weights; this machine has'),
        ({'block_size': 50_000}, r'transformer.wpe.weight: checkpoint \(16, 16\) vs model \(50000, 16\)'),
        ({'n_head': 0}, 'n_head must be'),
        ({'n_embd': 'x'}, 'n_embd must be'),
        ({'norm': 'os:system'}, "unexpected keyword argument 'norm'"),
    ):
        path = save_checkpoint(tmp_path / 'c.safetensors', m, config=dataclasses.asdict(cfg) | bad)
        with pytest.raises(CheckpointError, match=msg):
            load_model(path)
    save_checkpoint(tmp_path / 'c.safetensors', m, config=[1, 2])
    with pytest.raises(CheckpointError, match='holds no model configuration'):
        load_model(tmp_path / 'c.safetensors')
    for name in (
        'os:system',
        'gptcourse.shards:prepare',
        'gptcourse.cli:main',
    ):  # a file never chooses the code
        save_checkpoint(tmp_path / 'c.safetensors', m, model_class=name, config=dataclasses.asdict(cfg))
        with pytest.raises(
            CheckpointError, match=f'holds a model of class {name}, which is not among the classes'
        ):
            load_model(tmp_path / 'c.safetensors')


def test_run_folder_restores_what_a_killed_overwrite_moved_aside(tmp_path):
    """A run killed (kill -9) after moving the old checkpoints aside: the next run in the folder puts them
    back first."""
    save_step(tmp_path, 10, _model())
    aside = tmp_path / '.replaced-999999'
    aside.mkdir()  # no such process
    (tmp_path / 'step_0000010.safetensors').rename(aside / 'step_0000010.safetensors')
    with run_folder(tmp_path, resume=True) as r:
        assert [p.name for p in list_checkpoints(r.path)] == ['step_0000010.safetensors']
    assert not aside.exists()


def test_a_replacement_killed_before_its_first_checkpoint_leaves_the_replaced_run_loadable(tmp_path):
    """`train --overwrite` killed after moving the finished run aside: sampling the folder finds the finished
    run."""
    save_step(tmp_path, 10, _model())
    aside = tmp_path / '.replaced-999999'  # no such process: the replacement was killed
    aside.mkdir()
    (tmp_path / 'step_0000010.safetensors').rename(aside / 'step_0000010.safetensors')
    f, meta = load_latest(tmp_path)
    assert f.name == 'step_0000010.safetensors' and meta['step'] == 10 and not aside.exists()


GARBAGE_RNG = {  # what a file may hold where a run saved its generators: each was a traceback, or taken
    'Python keys below 0': ('python', 1, [-1] * 625),  # OverflowError from random.setstate
    'NumPy keys of 2**40': ('numpy', 1, [2**40] * 624),  # OverflowError from NumPy
    'NumPy position -5': ('numpy', 2, -5),  # taken: a read before NumPy's key
    'Python cached Gaussian a string': ('python', 2, 'x'),  # taken: random.gauss then fails, much later
    'Python keys all zero': ('python', 1, [0] * 624 + [624]),  # taken: random.random() is 0.0 for ever
    'NumPy keys all zero': ('numpy', 1, [0] * 624),
    'NumPy cached Gaussian infinite': ('numpy', 4, float('inf')),
}


@pytest.mark.parametrize('what', GARBAGE_RNG)
def test_a_garbage_random_state_is_one_error_and_changes_no_generator(what):
    import copy, random
    import numpy as np
    from gptcourse.checkpoint import rng_state, set_rng_state

    gen, i, bad = GARBAGE_RNG[what]
    state = copy.deepcopy(rng_state())
    state[gen][i] = bad
    before = rng_state()
    with pytest.raises(CheckpointError, match='^not a saved random state: '):
        set_rng_state(state)
    assert rng_state() == before  # none was set, not even those before the bad one
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(before)  # a good state still restores all three
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws


def test_a_resumed_run_whose_random_state_is_garbage_is_one_error(tmp_path):
    """A run's newest checkpoint with garbage generator states (sha256 recomputed): resuming it was an
    OverflowError from Python's or NumPy's generator, or went on with a broken one."""
    import copy
    from safetensors import safe_open
    from gptcourse.trainers import train_char

    kw = dict(max_steps=4, batch_size=2, block_size=8, n_layer=1, n_head=1, n_embd=8, eval_iters=1)
    quiet = dict(progress=False, log=lambda *a: None)
    train_char('cpu', tmp_path, stop_after=2, **kw, **quiet)
    f = list_checkpoints(tmp_path)[-1]
    with safe_open(f, 'pt') as h:
        header = json.loads(h.metadata()['gptcourse'])
        tensors = {k: h.get_tensor(k).clone() for k in h.keys()}  # copies: the file is written again below
    good = f.read_bytes()
    for what, (gen, i, bad) in GARBAGE_RNG.items():
        forged = copy.deepcopy(header)
        forged['meta']['rng'][gen][i] = bad
        _crafted(f, tensors, forged)
        with pytest.raises(CheckpointError, match='meta is not a usable run .*not a saved random state: '):
            train_char(None, tmp_path, resume=True, **quiet)  # lesson 19 checks it before it starts
    f.write_bytes(good)
    train_char(None, tmp_path, resume=True, **quiet)  # the checkpoint as it was: it resumes
