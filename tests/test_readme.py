"""The README as a new user meets it: its commands, run one after another in an empty folder with the data
only in a data folder (no tiktoken cache, no internet), then its library snippet exactly as written. Commands
that need a GPU or the Hugging Face hub (the lecture presets, OpenAI's weights, torchrun on 8 GPUs) are left
out."""

import hashlib, math, os, re, shlex, shutil, subprocess, sys
from pathlib import Path
import pytest
from gptcourse.data import data_dir, gpt2_files, tiny_shakespeare

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / 'README.md').read_text(encoding='utf-8')
NEEDS_GPU_OR_HUB = (
    '--preset lecture',
    '--model runs/lecture',
    '--model gpt2 ',
    '--preset finetune',  # OpenAI's weights
    'torchrun',
    'fineweb-edu-10B',
)


def readme_blocks(lang: str) -> list[str]:
    return re.findall(rf'```{lang}\n(.*?)```', README, re.S)


def readme_commands() -> list[list[str]]:
    "The `gptcourse ...` lines of the README's shell blocks that run on a CPU offline, as argument lists."
    out = []
    for block in readme_blocks('sh'):
        for line in block.splitlines():
            args = shlex.split(line, comments=True)
            if args[:1] == ['gptcourse'] and not any(n in line for n in NEEDS_GPU_OR_HUB):
                out.append(args)
    return out


@pytest.fixture(scope='module')
def user(tmp_path_factory):
    "An empty working folder, and an environment whose data folder holds only the three checksummed files."
    home = tmp_path_factory.mktemp('user')
    data = home / 'data'
    (data / 'gpt2').mkdir(parents=True)
    tiny_shakespeare()
    encoder, vocab = gpt2_files()  # from the test run's own data folder (CI: ../shared/data)
    shutil.copy(data_dir() / 'tinyshakespeare.txt', data / 'tinyshakespeare.txt')
    shutil.copy(encoder, data / 'gpt2' / 'encoder.json')
    shutil.copy(vocab, data / 'gpt2' / 'vocab.bpe')
    env = dict(
        os.environ,
        GPTCOURSE_DATA=str(data),
        TIKTOKEN_CACHE_DIR=str(home / 'no-tiktoken-cache'),
        HF_HUB_OFFLINE='1',
        MPLBACKEND='Agg',
        OMP_NUM_THREADS='1',
    )  # one thread: steady on a shared machine
    work = home / 'work'
    work.mkdir()
    shutil.copy(
        ROOT / 'README.md', work / 'README.md'
    )  # the README's `--text README.md`: a text the user has
    return work, env


def test_the_readme_shows_the_main_job():
    cmds = [' '.join(a[:2]) for a in readme_commands()]
    for c in (
        'gptcourse train',
        'gptcourse sample',
        'gptcourse prepare',
        'gptcourse gpt2-train',
        'gptcourse gpt2-sample',
    ):
        assert c in cmds, c


def test_readme_commands_then_library_snippet(user):
    work, env = user
    exe = shutil.which('gptcourse')
    outputs = {}
    for args in readme_commands():
        cmd = [exe, *args[1:]] if exe else [sys.executable, '-m', 'gptcourse.cli', *args[1:]]
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f'{shlex.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}'
        assert 'Traceback' not in r.stderr and 'Warning' not in r.stderr, r.stderr[-2000:]
        outputs[shlex.join(args)] = r.stdout
    assert sorted(p.name for p in (work / 'runs' / 'char').glob('step_*')) == [
        'step_0003500.safetensors',
        'step_0004000.safetensors',
    ]
    assert (work / 'runs' / 'char' / 'loss.png').stat().st_size > 10_000
    plotted = next(v for k, v in outputs.items() if k.startswith('gptcourse plot'))
    assert 'val loss 1.9' in plotted and 'at step 3000 (the preset' in plotted, plotted
    assert 'in the reference range 1.83-1.96' in plotted, plotted
    resumed = next(v for k, v in outputs.items() if k.startswith('gptcourse gpt2-train') and '--resume' in k)
    assert 'continuing its schedule' in resumed, resumed
    assert not (work / 'data').exists() and not (Path(env['TIKTOKEN_CACHE_DIR']) / 'gpt2').exists()

    # the resumed GPT-2 run followed the 30-step schedule it was started with, as if never stopped
    from gptcourse.optim import get_lr
    from gptcourse.checkpoint import load_latest

    meta = load_latest(work / 'runs' / 'gpt2')[1]
    s = meta['run']
    assert meta['step'] == 30 and len(meta['history']['lr']) == 30
    want = [get_lr(i, s['lr'], 0.1 * s['lr'], s['warmup_steps'], s['max_steps']) for i in range(30)]
    assert meta['history']['lr'] == pytest.approx(want, rel=1e-12)
    tuned = load_latest(work / 'runs' / 'tuned')[1]  # the README model, fine-tuned on Tiny Shakespeare
    source = Path(tuned['started_from']['source'])
    assert source.parent == (work / 'runs' / 'readme').resolve(), source
    assert tuned['started_from']['sha256'] == hashlib.sha256(source.read_bytes()).hexdigest()
    chance = math.log(len(tuned['tokenizer']['chars']))  # knowing nothing: uniform over the vocabulary
    assert tuned['history']['val_loss'][0] < chance - 0.5, (tuned['history']['val_loss'][0], chance)
    gpt2_tuned = load_latest(work / 'runs' / 'gpt2-tuned')[1]
    assert gpt2_tuned['run']['init'] == 'runs/gpt2' and set(gpt2_tuned['history']['lr'][3:]) == {1e-3}
    from gptcourse.bpe import BasicTokenizer

    bpe = BasicTokenizer.load(work / 'tokenizers' / 'readme' / 'tokenizer.model')  # `gptcourse bpe-train`'s
    own = (work / 'README.md').read_text(encoding='utf-8')
    assert len(bpe.merges) == 512 - 256 and bpe.decode(bpe.encode(own)) == own
    assert len(bpe.encode(own)) < len(own.encode()) / 2  # its own text, at least two bytes a token
    readme = load_latest(work / 'runs' / 'readme')[1]
    assert set(readme['tokenizer']['chars']) == set((work / 'README.md').read_text(encoding='utf-8'))

    sampling, training = readme_blocks('python')
    r = subprocess.run(
        [sys.executable, '-c', sampling], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith('ROMEO:') and len(r.stdout) > 200 and r.stdout.count('ROMEO:') >= 2, r.stdout
    r = subprocess.run(
        [sys.executable, '-c', training], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0 and 1.0 < float(r.stdout.split()[-1]) < 3.0, (
        r.stdout + r.stderr[-3000:]
    )  # its print
    assert (work / 'runs' / 'small' / 'step_0000300.safetensors').exists()
