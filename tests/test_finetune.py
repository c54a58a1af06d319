"""Fine-tuning (lesson 27) as a user runs it, from the README's commands: `gptcourse train --init RUN` and
`gptcourse gpt2-train --init HF-FOLDER|RUN` start from those weights (checked against the source model itself,
and against transformers), record where they started, resume bit-exactly, and each bad start is one line and a
non-zero exit."""

import hashlib, json, math, pickle
import pytest
import torch
from gptcourse.checkpoint import load_latest, load_model
from gptcourse.cli import main
from gptcourse.data import CharTokenizer, get_batch, tiny_shakespeare, train_val_split
from gptcourse.finetune import english_prose
from gptcourse.loader import DataLoaderLite
from gptcourse.shards import prepare

CHAR = ['--preset', 'cpu', '--device', 'cpu', '--max-new-tokens', '0', '--no-progress', '--eval-iters', '5']
GPT2 = ['--preset', 'cpu', '--device', 'cpu', '--no-progress', '--batch-size', '2', '--seq-len', '32']
GPT2 += ['--total-batch', '64', '--eval-iters', '1']


def ok(*args):
    assert main(list(map(str, args))) == 0, args


def fails(capsys, *args) -> str:
    "The one line `gptcourse ARGS` ends with: exit status 1, no traceback."
    capsys.readouterr()
    got = main(list(map(str, args)))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert got == 1 and 'Traceback' not in err and len(lines) == 1, (got, err)
    assert lines[0].startswith(f'gptcourse {args[0]}: '), err
    return lines[0]


def learned(meta) -> dict:
    "A checkpoint's history without the step times: what a resumed run must repeat exactly."
    return {k: v for k, v in meta['history'].items() if k != 'dt'}


def sha256(path) -> str:
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


@pytest.fixture(scope='module')
def prose(tmp_path_factory):
    "A character run of 100 steps on the prose corpus (lesson 27's), and the corpus."
    folder = tmp_path_factory.mktemp('prose')
    text = english_prose(folder / 'prose.txt')
    ok('train', *CHAR, '--text', text, '--max-steps', 100, '--eval-interval', 100, '--out', folder / 'run')
    return folder / 'run', text


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp('tokens') / 'shakespeare'
    prepare(None, out, progress=False)
    return out


def test_train_init_starts_from_the_run(prose, tmp_path):
    "Its step-0 loss is the source model's own loss on the new text's first validation batches."
    src, _ = prose
    out = tmp_path / 'tuned'
    ok('train', *CHAR, '--init', src, '--max-steps', 20, '--eval-interval', 10, '--out', out)
    f, meta = load_latest(out)
    source, source_meta = load_latest(src)
    assert meta['started_from'] == {'source': str(source.resolve()), 'sha256': sha256(source)}
    assert meta['run']['init'] == str(src) and meta['tokenizer'] == source_meta['tokenizer']
    model, _ = load_model(src)
    tok = CharTokenizer.from_dict(source_meta['tokenizer'])
    train, val = train_val_split(torch.tensor(tok.encode(tiny_shakespeare())))
    g = torch.Generator().manual_seed(1337)  # the run's evaluation batches (lesson 19's RandomBatches):
    [get_batch(train, 16, 32, 'cpu', g) for _ in range(5)]  # 5 of the training split, then 5 of val
    with torch.no_grad():
        losses = [model(*get_batch(val, 16, 32, 'cpu', g))[1].item() for _ in range(5)]
    assert abs(meta['history']['val_loss'][0] - sum(losses) / 5) < 1e-5, (meta['history']['val_loss'], losses)
    assert meta['history']['val_loss'][0] < math.log(65) - 0.5  # it knows something of English already


def test_a_stopped_finetuning_run_resumes_bit_exactly(prose, tmp_path):
    src, _ = prose
    whole, halves = tmp_path / 'whole', tmp_path / 'halves'
    ok('train', *CHAR, '--init', src, '--max-steps', 30, '--eval-interval', 10, '--out', whole)
    ok(
        'train',
        *CHAR,
        '--init',
        src,
        '--max-steps',
        30,
        '--eval-interval',
        10,
        '--out',
        halves,
        '--stop-after',
        10,
    )
    ok('train', '--resume', '--out', halves, '--max-new-tokens', 0, '--no-progress')
    a, b = load_latest(whole)[1], load_latest(halves)[1]
    assert learned(a) == learned(b) and a['step'] == b['step'] == 30
    assert b['started_from'] == a['started_from'] and b['run']['init'] == str(src)
    ma, mb = load_model(whole)[0], load_model(halves)[0]
    assert all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(), mb.state_dict().values()))


def _hf_folder(path, **sizes):
    transformers = pytest.importorskip('transformers')
    hc = transformers.GPT2Config(
        n_positions=64, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, **sizes
    )
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hc).eval()
    hf.save_pretrained(path, safe_serialization=True)
    return hf


def test_gpt2_train_init_hf_folder(data, tmp_path):
    "From a folder saved by transformers: the first loss is transformers' own on the first batch."
    hf = _hf_folder(tmp_path / 'hf')
    out = tmp_path / 'tuned'
    ok(
        'gpt2-train',
        *GPT2,
        '--init',
        tmp_path / 'hf',
        '--data',
        data,
        '--max-steps',
        2,
        '--eval-interval',
        0,
        '--out',
        out,
        '--decay-lr',
        '--warmup-steps',
        0,
        '--lr',
        1e-9,
    )
    meta = load_latest(out)[1]
    weights = tmp_path / 'hf' / 'model.safetensors'
    assert meta['started_from'] == {'source': str(weights.resolve()), 'sha256': sha256(weights)}
    x, y = DataLoaderLite(data, 2, 32).next_batch()
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(hf(x).logits.view(-1, 50257), y.view(-1)).item()
    assert abs(meta['history']['loss'][0] - ref) < 1e-4, (meta['history']['loss'], ref)


def test_gpt2_train_init_run_folder_and_resume(data, tmp_path):
    src, whole, halves = tmp_path / 'src', tmp_path / 'whole', tmp_path / 'halves'
    ok('gpt2-train', *GPT2, '--data', data, '--max-steps', 3, '--eval-interval', 3, '--out', src)
    tune = [
        '--init',
        src,
        '--data',
        data,
        '--max-steps',
        4,
        '--eval-interval',
        2,
        '--no-decay-lr',
        '--warmup-steps',
        0,
    ]
    ok('gpt2-train', *GPT2, *tune, '--out', whole)
    ok('gpt2-train', *GPT2, *tune, '--out', halves, '--stop-after', 2)
    ok('gpt2-train', '--resume', '--out', halves, '--no-progress')
    a, b, s = load_latest(whole)[1], load_latest(halves)[1], load_latest(src)[1]
    assert learned(a) == learned(b) and b['run']['init'] == str(src) and b['run']['decay_lr'] is False
    assert a['history']['val_loss'][0] == pytest.approx(s['history']['val_loss'][-1], abs=1e-5)  # its weights
    assert set(a['history']['lr']) == {a['run']['lr']} == {0.01}  # constant: no warm-up, no decay


def test_bad_starts_are_one_line(prose, data, tmp_path, capsys):
    src, _ = prose
    out = tmp_path / 'out'
    assert 'no such run folder' in fails(capsys, 'train', *CHAR, '--init', tmp_path / 'nowhere', '--out', out)
    (tmp_path / 'greek.txt').write_text('Ωμέγα ☃ ' * 2000, encoding='utf-8')
    msg = fails(capsys, 'train', *CHAR, '--init', src, '--text', tmp_path / 'greek.txt', '--out', out)
    assert "has no row for: 'Ω'" in msg, msg
    msg = fails(capsys, 'gpt2-train', *GPT2, '--init', 'gpt3', '--data', data, '--out', out)
    assert "init 'gpt3' is not a GPT-2 name (gpt2, gpt2-medium" in msg, msg
    msg = fails(capsys, 'gpt2-train', *GPT2, '--init', src, '--data', data, '--out', out)  # a character run
    assert 'it is not a run of gptcourse gpt2-train (a run of gptcourse train)' in msg, msg
    _hf_folder(tmp_path / 'short')  # a context of 64
    msg = fails(
        capsys,
        'gpt2-train',
        *GPT2,
        '--init',
        tmp_path / 'short',
        '--data',
        data,
        '--seq-len',
        128,
        '--out',
        out,
    )
    assert "seq_len 128 is longer than the model's block_size 64" in msg, msg
    _hf_folder(tmp_path / 'small_vocab', vocab_size=1000)
    msg = fails(capsys, 'gpt2-train', *GPT2, '--init', tmp_path / 'small_vocab', '--data', data, '--out', out)
    assert 'holds token id 50256, but the model has 1000' in msg, msg
    assert not out.exists()  # nothing was written by any of them


class Planted:
    "Unpickling this runs code: it writes a file. A loader that unpickles a Hugging Face folder's .bin fails."

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), 'w'))


def test_a_pickle_only_folder_is_refused_unread(data, tmp_path, capsys):
    folder, marker = tmp_path / 'pickled', tmp_path / 'unpickled'
    folder.mkdir()
    (folder / 'config.json').write_text(json.dumps({'n_layer': 2, 'n_head': 2, 'n_embd': 32}))
    (folder / 'pytorch_model.bin').write_bytes(pickle.dumps(Planted(marker)))
    msg = fails(capsys, 'gpt2-train', *GPT2, '--init', folder, '--data', data, '--out', tmp_path / 'o')
    assert 'has no model.safetensors' in msg and not marker.exists(), msg
    pickle.loads((folder / 'pytorch_model.bin').read_bytes())  # the planted file does what it says
    assert marker.exists()


def test_a_finetuning_run_over_a_finished_one_is_refused_before_its_init_is_read(prose, monkeypatch):
    """finetune_char (the library, not the CLI, which checked it already) read its init's weights and built
    its model before `_train` refused a folder holding a finished run."""
    from gptcourse import finetune

    src, _ = prose
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    monkeypatch.setattr(finetune, '_char_finetune_job', lambda *a, **k: pytest.fail('the init was read'))
    with pytest.raises(ValueError, match=r'already holds a run \(step_0000100.safetensors\): resume it'):
        finetune.finetune_char('cpu', src, init=str(src), progress=False, log=lambda *a: None)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
