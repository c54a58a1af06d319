"""Lesson 20 beyond its notebook: DDP with gradient accumulation (the `no_sync` path) and resume under
torchrun, training from a pretrained folder, HellaSwag inside a run, resume that keeps the schedule, a broken
newest checkpoint, the micro-batch probe, bad settings, a corpus far too small, and a run of one trainer that
the other does not resume. CPU only, tiny sizes."""

import json, os, socket, subprocess, sys
import pytest
import torch

from gptcourse.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, load_latest
from gptcourse.loader import DataLoaderLite
from gptcourse.shards import prepare
from gptcourse.trainers import train_char
from gptcourse.pretrain import train_gpt2

QUIET = dict(progress=False, log=lambda *a: None)
SMALL = dict(batch_size=2, seq_len=32, eval_iters=1, **QUIET)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp('tokens') / 'shakespeare'
    prepare(None, out, progress=False)
    return str(out)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _torchrun(data, out, *extra):
    cmd = [
        sys.executable,
        '-m',
        'torch.distributed.run',
        '--nproc_per_node',
        '2',
        '--master_addr',
        '127.0.0.1',
        '--master_port',
        str(_free_port()),
        '-m',
        'gptcourse.cli',
        'gpt2-train',
        '--data',
        data,
        '--preset',
        'cpu',
        '--batch-size',
        '2',
        '--seq-len',
        '32',
        '--total-batch',
        '256',
        '--max-steps',
        '3',
        '--eval-interval',
        '3',
        '--eval-iters',
        '1',
        '--device',
        'cpu',
        '--out',
        str(out),
        '--no-progress',
        *extra,
    ]
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1')
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return load_checkpoint(list_checkpoints(out)[-1])


def test_ddp_with_accumulation_and_resume(data, tmp_path):
    """2 ranks x 2 micro-steps (no_sync on the first) == 1 process x 4 micro-steps; a stopped and resumed DDP
    run == an uninterrupted one."""
    whole = _torchrun(data, tmp_path / 'whole')
    single = train_gpt2('cpu', None, data=data, max_steps=3, total_batch=256, eval_interval=3, **SMALL)
    assert len(whole['history']['loss']) == 3
    assert max(abs(a - b) for a, b in zip(whole['history']['loss'], single.history.loss)) < 1e-5
    assert abs(whole['history']['val_loss'][-1] - single.history.val_loss[-1]) < 1e-5
    _torchrun(data, tmp_path / 'split', '--stop-after', '2')
    resumed = _torchrun(data, tmp_path / 'split', '--resume')
    assert resumed['step'] == 3 and resumed['history']['loss'] == whole['history']['loss']


def test_init_from_pretrained_folder(data, tmp_path):
    """init=<folder>: training starts from the folder's weights (first loss == transformers' loss on the first
    batch)."""
    transformers = pytest.importorskip('transformers')
    hc = transformers.GPT2Config(
        n_positions=64, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0
    )
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hc).eval()
    hf.save_pretrained(tmp_path / 'tiny_gpt2', safe_serialization=True)
    res = train_gpt2(
        'cpu',
        None,
        data=data,
        init=str(tmp_path / 'tiny_gpt2'),
        max_steps=2,
        total_batch=64,
        eval_interval=0,
        **SMALL,
    )
    x, y = DataLoaderLite(data, 2, 32).next_batch()
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(hf(x).logits.view(-1, hc.vocab_size), y.view(-1)).item()
    assert res.run.vocab_size == 50257 and abs(res.history.loss[0] - ref) < 1e-4, (res.history.loss, ref)


def test_hellaswag_during_training(data, tmp_path):
    "hellaswag=FILE scores the model at every evaluation; a bad file is refused before training."
    ex = {'ctx': 'ROMEO: I', 'endings': [' love thee', ' a b c', ' zz', ' qq'], 'label': 0}
    f = tmp_path / 'hs.jsonl'
    f.write_text(json.dumps(ex) + '\n' + json.dumps(dict(ex, label=1)) + '\n')
    res = train_gpt2(
        'cpu', None, data=data, max_steps=2, total_batch=64, eval_interval=2, hellaswag=str(f), **SMALL
    )
    assert [s for s, _ in res.hellaswag] == [0, 2] and res.hellaswag[-1][1] in (
        0.0,
        0.5,
        1.0,
    )  # at each evaluation
    (tmp_path / 'bad.jsonl').write_text('{"ctx": 1}')
    with pytest.raises(ValueError, match='a HellaSwag example needs'):
        train_gpt2(
            'cpu',
            tmp_path / 'run',
            data=data,
            max_steps=2,
            total_batch=64,
            hellaswag=str(tmp_path / 'bad.jsonl'),
            **SMALL,
        )
    assert not (tmp_path / 'run').exists()  # refused before the run folder was made


def test_resume_keeps_the_schedule_unless_asked(data, tmp_path):
    """A resumed run continues its own schedule (not the preset's); a new one is used only when asked, and
    said plainly."""
    kw = dict(data=data, total_batch=64, eval_interval=0, **SMALL)
    whole = train_gpt2('cpu', None, max_steps=6, **kw)
    train_gpt2('cpu', tmp_path, max_steps=6, stop_after=3, **kw)
    said = []
    res = train_gpt2(None, tmp_path, resume=True, progress=False, log=said.append)
    assert any('at step 3, continuing its schedule' in s for s in said), said
    assert (
        res.run.max_steps == 6
        and res.history.lr == whole.history.lr
        and res.history.loss == whole.history.loss
    )
    said.clear()
    longer = train_gpt2(None, tmp_path, resume=True, max_steps=8, progress=False, log=said.append)
    assert any('at step 6, with the new settings asked for: max_steps 6 -> 8' in s for s in said), said
    assert len(longer.history.loss) == 8
    with pytest.raises(ValueError, match='a resumed run keeps its seq_len'):
        train_gpt2(None, tmp_path, resume=True, seq_len=64, max_steps=9, **QUIET)
    with pytest.raises(ValueError, match="trained with preset 'cpu', not 'lecture'"):
        train_gpt2('lecture', tmp_path, resume=True, **QUIET)


def test_a_diverging_run_keeps_its_good_checkpoints(data, tmp_path):
    "lr 1e30 diverges: the run stops, no checkpoint with NaN weights is written, the good ones stay."
    kw = dict(data=data, total_batch=64, eval_interval=0, checkpoint_interval=1, **SMALL)
    train_gpt2('cpu', tmp_path, max_steps=2, **kw)
    good = {p.name: p.read_bytes() for p in list_checkpoints(tmp_path)}
    assert list(good) == ['step_0000001.safetensors', 'step_0000002.safetensors']
    with pytest.raises((FloatingPointError, CheckpointError)):
        train_gpt2(None, tmp_path, resume=True, max_steps=10, lr=1e30, warmup_steps=0, **QUIET)
    for p in list_checkpoints(tmp_path):
        load_checkpoint(p)  # verifies
        from safetensors.torch import load_file

        assert all(torch.isfinite(t).all() for k, t in load_file(p).items() if k.startswith('model.'))


def test_a_broken_newest_checkpoint_falls_back_to_the_one_before(data, tmp_path):
    "A cut-short newest checkpoint is named and skipped; the run resumes from the previous good one, exactly."
    kw = dict(
        data=data, max_steps=4, eval_interval=2, checkpoint_interval=2, total_batch=64, dropout=0.1, **SMALL
    )
    whole = train_gpt2('cpu', None, **kw)
    train_gpt2('cpu', tmp_path, **kw)
    ck = list_checkpoints(tmp_path)
    assert [p.name for p in ck] == ['step_0000002.safetensors', 'step_0000004.safetensors']
    good = ck[-1].read_bytes()
    ck[-1].write_bytes(good[: len(good) // 2])
    said = []
    used, meta = load_latest(tmp_path, log=said.append)
    assert used == ck[0] and meta['step'] == 2 and len(said) == 1 and 'step_0000004' in said[0]
    again = train_gpt2(None, tmp_path, resume=True, **QUIET)
    assert again.start_step == 2 and again.history.loss == whole.history.loss


def test_micro_batch_backs_off_on_out_of_memory(data, monkeypatch):
    """A card that holds 2 sequences: the micro-batch halves 8 -> 4 -> 2, the total batch stays, the run is
    the same."""
    from gptcourse.gpt2 import GPT

    real = GPT.forward

    def small_card(self, idx, targets=None, kv_cache=None, last_only=False):
        if idx.size(0) > 2:
            raise torch.OutOfMemoryError('CUDA out of memory (simulated)')
        return real(self, idx, targets, kv_cache, last_only)

    monkeypatch.setattr(GPT, 'forward', small_card)
    kw = dict(data=data, max_steps=3, total_batch=256, eval_interval=0, seq_len=32, eval_iters=1, **QUIET)
    auto = train_gpt2('cpu', None, batch_size=8, auto_batch=True, **kw)
    assert auto.run.batch_size == 2 and auto.run.total_batch == 256
    direct = train_gpt2('cpu', None, batch_size=2, **kw)
    assert auto.history.loss == direct.history.loss
    with pytest.raises(torch.OutOfMemoryError):
        train_gpt2('cpu', None, batch_size=8, **kw)  # without the probe


def test_bad_settings_are_refused_before_anything_runs(data, tmp_path):
    for bad, msg in (
        (dict(lr=-1.0), 'lr must be a number >= 0'),
        (dict(total_batch=1000), 'a positive multiple'),
        (dict(dropout=float('nan')), 'dropout must be a number'),
        (dict(max_steps=0), 'max_steps must'),
        (dict(seq_len=128), "longer than the model's block_size 64"),
    ):
        with pytest.raises(ValueError, match=msg):
            train_gpt2('cpu', tmp_path / 'run', data=data, **bad, **QUIET)
    with pytest.raises(ValueError, match="unknown preset 'gpu-huge'"):
        train_gpt2('gpu-huge', None, data=data, **QUIET)
    assert not (tmp_path / 'run').exists()


def test_a_run_of_one_trainer_is_not_resumed_by_the_other(data, tmp_path):
    train_gpt2('cpu', tmp_path / 'gpt2', data=data, max_steps=1, eval_interval=0, total_batch=64, **SMALL)
    with pytest.raises(
        CheckpointError, match='not a run of gptcourse train \\(a run of gptcourse gpt2-train\\)'
    ):
        train_char(None, tmp_path / 'gpt2', resume=True, **QUIET)


def test_a_corpus_far_too_small_for_the_run_is_said_before_the_first_step(tmp_path):
    from gptcourse.shards import write_shards

    write_shards(tmp_path / 'tiny', {'train': torch.arange(300) % 50, 'val': torch.arange(200) % 50})
    lines = []
    train_gpt2(
        'cpu',
        None,
        data=str(tmp_path / 'tiny'),
        stop_after=2,
        eval_interval=0,
        progress=False,
        log=lines.append,
    )
    said = [x for x in lines if 'passes over the 300 training tokens' in x]
    assert (
        len(said) == 1
        and said[0].startswith('this run reads 3,840 tokens: 13 passes')
        and 'gptcourse prepare --src fineweb-edu-10B' in said[0]
        and lines.index(said[0]) < 2
    ), lines
    quiet = []
    train_gpt2(
        'cpu',
        None,
        data=str(tmp_path / 'tiny'),
        stop_after=2,
        eval_interval=0,
        progress=False,
        log=quiet.append,
        total_batch=32,
        batch_size=1,
    )
    assert not any('passes over' in x for x in quiet), quiet


def test_a_new_run_over_a_finished_one_is_refused_before_anything_is_built(data, tmp_path, monkeypatch):
    "A new GPT-2 run pointed at a finished run's folder built its model before it was refused."
    from gptcourse import pretrain

    train_gpt2('cpu', tmp_path / 'run', data=data, max_steps=1, eval_interval=0, total_batch=64, **SMALL)
    monkeypatch.setattr(pretrain, 'GPT', lambda *a, **k: pytest.fail('a model was built'))
    monkeypatch.setattr(pretrain, '_shards', lambda *a, **k: pytest.fail('the shards were read'))
    with pytest.raises(ValueError, match=r'run already holds a run \(step_0000001.safetensors\): resume it'):
        train_gpt2('cpu', tmp_path / 'run', data=data, max_steps=2, eval_interval=0, total_batch=64, **SMALL)
    assert [p.name for p in list_checkpoints(tmp_path / 'run')] == ['step_0000001.safetensors']
