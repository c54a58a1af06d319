"""The `gptcourse train` and `gptcourse sample` commands of lesson 06, run as a user runs them: a short CPU
training run writes a checkpoint, `--resume` continues it from its step, `sample` prints text of the asked
length, and wrong input (a bad prompt, a missing or corrupt checkpoint, an unknown preset) ends with a clear
message and a non-zero exit code instead of a traceback."""
import subprocess, sys
import pytest
from gptcourse.chargpt import load_chargpt
from gptcourse.cli import main
from gptcourse.train import load_checkpoint


def gptcourse(*args, timeout=120):
    "Run `python -m gptcourse.cli ARGS` in a fresh process; returns the CompletedProcess."
    return subprocess.run([sys.executable, '-m', 'gptcourse.cli', *map(str, args)], capture_output=True, text=True, timeout=timeout)


def exit_message(*args):
    "The message that `gptcourse ARGS` (in this process) exits with."
    with pytest.raises(SystemExit) as e: main(list(map(str, args)))
    assert e.value.code not in (0, None)
    return str(e.value.code)


TINY = ['--preset', 'cpu', '--eval-interval', '100', '--eval-iters', '5', '--device', 'cpu', '--sample-chars', '0']


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    "A checkpoint of 200 steps of the `cpu` preset, written by `gptcourse train`."
    path = tmp_path_factory.mktemp('chargpt')/'tiny.safetensors'
    r = gptcourse('train', *TINY, '--max-steps', 200, '--out', path)
    assert r.returncode == 0, r.stderr
    assert 'step 200: train loss' in r.stdout and 'val loss' in r.stdout, r.stdout
    return path


def test_train_writes_a_checkpoint(checkpoint):
    model, tok, meta = load_chargpt(checkpoint)
    assert meta['step'] == 200 and meta['arch'] == 'FusedCharGPT' and meta['train']['name'] == 'cpu'
    assert tok.vocab_size == 65 and model.config.n_layer == 4
    hist = meta['history']
    assert hist['eval_step'] == [0, 100, 200] and hist['val_loss'][-1] < hist['val_loss'][0] - 0.8  # it learnt


def test_resume_continues_from_its_step(checkpoint, tmp_path):
    path = tmp_path/'resumed.safetensors'
    path.write_bytes(checkpoint.read_bytes())
    r = gptcourse('train', *TINY, '--max-steps', 300, '--out', path, '--resume')
    assert r.returncode == 0, r.stderr
    assert 'resuming' in r.stdout and 'at step 200' in r.stdout, r.stdout
    meta = load_checkpoint(path)
    assert meta['step'] == 300
    assert meta['history']['step'] == list(range(300)) and meta['history']['eval_step'] == [0, 100, 200, 300]
    # starting again over an existing checkpoint needs --overwrite; resuming past the end needs more steps
    assert 'already exists' in exit_message('train', *TINY, '--max-steps', 10, '--out', path)
    assert 'already at step 300' in exit_message('train', *TINY, '--max-steps', 300, '--out', path, '--resume')


def test_sample_prints_text_of_the_asked_length(checkpoint):
    r = gptcourse('sample', '--checkpoint', checkpoint, '--prompt', 'ROMEO:', '--num-chars', 200, '--seed', 1, '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    text = r.stdout[:-1]  # the command ends its output with a newline
    assert text.startswith('ROMEO:') and len(text) == len('ROMEO:') + 200
    letters = sum(c.isalpha() for c in text)
    assert letters > 0.6 * len(text) and text.count(' ') > 10, text  # words with spaces between, like the training text
    again = gptcourse('sample', '--checkpoint', checkpoint, '--prompt', 'ROMEO:', '--num-chars', 200, '--seed', 1, '--device', 'cpu')
    assert again.stdout == r.stdout  # a seed makes it reproducible


def test_bad_prompt(checkpoint):
    msg = exit_message('sample', '--checkpoint', checkpoint, '--prompt', 'Ζεύς', '--device', 'cpu')
    assert msg.startswith('gptcourse sample:') and 'not in the vocabulary' in msg and "'Ζ'" in msg


def test_missing_checkpoint(tmp_path):
    r = gptcourse('sample', '--checkpoint', tmp_path/'nothing.safetensors')
    assert r.returncode != 0 and 'Traceback' not in r.stderr
    assert 'gptcourse sample: no checkpoint at' in r.stderr and 'gptcourse train --out' in r.stderr, r.stderr
    assert 'no checkpoint at' in exit_message('train', *TINY, '--out', tmp_path/'nothing.safetensors', '--resume')


def test_corrupt_checkpoint(checkpoint, tmp_path):
    raw = bytearray(checkpoint.read_bytes()); raw[-1000] ^= 0xFF
    (tmp_path/'flipped.safetensors').write_bytes(raw)
    (tmp_path/'truncated.safetensors').write_bytes(checkpoint.read_bytes()[:5000])
    for name in ('flipped', 'truncated'):
        msg = exit_message('sample', '--checkpoint', tmp_path/f'{name}.safetensors')
        assert msg.startswith('gptcourse sample:') and 'corrupt' in msg, msg


def test_unknown_preset(capsys):
    with pytest.raises(SystemExit) as e: main(['train', '--preset', 'huge'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'huge'" in err and 'cpu' in err and 'lecture' in err
