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
           '--master_port', str(_free_port()), '-m', 'gptcourse.cli', 'gpt2-train', '--data', str(data), '--preset', 'cpu',
           '--batch-size', '2', '--seq-len', '32', '--total-batch', '256', '--max-steps', '3', '--eval-interval', '3',
           '--eval-iters', '1', '--device', 'cpu', '--out', str(out), '--no-progress', *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return load_checkpoint(list_checkpoints(out)[-1])


def test_ddp_with_accumulation_and_resume(data, tmp_path):
    "2 ranks x 2 micro-steps (no_sync on the first) == 1 process x 4 micro-steps; a stopped and resumed DDP run == an uninterrupted one."
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
    hc = transformers.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hc).eval()
    hf.save_pretrained(tmp_path / 'tiny_gpt2', safe_serialization=True)
    res = train_gpt2(data, 'cpu', init=str(tmp_path / 'tiny_gpt2'), max_steps=2, total_batch=64, eval_interval=0, **SMALL)
    x, y = DataLoaderLite(data, 2, 32).next_batch()
    with torch.no_grad(): ref = torch.nn.functional.cross_entropy(hf(x).logits.view(-1, hc.vocab_size), y.view(-1)).item()
    assert res.settings['model']['vocab_size'] == 50257 and abs(res.history.loss[0] - ref) < 1e-4, (res.history.loss, ref)


def test_hellaswag_during_training(data, tmp_path):
    "--hellaswag FILE scores the model at every evaluation; a bad file is refused before training."
    ex = {'ctx': 'ROMEO: I', 'endings': [' love thee', ' a b c', ' zz', ' qq'], 'label': 0}
    f = tmp_path / 'hs.jsonl'; f.write_text(json.dumps(ex) + '\n' + json.dumps(dict(ex, label=1)) + '\n')
    res = train_gpt2(data, 'cpu', max_steps=2, total_batch=64, eval_interval=2, hellaswag=str(f), **SMALL)
    assert [s for s, _ in res.hellaswag] == [2] and res.hellaswag[0][1] in (0.0, 0.5, 1.0)
    (tmp_path / 'bad.jsonl').write_text('{"ctx": 1}')
    with pytest.raises(ValueError, match='a HellaSwag example needs'):
        train_gpt2(data, 'cpu', max_steps=2, total_batch=64, eval_interval=2, hellaswag=str(tmp_path / 'bad.jsonl'), **SMALL)
