"""Lesson 09 beyond its notebook: DDP with gradient accumulation (the `no_sync` path) and resume under torchrun,
training from a pretrained folder, and HellaSwag inside a run. CPU only (gloo on 127.0.0.1), tiny sizes."""
import json, os, socket, subprocess, sys
import pytest
import torch

from gptcourse.gpt2_train import DataLoaderLite, prepare, train_gpt2
from gptcourse.train import list_checkpoints, load_checkpoint

SMALL = dict(batch_size=2, seq_len=32, eval_iters=1, progress=False, verbose=False)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp('tokens')
    prepare(None, out, progress=False)
    return out


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _torchrun(data, out, *extra):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(_free_port()), '-m', 'gptcourse.cli', 'gpt2-train', '--data', str(data), '--preset',
           'cpu',
           '--batch-size', '2', '--seq-len', '32', '--total-batch', '256', '--max-steps', '3', '--eval-interval', '3',
           '--eval-iters', '1', '--device', 'cpu', '--out', str(out), '--no-progress', *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return load_checkpoint(list_checkpoints(out)[-1])


def test_ddp_with_accumulation_and_resume(data, tmp_path):
    """2 ranks x 2 micro-steps (no_sync on the first) == 1 process x 4 micro-steps; a stopped and resumed DDP run == an
    uninterrupted one."""
    whole = _torchrun(data, tmp_path / 'whole')
    single = train_gpt2(data, 'cpu', max_steps=3, total_batch=256, eval_interval=3, **SMALL)
    assert len(whole['history']['loss']) == 3
    assert max(abs(a - b) for a, b in zip(whole['history']['loss'], single.history.loss)) < 1e-5
    assert abs(whole['history']['val_loss'][-1] - single.history.val_loss[-1]) < 1e-5
    _torchrun(data, tmp_path / 'split', '--stop-after', '2')
    resumed = _torchrun(data, tmp_path / 'split', '--resume')
    assert resumed['step'] == 3 and resumed['history']['loss'] == whole['history']['loss']


def test_init_from_pretrained_folder(data, tmp_path):
    "--init <folder>: training starts from the folder's weights (first loss == transformers' loss on the first batch)."
    transformers = pytest.importorskip('transformers')
    hc = transformers.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0, embd_pdrop=0,
                                 attn_pdrop=0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hc).eval()
    hf.save_pretrained(tmp_path / 'tiny_gpt2', safe_serialization=True)
    res = train_gpt2(data, 'cpu', init=str(tmp_path / 'tiny_gpt2'), max_steps=2, total_batch=64, eval_interval=0,
                     **SMALL)
    x, y = DataLoaderLite(data, 2, 32).next_batch()
    with torch.no_grad(): ref = torch.nn.functional.cross_entropy(hf(x).logits.view(-1, hc.vocab_size),
                                                                  y.view(-1)).item()
    assert res.settings['model']['vocab_size'] == 50257 and abs(res.history.loss[0] - ref) < 1e-4, (res.history.loss,
                                                                                                    ref)


def test_hellaswag_during_training(data, tmp_path):
    "--hellaswag FILE scores the model at every evaluation; a bad file is refused before training."
    ex = {'ctx': 'ROMEO: I', 'endings': [' love thee', ' a b c', ' zz', ' qq'], 'label': 0}
    f = tmp_path / 'hs.jsonl'; f.write_text(json.dumps(ex) + '\n' + json.dumps(dict(ex, label=1)) + '\n')
    res = train_gpt2(data, 'cpu', max_steps=2, total_batch=64, eval_interval=2, hellaswag=str(f), **SMALL)
    assert [s for s, _ in res.hellaswag] == [2] and res.hellaswag[0][1] in (0.0, 0.5, 1.0)
    (tmp_path / 'bad.jsonl').write_text('{"ctx": 1}')
    with pytest.raises(ValueError, match='a HellaSwag example needs'):
        train_gpt2(data, 'cpu', max_steps=2, total_batch=64, eval_interval=2, hellaswag=str(tmp_path / 'bad.jsonl'),
                   **SMALL)


def test_resume_keeps_the_schedule_unless_asked(data, tmp_path, capsys):
    "--resume continues the run's own schedule (not the preset's); a new one is used only when asked, and said plainly."
    import warnings
    kw = dict(total_batch=64, eval_interval=0, batch_size=2, seq_len=32, eval_iters=1, progress=False)
    whole = train_gpt2(data, 'cpu', max_steps=6, verbose=False, **kw)
    train_gpt2(data, 'cpu', out_dir=tmp_path, max_steps=6, stop_after=3, verbose=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no raw Python warning on the way
        res = train_gpt2(data, None, out_dir=tmp_path, resume=True, **kw)
    out = capsys.readouterr().out
    assert 'at step 3, continuing its schedule' in out, out
    assert res.settings['max_steps'] == 6
    assert res.history.lr == whole.history.lr and res.history.loss == whole.history.loss
    longer = train_gpt2(data, None, out_dir=tmp_path, resume=True, max_steps=8, **kw)
    assert 'at step 6, with the new settings asked for: max_steps 6 -> 8' in capsys.readouterr().out
    assert len(longer.history.loss) == 8


def test_a_diverging_run_keeps_its_good_checkpoints(data, tmp_path):
    "lr 1e30 diverges: the run stops, no checkpoint with NaN weights is written, the good ones stay."
    from gptcourse.train import CheckpointError
    kw = dict(total_batch=64, eval_interval=0, checkpoint_interval=1, **SMALL)
    train_gpt2(data, 'cpu', out_dir=tmp_path, max_steps=2, **kw)
    good = {p.name: p.read_bytes() for p in list_checkpoints(tmp_path)}
    assert list(good) == ['step_0000001.safetensors', 'step_0000002.safetensors']
    with pytest.raises((FloatingPointError, CheckpointError)):
        train_gpt2(data, 'cpu', out_dir=tmp_path, resume=True, max_steps=10, lr=1e30, warmup_steps=0, **kw)
    for p in list_checkpoints(tmp_path):
        meta = load_checkpoint(p)   # verifies; and the weights are finite
        assert p.name in good or meta['step'] <= 10
        from safetensors.torch import load_file
        assert all(torch.isfinite(t).all() for k, t in load_file(p).items() if k.startswith('model.'))


def test_prepare_never_loses_shards(data, tmp_path):
    from gptcourse.gpt2_train import prepare as prep
    out = tmp_path / 'shards'
    (tmp_path / 'empty.txt').write_text('  \n')
    (tmp_path / 'latin1.txt').write_bytes('café'.encode('latin-1'))
    (tmp_path / 'good.txt').write_text('To be, or not to be, that is the question. ' * 50)
    prep(tmp_path / 'good.txt', out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match='empty.txt is empty'): prep(tmp_path / 'empty.txt', out, progress=False,
                                                                     overwrite=True)
    with pytest.raises(ValueError, match='latin1.txt is not UTF-8 text'): prep(tmp_path / 'latin1.txt', out,
                                                                               progress=False, overwrite=True)
    with pytest.raises(ValueError, match='already holds token shards: pass --overwrite'): prep(tmp_path / 'good.txt',
                                                                                               out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # no temp folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ['empty.txt', 'good.txt', 'latin1.txt', 'shards']
    info = prep(tmp_path / 'good.txt', out, progress=False, overwrite=True, val_frac=0.2)
    assert info['val'] > 0 and sorted(p.name for p in out.iterdir()) == sorted(before)


def test_shards_that_are_not_token_ids_are_refused(tmp_path):
    import numpy as np
    (tmp_path / 'f').mkdir(); np.save(tmp_path / 'f' / 'train_000000.npy', np.arange(100, dtype=np.float64))
    with pytest.raises(ValueError, match='float64 array, not token ids'): DataLoaderLite(tmp_path / 'f', 2, 4)
    (tmp_path / 'i').mkdir(); np.save(tmp_path / 'i' / 'train_000000.npy', np.arange(100, dtype=np.uint16) + 50300)
    with pytest.raises(ValueError, match='holds token id 50399, but the model has 50304'):
        DataLoaderLite(tmp_path / 'i', 2, 4, vocab_size=50304)
    assert DataLoaderLite(tmp_path / 'i', 2, 4).next_batch()[0].shape == (2, 4)   # without a vocabulary: no check


def test_hellaswag_is_checked_before_it_is_kept(tmp_path, monkeypatch):
    import io, urllib.error, urllib.request, warnings
    from gptcourse.data import DownloadError
    from gptcourse.gpt2_train import load_hellaswag
    line = json.dumps({'ctx': 'a', 'endings': ['b', 'c', 'd', 'e'], 'label': 1}) + '\n'
    served = {'body': (line * 3).encode()}
    class Response(io.BytesIO):
        def __enter__(self): return self
        def __exit__(self, *a): return False
    monkeypatch.setattr(urllib.request, 'urlopen', lambda *a, **k: Response(served['body']))
    with pytest.raises(ValueError, match='holds 3 HellaSwag val examples, not 10042'): load_hellaswag('val', tmp_path)
    assert list(tmp_path.iterdir()) == []                                   # a short download is not cached
    served['body'] = (line * 10042).encode()
    (tmp_path / 'hellaswag_val.jsonl').write_text(line * 5)                 # a cut cached copy is fetched again
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert len(load_hellaswag('val', tmp_path)) == 10042
    assert any('downloading it again' in str(x.message) for x in w)
    def offline(*a, **k): raise urllib.error.URLError('no network')
    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    with pytest.raises(DownloadError, match='without internet, put a copy at'): load_hellaswag('test', tmp_path)


def test_char_resume_is_exact_at_any_step_with_dropout(tmp_path, monkeypatch):
    "Stopped at step 7 (not an evaluation step) and resumed == never stopped, with dropout on (RNG states restored)."
    import gptcourse.gpt2_train as gt
    monkeypatch.setitem(gt.PRESETS, 'cpu', dict(gt.PRESETS['cpu'], dropout=0.1, n_layer=2, n_embd=32, batch_size=8))
    kw = dict(preset='cpu', eval_interval=5, eval_iters=2, device='cpu', progress=False, log=lambda *a: None)
    straight, h1 = gt.train_chargpt(tmp_path / 'a', max_steps=12, **kw)
    gt.train_chargpt(tmp_path / 'b', max_steps=7, **kw)
    resumed, h2 = gt.train_chargpt(tmp_path / 'b', max_steps=12, resume=True, **kw)
    assert h2.loss == h1.loss
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_bad_arguments_are_refused(data, tmp_path):
    "The error paths that lesson 09 used to show: each one a ValueError or FileNotFoundError that says what is wrong."
    from gptcourse.gpt2_train import grad_accum_steps, read_hellaswag
    docs = tmp_path / 'docs'; docs.mkdir(); (docs / 'a.txt').write_text('First document.')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no such file or folder'): prepare(tmp_path / 'nope', tmp_path / 'x')
    with pytest.raises(ValueError, match='holds no .txt files'): prepare(tmp_path / 'empty', tmp_path / 'x')
    with pytest.raises(ValueError, match=r'val_frac must be in \[0, 1\)'): prepare(docs, tmp_path / 'x', val_frac=1.5)
    toks = torch.arange(1000)
    with pytest.raises(ValueError, match=r'rank must be in \[0, world_size=2\)'): DataLoaderLite(toks, 2, 8, rank=2,
                                                                                                 world_size=2)
    with pytest.raises(ValueError, match='too few for one step'): DataLoaderLite(toks[:10], 2, 8)
    with pytest.raises(FileNotFoundError, match=r'has no train_\*.npy shards'): DataLoaderLite(tmp_path / 'empty', 2, 8)
    with pytest.raises(ValueError, match='does not fit'): DataLoaderLite(data, 1, 2).load_state_dict({'shard': 0,
                                                                                                      'position': 3})
    with pytest.raises(ValueError, match='e.g. 16,384'): grad_accum_steps(1024, 16, 1024)
    with pytest.raises(ValueError, match='learning rate must be positive'): train_gpt2(data, 'cpu', lr=-1.0)
    with pytest.raises(ValueError, match='must be a positive multiple of B·T·world_size'): train_gpt2(data, 'cpu',
                                                                                                      total_batch=1000)
    with pytest.raises(ValueError, match="unknown preset 'gpu-huge'"): train_gpt2(data, 'gpu-huge')
    (tmp_path / 'bad.jsonl').write_text('{"ctx": "x", "endings": ["a"], "label": 0}')
    with pytest.raises(ValueError,
                       match=r'needs "ctx" \(str\), "endings" \(4 str\)'): read_hellaswag(tmp_path / 'bad.jsonl')


def test_char_runs_refuse_what_would_lose_or_repeat_work(tmp_path):
    from gptcourse.gpt2_train import train_chargpt
    kw = dict(preset='cpu', eval_interval=5, eval_iters=1, device='cpu', progress=False, log=lambda *a: None)
    train_chargpt(tmp_path / 'run', max_steps=5, **kw)
    with pytest.raises(ValueError, match='already holds checkpoints'): train_chargpt(tmp_path / 'run', max_steps=10,
                                                                                     **kw)
    with pytest.raises(ValueError, match='already at step 5'): train_chargpt(tmp_path / 'run', max_steps=5, resume=True,
                                                                             **kw)
    from gptcourse.train import CheckpointError
    with pytest.raises(CheckpointError, match='no checkpoint in'): train_chargpt(tmp_path / 'none', max_steps=5,
                                                                                 resume=True, **kw)


def test_a_broken_newest_checkpoint_falls_back_to_the_one_before(data, tmp_path):
    """A cut-short newest checkpoint is refused by name; resuming warns and continues from the previous good one,
    exactly."""
    import warnings
    from gptcourse.gpt2 import GPT, GPTConfig
    from gptcourse.gpt2_train import GPT2_PRESETS
    from gptcourse.train import CheckpointError, load_latest
    kw = dict(max_steps=4, eval_interval=2, eval_iters=1, checkpoint_interval=2, batch_size=2, seq_len=32,
              total_batch=64, progress=False, verbose=False, dropout=0.1)
    whole = train_gpt2(data, 'cpu', **kw)
    train_gpt2(data, 'cpu', out_dir=tmp_path, **kw)
    ck = list_checkpoints(tmp_path)
    assert [p.name for p in ck] == ['step_0000002.safetensors', 'step_0000004.safetensors']
    good = ck[-1].read_bytes(); ck[-1].write_bytes(good[:len(good) // 2])
    model = lambda: GPT(GPTConfig(**GPT2_PRESETS['cpu']['model']))
    with pytest.raises(CheckpointError, match='truncated or corrupt'): load_checkpoint(ck[-1], model())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        used, meta = load_latest(tmp_path, model())
    assert used == ck[0] and meta['step'] == 2 and any('skipping an unusable checkpoint' in str(x.message) for x in w)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        again = train_gpt2(data, 'cpu', out_dir=tmp_path, resume=True, **kw)
    assert again.start_step == 2 and again.history.loss == whole.history.loss


def test_micro_batch_backs_off_on_out_of_memory(data, monkeypatch):
    """A card that holds only 2 sequences: the micro-batch halves 8 -> 4 -> 2, the total batch stays, the run is the
    same."""
    from gptcourse.gpt2 import GPT
    real = GPT.forward
    def small_card(self, idx, targets=None, kv_cache=None):
        if idx.size(0) > 2: raise torch.OutOfMemoryError('CUDA out of memory (simulated)')
        return real(self, idx, targets, kv_cache)
    monkeypatch.setattr(GPT, 'forward', small_card)
    kw = dict(max_steps=3, total_batch=256, eval_interval=0, seq_len=32, eval_iters=1, progress=False, verbose=False)
    auto = train_gpt2(data, 'cpu', batch_size=8, auto_batch=True, **kw)
    assert auto.settings['batch_size'] == 2 and auto.settings['total_batch'] == 256
    direct = train_gpt2(data, 'cpu', batch_size=2, **kw)
    assert auto.history.loss == direct.history.loss
    with pytest.raises(torch.OutOfMemoryError): train_gpt2(data, 'cpu', batch_size=8, **kw)   # without the probe
