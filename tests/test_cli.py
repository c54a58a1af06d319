"""The `gptcourse` command (lesson 28), run as a user runs it: a short CPU run of `train` writes a run folder,
`--resume` continues it from its step, `sample` prints text of the asked length, each sampling command points
to the other for the other kind of model, and wrong input (a bad prompt, a missing or corrupt checkpoint, an
unknown preset, a count below 1, a value out of range) ends with one line and a non-zero exit code, never a
traceback."""

import os, subprocess, sys
import pytest
from gptcourse.checkpoint import list_checkpoints, load_latest, load_model
from gptcourse.bpe import GPT2_PATTERN, BasicTokenizer
from gptcourse.cli import build_parser, main


def gptcourse(*args, timeout=180, env=None):
    "Run `python -m gptcourse.cli ARGS` in a fresh process; returns the CompletedProcess."
    env = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))  # one thread: steady on a busy machine
    return subprocess.run(
        [sys.executable, '-m', 'gptcourse.cli', *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def fails(capsys, *args, code=1) -> str:
    "The one line that `gptcourse ARGS` (in this process) ends with, its exit status checked."
    try:
        got = main(list(map(str, args)))
    except SystemExit as e:
        got = e.code if isinstance(e.code, int) else 1
    err = capsys.readouterr().err
    assert got == code and 'Traceback' not in err, (got, err)
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f'gptcourse {args[0]}') and len(lines) <= 2, err  # usage + error for exit 2
    return lines[-1]


TINY = [
    '--preset',
    'cpu',
    '--eval-interval',
    '100',
    '--eval-iters',
    '5',
    '--device',
    'cpu',
    '--max-new-tokens',
    '0',
    '--no-progress',
]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A run folder of 200 steps of the `cpu` preset, written by `gptcourse train`."
    path = tmp_path_factory.mktemp('char') / 'run'
    r = gptcourse('train', *TINY, '--max-steps', 200, '--out', path)
    assert r.returncode == 0, r.stderr
    assert 'step 200: train loss' in r.stdout + r.stderr and 'val loss' in r.stdout + r.stderr, r.stdout
    return path


def test_train_writes_a_run_folder(run):
    assert [p.name for p in list_checkpoints(run)] == ['step_0000100.safetensors', 'step_0000200.safetensors']
    model, meta = load_model(run)
    assert meta['step'] == 200 and meta['kind'] == 'char' and meta['run']['name'] == 'cpu'
    assert model.config.vocab_size == 65 and model.config.n_layer == 4 and model.config.activation == 'relu'
    hist = meta['history']
    assert (
        hist['eval_step'] == [0, 100, 200] and hist['val_loss'][-1] < hist['val_loss'][0] - 0.8
    )  # it learnt


def test_resume_continues_from_its_step(run, tmp_path, capsys):
    copy = tmp_path / 'resumed'
    copy.mkdir()
    for f in list_checkpoints(run):
        (copy / f.name).write_bytes(f.read_bytes())
    r = gptcourse(
        'train', '--max-steps', 300, '--out', copy, '--resume', '--max-new-tokens', 0, '--no-progress'
    )
    assert r.returncode == 0, r.stderr
    assert 'resuming' in r.stdout + r.stderr and 'at step 200' in r.stdout + r.stderr, r.stdout
    meta = load_latest(copy)[1]
    assert meta['step'] == 300 and meta['run']['max_steps'] == 300 and meta['run']['eval_interval'] == 100
    assert meta['history']['step'] == list(range(300)) and meta['history']['eval_step'] == [0, 100, 200, 300]
    # starting again over a run needs --overwrite; resuming past the end needs more steps
    assert 'already holds a run' in fails(capsys, 'train', *TINY, '--max-steps', 10, '--out', copy)
    assert 'nothing to do: the run is at step 300' in fails(
        capsys, 'train', '--out', copy, '--resume', '--no-progress'
    )
    assert 'keeps its n_layer' in fails(
        capsys, 'train', '--out', copy, '--resume', '--n-layer', 2, '--max-steps', 400
    )


def test_sample_prints_text_of_the_asked_length(run):
    args = (
        'sample',
        '--model',
        run,
        '--prompt',
        'ROMEO:',
        '--max-new-tokens',
        200,
        '--seed',
        1,
        '--device',
        'cpu',
    )
    r = gptcourse(*args)
    assert r.returncode == 0, r.stderr
    text = r.stdout[:-1]  # the command ends its output with a newline
    assert text.startswith('ROMEO:') and len(text) == len('ROMEO:') + 200
    letters = sum(c.isalpha() for c in text)
    assert letters > 0.6 * len(text) and text.count(' ') > 10, (
        text
    )  # words with spaces between, like the training text
    assert gptcourse(*args).stdout == r.stdout  # a seed makes it reproducible


def test_sample_with_the_cache_equals_the_plain_loop(run):
    """The command samples with lesson 21's KV cache (and 22's kernel) what a cache-free loop draws from the
    same seed."""
    import torch
    from gptcourse.data import CharTokenizer
    from gptcourse.kv_cache import sample_next

    model, meta = load_model(run)
    tok = CharTokenizer.from_dict(meta['tokenizer'])
    idx, g = torch.tensor([tok.encode('ROMEO:')]), torch.Generator().manual_seed(5)
    with torch.no_grad():
        for _ in range(60):  # lesson 02's loop, drawing with top-k and top-p: no cache, no kernel
            logits = model(idx[:, -model.block_size :])[0][:, -1]
            idx = torch.cat((idx, sample_next(logits, 1.0, 10, 0.9, g)), dim=1)
    plain = tok.decode(idx[0])
    args = build_parser().parse_args(
        [
            'sample',
            '--model',
            str(run),
            '--prompt',
            'ROMEO:',
            '--max-new-tokens',
            '60',
            '--seed',
            '5',
            '--top-k',
            '10',
            '--top-p',
            '0.9',
            '--device',
            'cpu',
        ]
    )
    assert args.func(args) == plain


def test_sample_int8_decodes_what_the_rounded_model_decodes(run, capsys):
    """--int8: greedily, the text of the model whose weights and inputs `x` are rounded to int8 and back
    (lesson 23), drawn by lesson 02's plain loop: no cache, and a whole context a step (F.linear, not the
    kernel)."""
    import torch
    from gptcourse.data import CharTokenizer
    from gptcourse.quantize import dequantize, quantize

    model, meta = load_model(run)

    def rounded_x(layer, args):  # x rounded as quantize rounds it, before the weights' rounded product
        return (dequantize(*quantize(args[0].reshape(-1, layer.in_features))).view(args[0].shape),)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(dequantize(*quantize(m.weight)))
                m.register_forward_pre_hook(rounded_x)
        tok = CharTokenizer.from_dict(meta['tokenizer'])
        idx = torch.tensor([tok.encode('ROMEO:')])
        for _ in range(60):
            logits = model(idx[:, -model.block_size :])[0][:, -1]
            idx = torch.cat((idx, logits.argmax(-1, keepdim=True)), dim=1)
    cmd = [
        'sample',
        '--model',
        str(run),
        '--prompt',
        'ROMEO:',
        '--max-new-tokens',
        '60',
        '--temperature',
        '0',
    ]
    args = build_parser().parse_args([*cmd, '--int8', '--device', 'cpu'])
    assert args.func(args) == tok.decode(idx[0])
    from gptcourse.cli import _load
    from gptcourse.quantize import Int8DotLinear, Int8Linear

    model8 = _load(args, char=True)[0]
    layers = {type(m) for m in model8.modules() if isinstance(m, (torch.nn.Linear, Int8Linear))}
    assert layers == {Int8DotLinear}  # x rounded too: lesson 23's integer kernel


def test_bad_prompt(run, capsys):
    msg = fails(capsys, 'sample', '--model', run, '--prompt', 'Ζεύς', '--device', 'cpu')
    assert 'not in the vocabulary' in msg and "'Ζ'" in msg


def test_missing_run(tmp_path, capsys):
    r = gptcourse('sample', '--model', tmp_path / 'nothing')
    assert r.returncode == 1 and 'Traceback' not in r.stderr and r.stderr.count('\n') == 1, r.stderr
    assert 'gptcourse sample: ' in r.stderr and 'nothing' in r.stderr, r.stderr
    resumed = fails(capsys, 'train', *TINY, '--out', tmp_path / 'nothing', '--resume')
    assert 'no checkpoint at' in resumed and 'no such file or folder' in resumed, resumed


def test_an_out_that_cannot_hold_a_run_is_refused_before_training(tmp_path):
    "--out naming a file (or a folder under one): one line, exit 1, before a single step is trained."
    (tmp_path / 'afile').write_text('x')
    for cmd, extra in (
        ('train', TINY),
        ('gpt2-train', ['--preset', 'cpu', '--max-steps', '2', '--no-progress']),
    ):
        for out in (tmp_path / 'afile', tmp_path / 'afile' / 'run'):
            r = gptcourse(cmd, *extra, '--out', out)
            assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
            assert f'gptcourse {cmd}: ' in r.stderr and str(out) in r.stderr, r.stderr
            assert 'step 0' not in r.stdout + r.stderr and 'loss' not in r.stdout + r.stderr, r.stdout


def test_corrupt_checkpoint(run, tmp_path, capsys):
    newest = list_checkpoints(run)[-1]
    raw = bytearray(newest.read_bytes())
    raw[-1000] ^= 0xFF
    (tmp_path / 'flipped.safetensors').write_bytes(raw)
    (tmp_path / 'truncated.safetensors').write_bytes(newest.read_bytes()[:5000])
    for name in ('flipped', 'truncated'):
        assert 'corrupt' in fails(capsys, 'sample', '--model', tmp_path / f'{name}.safetensors')


def test_each_sampler_points_to_the_other(run, tmp_path, capsys):
    import dataclasses
    from gptcourse.checkpoint import save_step
    from gptcourse.gpt2 import GPT, GPTConfig

    cfg = GPTConfig(block_size=16, vocab_size=50304, n_layer=1, n_head=2, n_embd=16)
    save_step(
        tmp_path / 'gpt2run', 5, GPT(cfg), config=dataclasses.asdict(cfg), kind='gpt2'
    )  # a GPT, as the meta says
    msg = fails(capsys, 'gpt2-sample', '--model', run)
    assert 'holds a character model' in msg and f'gptcourse sample --model {run}' in msg
    msg = fails(capsys, 'sample', '--model', tmp_path / 'gpt2run')
    assert 'GPT-2-vocabulary model' in msg and 'gptcourse gpt2-sample --model' in msg


@pytest.mark.parametrize(
    'argv',
    [
        ['train', '--preset', 'huge'],
        ['train', '--max-steps', '0'],
        ['sample', '--max-new-tokens', '0'],
        ['gpt2-sample', '--top-k', '0'],
        ['gpt2-sample', '--num-samples', '0'],
        ['gpt2-sample', '--num-samples', '100000'],
        ['gpt2-train', '--batch-size', '0'],
        ['gpt2-train', '--warmup-steps', '-5'],
        ['train', '--keep', '-1'],
        ['gpt2-train', '--keep', '0'],
        ['train', '--device', 'nonsense'],
        ['sample', '--device', 'cuda:99'],
        ['gpt2-sample', '--device', 'tpu'],
        ['train', '--eval-iters', '-1'],
        ['gpt2-sample', '--temperature', '-1'],
        ['sample', '--temperature', 'nan'],
        ['gpt2-train', '--dropout', 'nan'],
        ['gpt2-train', '--dropout', '1'],
        ['train', '--lr', '0'],
        ['train', '--seed', str(2**70)],
        ['train', '--max-new-tokens', '-3'],
        ['sample', '--top-p', '1.5'],
        ['gpt2-train', '--dtype', 'fp8'],
        ['--threads', '0', 'presets'],
    ],
)
def test_bad_values_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert 'Traceback' not in err and last.startswith('gptcourse') and ': error: ' in last, err
    says = ('invalid choice', 'must be a', 'is not a device', 'this machine has', 'must be 0 (greedy)')
    assert any(s in last for s in says), err


TEMPERATURE = 'temperature must be 0 (greedy) or a number from 1e-4 up, got '  # lesson 02's check_temperature


@pytest.mark.parametrize(
    'argv, says',
    [
        (['train', '--max-steps', '0'], 'argument --max-steps: must be a whole number >= 1, got 0'),
        (['gpt2-sample', '--num-samples', '100'], 'must be a whole number >= 1 and <= 64, got 100'),
        (['train', '--seed', 'x'], "argument --seed: 'x' is not a whole number"),
        (['prepare', '--val-frac', '1'], 'argument --val-frac: must be a number >= 0 and < 1, got 1'),
        (['sample', '--temperature', '-1'], 'argument --temperature: ' + TEMPERATURE + '-1.0'),
        (['sample', '--temperature', 'nan'], TEMPERATURE + 'nan'),
        (['sample', '--temperature', 'inf'], TEMPERATURE + 'inf'),
        (['train', '--dropout', 'inf'], 'must be a number >= 0 and < 1, got inf'),
        (['train', '--lr', '0'], 'argument --lr: must be a number > 0, got 0'),
        (['sample', '--top-p', '0'], 'argument --top-p: must be a number > 0 and <= 1, got 0'),
        (['gpt2-train', '--lr', 'fast'], "argument --lr: 'fast' is not a number"),
        (
            ['bpe-train', '--text', 'a', '--out', 'b', '--vocab-size', '255'],
            'must be a whole number >= 256, got 255',
        ),
    ],
)
def test_a_bad_value_says_what_is_allowed(argv, says, capsys):
    "The parser's refusal names the flag, the range it allows and the value given (exit 2, before any work)."
    with pytest.raises(SystemExit) as e:
        main(argv)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and last.startswith(f'gptcourse {argv[0]}: error: '), last
    assert last.endswith(says), last


def test_a_stop_without_a_checkpoint_says_so(tmp_path):
    "A training command that stops before its first checkpoint says that none was written (exit status 1)."
    from gptcourse.cli import Stopped

    why = 'the training loss is nan at step 12: lower the learning rate'
    for out in (None, tmp_path, tmp_path / 'none'):
        stop = Stopped('train', out, why)
        assert str(stop) == f'{why}; no checkpoint was written' and stop.code == 1
    assert Stopped('gpt2-train', None, 'interrupted', 130).code == 130


def test_commands_and_help():
    """Every option that takes a value says what it does and its default; the two trainers share their
    settings' names."""
    import argparse

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {
        'train',
        'sample',
        'gpt2-sample',
        'prepare',
        'bpe-train',
        'gpt2-train',
        'presets',
        'plot',
    }
    for name, sub in commands.items():
        r = gptcourse(name, '--help')
        assert r.returncode == 0 and f'usage: gptcourse {name}' in r.stdout
        assert 'None' not in r.stdout, r.stdout  # a preset's unset value reads "auto", or is not shown
        for a in sub._actions:
            if a.required:  # given every time (bpe-train's --text, --vocab-size, --out): no default to say
                assert a.help, (name, a.option_strings)
            elif a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._StoreTrueAction)):
                says = ('default', 'cpu: ', 'auto')  # its default, the presets' values, its automatic choice
                assert a.help and any(s in a.help for s in says), (name, a.option_strings, a.help)
    train, gpt2 = ({a.dest: a.help for a in commands[c]._actions} for c in ('train', 'gpt2-train'))
    shared = set(train) & set(gpt2) - {'help'}
    assert {
        'lr',
        'max_steps',
        'batch_size',
        'eval_interval',
        'eval_iters',
        'seed',
        'dtype',
        'compile',
        'out',
        'resume',
        'overwrite',
        'keep',
        'device',
        'preset',
        'stop_after',
        'no_progress',
    } <= shared
    for k in shared:
        assert train[k].split(' (')[0] == gpt2[k].split(' (')[0], k  # the same words


def test_version_help_and_presets_need_no_data_folder(tmp_path):
    """--version, --help and presets work, and make nothing, even with GPTCOURSE_DATA naming a place that
    cannot exist."""
    import importlib.metadata
    import gptcourse as pkg

    env = {'GPTCOURSE_DATA': str(tmp_path / 'file' / 'data')}
    (tmp_path / 'file').write_text('x')
    r = gptcourse('--version', env=env)
    assert r.returncode == 0 and r.stdout.strip() == f'gptcourse {pkg.__version__}'
    for args in (['--help'], ['prepare', '--help'], ['presets']):
        assert gptcourse(*args, env=env).returncode == 0
    assert importlib.metadata.version('gptcourse') == pkg.__version__
    meta = importlib.metadata.metadata('gptcourse')
    assert meta['Summary'].startswith('Build a GPT') and meta['Author'] == 'gptcourse contributors'


def test_missing_data_offline_is_one_line(tmp_path, capsys, monkeypatch):
    "No data and no internet: one line that names the file, the folder and GPTCOURSE_DATA; nothing half-made."
    data = tmp_path / 'data'
    monkeypatch.setenv('GPTCOURSE_DATA', str(data))
    import gptcourse.data as d

    monkeypatch.setattr(d, 'TINY_SHAKESPEARE_URL', 'http://127.0.0.1:9/tinyshakespeare.txt')
    monkeypatch.setattr(d, 'GPT2_URL', 'http://127.0.0.1:9/')
    msg = fails(capsys, 'train', '--preset', 'cpu', '--out', tmp_path / 'run', '--device', 'cpu')
    assert 'could not download tinyshakespeare.txt' in msg and str(data / 'tinyshakespeare.txt') in msg, msg
    assert 'GPTCOURSE_DATA' in msg
    msg = fails(capsys, 'prepare', '--out', tmp_path / 'shards', '--no-progress')
    assert 'could not download gpt2/encoder.json' in msg and 'GPTCOURSE_DATA' in msg, msg
    msg = fails(capsys, 'gpt2-train', '--preset', 'cpu', '--out', tmp_path / 'g', '--no-progress')
    assert 'could not download' in msg, msg
    assert (
        not (tmp_path / 'run').exists()
        and not (tmp_path / 'shards').exists()
        and not (tmp_path / 'g').exists()
    )
    assert sorted(p.name for p in data.rglob('*') if p.is_file()) == []  # no partial download left


def test_presets_and_plot(run, tmp_path, capsys):
    r = gptcourse('presets')
    assert r.returncode == 0
    for line in ('train      cpu', 'train      lecture', 'gpt2-train cpu', 'gpt2-train lecture'):
        assert line in r.stdout, r.stdout
    r = gptcourse('plot', '--model', run, '--out', tmp_path / 'loss.png')
    assert r.returncode == 0, r.stderr
    assert 'step       0: train 4.1' in r.stdout and 'step     200:' in r.stdout
    assert (tmp_path / 'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'no such file or folder' in fails(capsys, 'plot', '--model', tmp_path / 'none')
    assert 'write a .png' in fails(capsys, 'plot', '--model', run, '--out', tmp_path / 'loss.jpeg2')
    assert 'No such file' in fails(
        capsys, 'plot', '--model', run, '--out', tmp_path / 'no' / 'such' / 'loss.png'
    )


@pytest.mark.skipif(
    __import__('torch').cuda.is_available(), reason='checks the message of a machine without CUDA'
)
def test_cuda_without_cuda_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(['train', '--device', 'cuda'])
    assert (
        e.value.code == 2 and "'cuda': this machine has no cuda device; it has cpu" in capsys.readouterr().err
    )


def test_ctrl_c_says_where_the_last_checkpoint_is(run, tmp_path, monkeypatch, capsys):
    import gptcourse.trainers as tr

    copy = tmp_path / 'run'
    copy.mkdir()
    for f in list_checkpoints(run):
        (copy / f.name).write_bytes(f.read_bytes())

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tr, 'train_loop', interrupted)
    # with the progress bar on: the message must start a line of its own, not trail the bar's
    code = main(['train', '--max-steps', '300', '--out', str(copy), '--resume'])
    err = capsys.readouterr().err
    msg = err.strip().splitlines()[-1]
    assert code == 130 and 'Traceback' not in err, (code, err)
    assert msg.startswith(
        f'gptcourse train: interrupted; the last good checkpoint is {copy}/step_0000200.safetensors'
    ), err
    assert f'gptcourse train --out {copy} --resume' in msg


def test_a_closed_pipe_ends_quietly(run):
    "`gptcourse sample ... | head -c 10`: the reader goes away; the command ends without a traceback."
    cmd = (
        f'{sys.executable} -m gptcourse.cli sample --model {run} --max-new-tokens 2000 --device cpu '
        f'| head -c 10 > /dev/null; echo "${{PIPESTATUS[0]}}"'
    )
    r = subprocess.run(['bash', '-c', cmd], capture_output=True, text=True, timeout=120)
    assert 'Traceback' not in r.stderr and 'BrokenPipe' not in r.stderr, r.stderr


def test_a_diverging_gpt2_run_is_one_line(tmp_path, capsys):
    from gptcourse.shards import prepare

    prepare(None, tmp_path / 'tok', progress=False)
    msg = fails(
        capsys,
        'gpt2-train',
        '--data',
        str(tmp_path / 'tok'),
        '--preset',
        'cpu',
        '--out',
        str(tmp_path / 'g'),
        '--lr',
        '1e30',
        '--warmup-steps',
        '0',
        '--max-steps',
        '20',
        '--checkpoint-interval',
        '1',
        '--eval-interval',
        '0',
        '--no-progress',
        '--device',
        'cpu',
    )
    assert 'NaN' in msg or 'nan' in msg or 'inf' in msg, msg


@pytest.mark.parametrize(
    'env, says',
    [
        ({'RANK': '3', 'WORLD_SIZE': '2'}, 'RANK=3 is outside WORLD_SIZE=2'),
        ({'RANK': '0'}, 'WORLD_SIZE=None'),
        ({'RANK': 'x', 'WORLD_SIZE': '2'}, "RANK='x'"),
    ],
)
def test_a_rank_outside_its_world_is_refused_not_waited_for(env, says):
    r = gptcourse('gpt2-train', '--preset', 'cpu', '--no-progress', timeout=60, env=env)
    assert r.returncode == 1 and says in r.stderr and r.stderr.count('\n') == 1, r.stderr


def test_a_pipe_for_hellaswag_is_refused_not_waited_for(tmp_path, capsys):
    os.mkfifo(tmp_path / 'hs.jsonl')
    assert 'is not a file of HellaSwag examples' in fails(
        capsys, 'gpt2-train', '--preset', 'cpu', '--hellaswag', tmp_path / 'hs.jsonl', '--no-progress'
    )


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_good_checkpoints(
    run, tmp_path, capsys, monkeypatch
):
    """The disk fills up at the second checkpoint: one line, exit 1, the first checkpoint whole, no temporary
    file."""
    import errno, gptcourse.checkpoint as ck

    real, calls = ck.atomic_write, []

    def full(path, mode='wb'):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, 'No space left on device', str(path))
        return real(path, mode)

    monkeypatch.setattr(ck, 'atomic_write', full)
    msg = fails(capsys, 'train', *TINY, '--max-steps', 300, '--out', tmp_path / 'r')
    assert 'No space left on device' in msg
    assert [p.name for p in list_checkpoints(tmp_path / 'r')] == ['step_0000100.safetensors']
    assert sorted(p.name for p in (tmp_path / 'r').iterdir()) == ['step_0000100.safetensors']


def test_openai_s_weights_offline_is_one_line(tmp_path):
    r = gptcourse(
        'gpt2-train',
        '--preset',
        'cpu',
        '--init',
        'gpt2',
        '--no-progress',
        '--out',
        tmp_path / 'g',
        env={'HF_HUB_OFFLINE': '1'},
    )
    assert (
        r.returncode == 1 and r.stderr.count('\n') == 1 and 'could not get openai-community/gpt2' in r.stderr
    )
    assert (
        'pass a folder holding config.json and model.safetensors' in r.stderr
        and not (tmp_path / 'g').exists()
    )


def test_bpe_train_writes_a_tokenizer_that_loads_with_the_naive_trainer_s_merges(tmp_path, capsys):
    text = tmp_path / 'text.txt'
    text.write_text(
        'To be, or not to be, that is the question. ' * 40 + 'naïve café ☃ 👋🏽', encoding='utf-8'
    )
    out = tmp_path / 'tok'
    assert (
        main(['bpe-train', '--text', str(text), '--vocab-size', '300', '--out', str(out), '--no-progress'])
        == 0
    )
    assert f'300 tokens (44 merges) written to {out / "tokenizer.model"}' in capsys.readouterr().out
    s = text.read_text(encoding='utf-8')
    naive = BasicTokenizer().train(s, 300, pattern=GPT2_PATTERN)  # lesson 24's first trainer: the reference
    lines = (out / 'tokenizer.model').read_text(encoding='utf-8').splitlines()
    assert lines[:3] == ['minbpe v1', GPT2_PATTERN, '0']  # minbpe's format, read by hand
    assert [tuple(map(int, line.split(' '))) for line in lines[3:]] == list(naive.merges)
    tok = BasicTokenizer.load(out / 'tokenizer.model')
    assert tok.merges == naive.merges and tok.decode(tok.encode(s)) == s and len(tok.encode(s)) < len(s) / 3
    assert (
        main(['bpe-train', '--text', str(text), '--vocab-size', '260', '--out', str(out), '--overwrite']) == 0
    )
    assert len(BasicTokenizer.load(out / 'tokenizer.model').merges) == 4  # replaced


@pytest.mark.parametrize(
    'case, says, code',
    [
        ('latin-1', 'is not UTF-8 text (byte 3: invalid continuation byte); BPE reads UTF-8', 1),
        ('empty', 'is empty: there are no pairs to learn merges from', 1),
        ('nowhere', 'no such text file', 1),
        ('exists', 'exists: pass overwrite=True (bpe-train: --overwrite) to replace it', 1),
        ('in-a-file', 'is a file, not a folder', 1),
    ],
)
def test_bpe_train_refuses_bad_input_in_one_line_before_training(
    case, says, code, tmp_path, capsys, monkeypatch
):
    text, out = tmp_path / 'text.txt', tmp_path / 'tok'
    text.write_bytes({'latin-1': 'café'.encode('latin-1') + b'\xe9t\xe9', 'empty': b''}.get(case, b'abab'))
    (out / 'tokenizer.model').parent.mkdir()
    (out / 'tokenizer.model').write_text('minbpe v1\n\n0\n97 98\n') if case == 'exists' else None
    if case == 'in-a-file':
        out = text / 'tok'
    monkeypatch.setattr(BasicTokenizer, 'train_incremental', lambda *a, **k: pytest.fail('trained'))
    args = ['--text', tmp_path / ('nowhere.txt' if case == 'nowhere' else 'text.txt'), '--out', out]
    line = fails(capsys, 'bpe-train', *args, '--vocab-size', 300, code=code)
    assert says in line, line
    if case == 'exists':  # the tokenizer that was there is still there
        assert (out / 'tokenizer.model').read_text() == 'minbpe v1\n\n0\n97 98\n'


def test_openai_s_weights_with_no_network_is_one_line_without_the_hub_s_retries(monkeypatch, capsys):
    "Offline without HF_HUB_OFFLINE: the hub's client would retry for half a minute; the course asks once."
    import socket
    import huggingface_hub
    from huggingface_hub import constants

    def download(repo, name, local_files_only=False, **kw):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError('not in the cache')
        pytest.fail(f'went to the network for {name}')

    def unreachable(*a, **k):
        raise OSError('Network is unreachable')

    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    for k in ('HF_ENDPOINT', 'HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy'):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', download)
    monkeypatch.setattr(socket, 'create_connection', unreachable)
    line = fails(capsys, 'gpt2-sample', '--model', 'gpt2', '--max-new-tokens', '1')
    assert 'huggingface.co does not answer, and the files are not in the local cache' in line, line


@pytest.mark.parametrize('command', ['plot', 'sample', 'gpt2-sample'])
def test_a_model_that_is_not_there_is_the_same_line_for_every_command(command, tmp_path, capsys):
    line = fails(capsys, command, '--model', tmp_path / 'nowhere')
    assert f'no checkpoint at {tmp_path / "nowhere"}: no such file or folder' in line, line


def test_more_threads_than_the_machine_has_cores_is_refused(capsys):
    "Thousands of threads failed inside libgomp; the bound is the machine's own count of cores."
    with pytest.raises(SystemExit) as e:
        main(['--threads', '9999', 'presets'])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and last.endswith(
        f'must be a whole number >= 1 and <= {os.cpu_count()}, got 9999'
    )


def test_prepare_out_empty_is_refused_not_taken_for_the_default_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('GPTCOURSE_DATA', str(tmp_path / 'data'))
    (tmp_path / 's.txt').write_text('hello world, this is a test. ' * 200)
    line = fails(capsys, 'prepare', '--src', tmp_path / 's.txt', '--out', '', '--no-progress')
    assert "must name a folder for the shards, like data/shards; got ''" in line, line
    assert not (tmp_path / 'data').exists()


def test_a_folder_of_token_shards_is_not_taken_for_a_run_folder(tmp_path, capsys):
    "train --out a shard folder used to be accepted: the run's checkpoints would have gone among the shards."
    shards = tmp_path / 'shards'
    shards.mkdir()
    (shards / 'manifest.json').write_text('{}')
    line = fails(capsys, 'train', *TINY, '--out', shards, '--max-steps', '2')
    assert 'holds token shards (its manifest.json), not a run: a run needs its own folder' in line, line
    assert sorted(p.name for p in shards.iterdir()) == ['manifest.json']


@pytest.mark.parametrize(
    'argv',
    [
        ['train', '--threads', '1'],
        ['--threads', '1', 'train'],
        ['sample', '--threads', '1', '--prompt', 'x'],
        ['gpt2-train', '--preset', 'cpu', '--threads', '1'],
        ['bpe-train', '--text', 'a', '--vocab-size', '300', '--out', 'b', '--threads', '1'],
        ['presets', '--threads', '1'],
    ],
)
def test_threads_goes_before_the_command_or_after_it(argv):
    "`gptcourse train --threads 1`, as the README reads it, was 'unrecognized arguments': only before worked."
    assert build_parser().parse_args(argv).threads == 1


def test_every_command_lists_threads_and_its_bound_is_the_same_after_it(capsys):
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        assert '--threads THREADS' in sub.format_help() and 'CPU threads for torch' in sub.format_help(), name
    assert not hasattr(build_parser().parse_args(['presets']), 'threads')  # not given: the default chooses
    with pytest.raises(SystemExit) as e:
        main(['presets', '--threads', '9999'])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and last.startswith('gptcourse presets: error: argument --threads: '), last
    assert last.endswith(f'must be a whole number >= 1 and <= {os.cpu_count()}, got 9999'), last
    assert main(['presets', '--threads', '1']) == 0 and 'train      cpu' in capsys.readouterr().out


def test_presets_says_how_long_the_cpu_preset_takes_and_where():
    """`presets` said the cpu preset takes ≈40 s; a run of it on the course's 2-core machine, one thread as
    the default gives it there, took 72 s quiet and 77 s with the bar and the sample (2026-12)."""
    import re
    from gptcourse.cli import PRESET_COST

    said = PRESET_COST[('train', 'cpu')]
    secs = int(re.search(r'≈(\d+) s', said)[1])
    assert 60 <= secs <= 90 and 'one thread of a 2-core CPU' in said, said


@pytest.mark.parametrize(
    'cmd, extra', [('train', TINY), ('gpt2-train', ['--preset', 'cpu', '--device', 'cpu', '--no-progress'])]
)
def test_a_new_run_over_a_finished_one_is_refused_before_a_model_is_built(
    cmd, extra, tmp_path, capsys, monkeypatch
):
    "`train --out <a finished run>` built the model (and read the text) before it said the folder held a run."
    from gptcourse.gpt2 import GPT

    run = tmp_path / 'run'
    run.mkdir()
    (run / 'step_0000010.safetensors').write_bytes(b'a finished run')  # what a new run looks at: its name
    monkeypatch.setattr(GPT, '__init__', lambda *a, **k: pytest.fail('a model was built'))
    line = fails(capsys, cmd, *extra, '--out', run)
    assert line == (
        f'gptcourse {cmd}: {run} already holds a run (step_0000010.safetensors): resume it, overwrite it, '
        'or choose another folder'
    ), line
    assert sorted(p.name for p in run.iterdir()) == ['step_0000010.safetensors']


@pytest.mark.parametrize('value', ['1e-5', '0.00009', '1e-320', '-1', 'nan', 'inf'])
def test_the_temperature_is_refused_as_the_library_refuses_it(value, capsys):
    "`--temperature 1e-5` was accepted by the command, and refused by lesson 02's `check_temperature`."
    from gptcourse.train import check_temperature

    with pytest.raises(ValueError) as refused:
        check_temperature(float(value))
    for cmd in ('sample', 'gpt2-sample'):
        with pytest.raises(SystemExit) as e:
            main([cmd, '--temperature', value])
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 2, last
        assert last == f'gptcourse {cmd}: error: argument --temperature: {refused.value}', last
    for ok in ('0', '1e-4', '0.7', '2'):
        assert build_parser().parse_args(['sample', '--temperature', ok]).temperature == float(ok)
