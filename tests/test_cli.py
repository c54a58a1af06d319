"""The `gptcourse` command (lesson 13), run as a user runs it: a short CPU run of `train` writes a run folder,
`--resume` continues it from its step, `sample` prints text of the asked length, each sampling command points
to the other for the other kind of model, and wrong input (a bad prompt, a missing or corrupt checkpoint, an
unknown preset, a count below 1) ends with a clear message and a non-zero exit code instead of a traceback."""
import os, subprocess, sys
import pytest
from gptcourse.cli import build_parser, main
from gptcourse.gpt2 import load_gpt_checkpoint
from gptcourse.train import list_checkpoints, load_latest


def gptcourse(*args, timeout=120):
    "Run `python -m gptcourse.cli ARGS` in a fresh process; returns the CompletedProcess."
    env = dict(os.environ, OMP_NUM_THREADS='1')  # one thread: steady on a busy machine
    return subprocess.run([sys.executable, '-m', 'gptcourse.cli', *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def exit_message(*args):
    "The message that `gptcourse ARGS` (in this process) exits with."
    with pytest.raises(SystemExit) as e: main(list(map(str, args)))
    assert e.value.code not in (0, None)
    return str(e.value.code)


TINY = ['--preset', 'cpu', '--eval-interval', '100', '--eval-iters', '5', '--device', 'cpu', '--max-new-tokens', '0']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A run folder of 200 steps of the `cpu` preset, written by `gptcourse train`."
    path = tmp_path_factory.mktemp('chargpt')/'run'
    r = gptcourse('train', *TINY, '--max-steps', 200, '--out', path)
    assert r.returncode == 0, r.stderr
    assert 'step 200: train loss' in r.stdout and 'val loss' in r.stdout, r.stdout
    return path


def test_train_writes_a_run_folder(run):
    assert [p.name for p in list_checkpoints(run)] == ['step_0000100.safetensors', 'step_0000200.safetensors']
    model, meta = load_gpt_checkpoint(run)
    assert meta['step'] == 200 and meta['kind'] == 'chargpt' and meta['train']['name'] == 'cpu'
    assert model.config.vocab_size == 65 and model.config.n_layer == 4 and model.config.activation == 'relu'
    hist = meta['history']
    assert hist['eval_step'] == [0, 100, 200] and hist['val_loss'][-1] < hist['val_loss'][0] - 0.8  # it learnt


def test_resume_continues_from_its_step(run, tmp_path):
    copy = tmp_path/'resumed'; copy.mkdir()
    for f in list_checkpoints(run): (copy/f.name).write_bytes(f.read_bytes())
    r = gptcourse('train', *TINY, '--max-steps', 300, '--out', copy, '--resume')
    assert r.returncode == 0, r.stderr
    assert 'resuming' in r.stdout and 'at step 200' in r.stdout, r.stdout
    meta = load_latest(copy)[1]
    assert meta['step'] == 300
    assert meta['history']['step'] == list(range(300)) and meta['history']['eval_step'] == [0, 100, 200, 300]
    # starting again over a run needs --overwrite; resuming past the end needs more steps
    assert 'already holds checkpoints' in exit_message('train', *TINY, '--max-steps', 10, '--out', copy)
    assert 'already at step 300' in exit_message('train', *TINY, '--max-steps', 300, '--out', copy, '--resume')


def test_sample_prints_text_of_the_asked_length(run):
    args = ('sample', '--model', run, '--prompt', 'ROMEO:', '--max-new-tokens', 200, '--seed', 1, '--device', 'cpu')
    r = gptcourse(*args)
    assert r.returncode == 0, r.stderr
    text = r.stdout[:-1]  # the command ends its output with a newline
    assert text.startswith('ROMEO:') and len(text) == len('ROMEO:') + 200
    letters = sum(c.isalpha() for c in text)
    assert letters > 0.6 * len(text) and text.count(' ') > 10, text  # words with spaces between, like the training text
    assert gptcourse(*args).stdout == r.stdout  # a seed makes it reproducible


def test_sample_with_the_cache_equals_the_plain_loop(run):
    "The command samples with lesson 10's KV cache; lesson 02's plain generate gives the same characters."
    import torch
    from gptcourse.data import CharTokenizer
    from gptcourse.train import generate
    model, meta = load_gpt_checkpoint(run)
    tok = CharTokenizer.from_dict(meta['tokenizer'])
    plain = tok.decode(generate(model, torch.tensor([tok.encode('ROMEO:')]), 60, seed=5, top_k=10)[0])
    args = build_parser().parse_args(['sample', '--model', str(run), '--prompt', 'ROMEO:', '--max-new-tokens', '60',
                                      '--seed', '5', '--top-k', '10', '--device', 'cpu'])
    assert args.func(args) == plain


def test_bad_prompt(run):
    msg = exit_message('sample', '--model', run, '--prompt', 'Ζεύς', '--device', 'cpu')
    assert msg.startswith('gptcourse sample:') and 'not in the vocabulary' in msg and "'Ζ'" in msg


def test_missing_run(tmp_path):
    r = gptcourse('sample', '--model', tmp_path/'nothing')
    assert r.returncode != 0 and 'Traceback' not in r.stderr
    assert 'gptcourse sample: no checkpoint in' in r.stderr and 'gptcourse train --out' in r.stderr, r.stderr
    assert 'no checkpoint in' in exit_message('train', *TINY, '--out', tmp_path/'nothing', '--resume')


def test_an_out_that_cannot_hold_a_run_is_refused_before_training(tmp_path):
    "--out naming a file (or a folder under one): one line, exit 1, before a single step is trained."
    (tmp_path/'afile').write_text('x')
    for cmd, extra in (('train', TINY), ('gpt2-train', ['--preset', 'cpu', '--max-steps', '2', '--no-progress'])):
        for out in (tmp_path/'afile', tmp_path/'afile'/'run'):
            r = gptcourse(cmd, *extra, '--out', out)
            assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
            assert f'gptcourse {cmd}: ' in r.stderr and str(out) in r.stderr, r.stderr
            assert 'step 0' not in r.stdout + r.stderr and 'loss' not in r.stdout + r.stderr, r.stdout


def test_corrupt_checkpoint(run, tmp_path):
    newest = list_checkpoints(run)[-1]
    raw = bytearray(newest.read_bytes()); raw[-1000] ^= 0xFF
    (tmp_path/'flipped.safetensors').write_bytes(raw)
    (tmp_path/'truncated.safetensors').write_bytes(newest.read_bytes()[:5000])
    for name in ('flipped', 'truncated'):
        msg = exit_message('sample', '--model', tmp_path/f'{name}.safetensors')
        assert msg.startswith('gptcourse sample:') and 'corrupt' in msg, msg


def test_each_sampler_points_to_the_other(run, tmp_path):
    import dataclasses
    from gptcourse.gpt2 import GPT, GPTConfig
    from gptcourse.train import save_step
    cfg = GPTConfig(block_size=16, vocab_size=50304, n_layer=1, n_head=2, n_embd=16)
    save_step(tmp_path/'gpt2run', 5, GPT(cfg), config=dataclasses.asdict(cfg))
    msg = exit_message('gpt2-sample', '--model', run)
    assert 'holds a character-level model' in msg and f'gptcourse sample --model {run}' in msg
    msg = exit_message('sample', '--model', tmp_path/'gpt2run')
    assert 'GPT-2-vocabulary model' in msg and 'gptcourse gpt2-sample --model' in msg


@pytest.mark.parametrize('argv', [['train', '--preset', 'huge'], ['train', '--max-steps', '0'],
                                  ['sample', '--max-new-tokens', '0'], ['gpt2-sample', '--top-k', '0'],
                                  ['gpt2-sample', '--num-samples', '0'], ['gpt2-train', '--batch-size', '0'],
                                  ['gpt2-train', '--warmup-steps', '-5'], ['train', '--keep', '-1'],
                                  ['gpt2-train', '--keep', '0'], ['train', '--device', 'nonsense'],
                                  ['sample', '--device', 'cuda:99'], ['gpt2-sample', '--device', 'tpu'],
                                  ['train', '--eval-iters', '-1'], ['train', '--eval-interval', '0']])
def test_bad_values_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as e: main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err and err.strip().splitlines()[-1].startswith(f'gptcourse {argv[0]}: error: ')
    assert (("invalid choice: 'huge'" in err and 'lecture' in err) or 'must be at least' in err
            or 'is not a device' in err or 'this machine has' in err), err


def test_gpt2_train_resume_needs_a_run_folder():
    assert '--resume needs --out' in exit_message('gpt2-train', '--resume')


def test_commands_and_help():
    import argparse
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {'train', 'sample', 'gpt2-sample', 'prepare', 'gpt2-train', 'presets', 'plot'}
    for name, sub in commands.items():
        r = gptcourse(name, '--help')
        assert r.returncode == 0 and f'usage: gptcourse {name}' in r.stdout
        for a in sub._actions:  # every option that takes a value says what it does and its default
            if a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._StoreTrueAction)):
                assert a.help and 'default' in a.help, (name, a.option_strings, a.help)


def test_version_and_package_metadata():
    import importlib.metadata
    import gptcourse as pkg
    r = gptcourse('--version')
    assert r.returncode == 0 and r.stdout.strip() == f'gptcourse {pkg.__version__}'
    assert importlib.metadata.version('gptcourse') == pkg.__version__
    meta = importlib.metadata.metadata('gptcourse')
    assert meta['Summary'].startswith('Build a GPT') and meta['Author'] == 'gptcourse contributors'
    assert 'Apache' in meta['License'] and any('github.com/gptcourse' in u for u in meta.get_all('Project-URL'))


def test_missing_data_offline_is_one_line(tmp_path, monkeypatch):
    "No data and no internet: one line that names the file, the folder, the URL and GPTCOURSE_DATA; nothing half-made."
    import urllib.error, urllib.request
    def offline(*a, **k): raise urllib.error.URLError('no network')
    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    data = tmp_path/'data'
    monkeypatch.setenv('GPTCOURSE_DATA', str(data))
    msg = exit_message('train', '--preset', 'cpu', '--out', tmp_path/'run', '--device', 'cpu')
    assert msg.startswith('gptcourse train: could not download tinyshakespeare.txt from https://') and '\n' not in msg
    assert str(data/'tinyshakespeare.txt') in msg and 'GPTCOURSE_DATA' in msg, msg
    msg = exit_message('prepare', '--out', tmp_path/'shards', '--no-progress')
    assert msg.startswith('gptcourse prepare: could not download gpt2/encoder.json') and 'GPTCOURSE_DATA' in msg, msg
    msg = exit_message('gpt2-train', '--preset', 'cpu', '--out', tmp_path/'g', '--no-progress')
    assert msg.startswith('gptcourse gpt2-train: could not download'), msg
    assert not (tmp_path/'run').exists() and not (tmp_path/'shards').exists() and not (tmp_path/'g').exists()
    assert sorted(p.name for p in data.rglob('*') if p.is_file()) == []   # no partial download left


def test_presets_and_plot(run, tmp_path):
    r = gptcourse('presets')
    assert r.returncode == 0
    for line in ('train      cpu', 'train      lecture', 'gpt2-train cpu', 'gpt2-train lecture'):
        assert line in r.stdout, r.stdout
    assert '10.8M parameters' in r.stdout and '124.5M parameters' in r.stdout
    r = gptcourse('plot', '--model', run, '--out', tmp_path/'loss.png')
    assert r.returncode == 0, r.stderr
    assert 'step       0: train 4.1' in r.stdout and 'step     200:' in r.stdout
    assert (tmp_path/'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'no checkpoint in' in exit_message('plot', '--model', tmp_path/'none')


@pytest.mark.skipif(__import__('torch').cuda.is_available(), reason='checks the message of a machine without CUDA')
def test_cuda_without_cuda_is_one_line(capsys):
    with pytest.raises(SystemExit) as e: main(['train', '--device', 'cuda'])
    assert e.value.code == 2 and "'cuda': this machine has no cuda device; available: cpu" in capsys.readouterr().err


def test_ctrl_c_says_where_the_last_checkpoint_is(run, tmp_path, monkeypatch, capsys):
    import gptcourse.gpt2_train as gt
    copy = tmp_path/'run'; copy.mkdir()
    for f in list_checkpoints(run): (copy/f.name).write_bytes(f.read_bytes())
    def interrupted(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(gt, 'fit', interrupted)
    with pytest.raises(SystemExit) as e: main(['train', *TINY, '--max-steps', '300', '--out', str(copy), '--resume'])
    err = capsys.readouterr().err
    assert e.value.code == 130 and 'Traceback' not in err
    assert f'interrupted; the last good checkpoint is {copy}/step_0000200.safetensors' in err
    assert f'gptcourse train --out {copy} --resume' in err


def test_a_diverging_gpt2_run_is_one_line(tmp_path, capsys):
    from gptcourse.gpt2_train import prepare
    prepare(None, tmp_path/'tok', progress=False)
    with pytest.raises(SystemExit) as e:
        main(['gpt2-train', '--data', str(tmp_path/'tok'), '--preset', 'cpu', '--out', str(tmp_path/'g'), '--lr',
              '1e30',
              '--warmup-steps', '0', '--max-steps', '20', '--checkpoint-interval', '1', '--eval-interval', '0',
              '--no-progress', '--device', 'cpu'])
    msg = str(e.value.code) if isinstance(e.value.code, str) else capsys.readouterr().err
    assert 'Traceback' not in msg and ('NaN' in msg or 'nan' in msg or 'inf' in msg), msg
