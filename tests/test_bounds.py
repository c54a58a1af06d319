"""Issue 37's inputs that were accepted and then failed deep inside (a traceback from torch, a fork bomb, a
buffer of terabytes) or were taken as something else: each refused up front, in one line that says what is
allowed, or done right."""

import re

import pytest, torch


class Model(torch.nn.Module):
    "Logits that favour token 2 of 5, whatever the context: enough for lesson 02's sampling loop."

    block_size = 8

    def forward(self, idx):
        return torch.tensor([0.0, 1.0, 3.0, 0.5, -1.0]).expand(idx.size(0), idx.size(1), 5), None


def tiny_gpt():
    from gptcourse.gpt2 import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=8, vocab_size=5, n_layer=1, n_head=1, n_embd=8)).eval()


def test_a_temperature_too_small_for_float32_is_refused_by_every_sampler():
    "1e-320 is 0 in float32: dividing by it made NaNs, and torch.multinomial a traceback."
    from gptcourse.kv_cache import generate_cached, sample_next
    from gptcourse.train import generate, sample_logits

    logits, idx = torch.randn(2, 5), torch.zeros(1, 1, dtype=torch.long)
    want = re.escape('temperature must be 0 (greedy) or a number from 1e-4 up, got 1e-320')
    for draw in (
        lambda: sample_logits(logits, 1e-320),
        lambda: sample_next(logits, 1e-320),
        lambda: sample_next(logits, 1e-320, top_p=0.9),
        lambda: generate(Model(), idx, 3, temperature=1e-320),
        lambda: generate_cached(tiny_gpt(), idx, 3, temperature=1e-320),
    ):
        with pytest.raises(ValueError, match=f'^{want}$'):
            draw()
    assert generate(Model(), idx, 3, temperature=1e-4)[0, 1:].tolist() == [2, 2, 2]  # the least: greedy


def test_a_top_p_below_float32s_least_keeps_the_most_likely_token():
    "p = 1e-300 is 0 in float32: every token was dropped, and torch.multinomial a traceback."
    from gptcourse.kv_cache import generate_cached, sample_next, top_p_filter

    logits = torch.tensor([[0.0, 1.0, 3.0, 0.5, -1.0]])
    kept = (top_p_filter(logits, 1e-300) > float('-inf'))[0].tolist()
    assert kept == [False, False, True, False, False]
    assert sample_next(logits, top_p=1e-300).item() == 2
    m, idx = tiny_gpt(), torch.zeros(1, 1, dtype=torch.long)
    assert torch.equal(generate_cached(m, idx, 5, top_p=1e-300, seed=0), generate_cached(m, idx, 5, 0))


def test_stop_after_0_is_refused_not_taken_for_no_stop():
    "`stop_after or max_steps` took 0 for None: the whole run was trained, as if nothing were wrong."
    from gptcourse.trainers import train_char

    kw = dict(max_steps=2, batch_size=2, block_size=8, n_layer=1, n_head=1, n_embd=8, eval_iters=1)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match=f'^stop_after must be a whole number >= 1, got {bad}$'):
            train_char('cpu', None, stop_after=bad, progress=False, log=lambda *a: None, **kw)


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / 'a.txt').write_text('Some text to tokenize, and a little more of it.\n' * 20)
    return tmp_path / 'a.txt'


def test_prepare_refuses_workers_beyond_the_cores_before_forking_one(corpus, tmp_path, monkeypatch):
    "--workers 10000 forked until the process limit stopped it; 0 was taken for the default."
    import os

    from gptcourse import shards

    monkeypatch.setattr(shards, 'ProcessPoolExecutor', None)  # a process started would be a TypeError
    most = 4 * (os.cpu_count() or 1)
    for bad in (0, most + 1, 10_000, 2.0):
        want = re.escape(f'workers must be a whole number from 1 to {most} (4 a core), got {bad}')
        with pytest.raises(ValueError, match=f'^{want}$'):
            shards.prepare(corpus, tmp_path / 'out', workers=bad, progress=False)
    assert not (tmp_path / 'out').exists() and not list(tmp_path.glob('.out.*'))


def test_prepare_refuses_a_shard_larger_than_half_the_memory_before_allocating_it(corpus, tmp_path):
    "--shard-size 10**12 was a traceback allocating 1.8 TiB for the shard's buffer."
    from gptcourse.gpt2 import machine_bytes
    from gptcourse.shards import prepare

    most = machine_bytes() // 4
    for bad in (0, most + 1, 10**12):
        want = (
            f"shard_size must be a whole number from 1 to {most:,} (a shard's tokens, 2 bytes each, in half "
            f"this machine's memory), got {bad}"
        )
        with pytest.raises(ValueError, match=f'^{re.escape(want)}$'):
            prepare(corpus, tmp_path / 'out', shard_size=bad, progress=False)
    assert not (tmp_path / 'out').exists()


def test_prepare_refuses_an_out_dir_that_names_no_folder(corpus, tmp_path, monkeypatch):
    """`prepare --out ''` wrote the default Tiny Shakespeare folder (the CLI's part: it reads '' as no --out);
    the library took '' for '.', the folder it runs in."""
    from gptcourse.shards import prepare

    monkeypatch.chdir(tmp_path)
    for bad in ('', '.', '..'):
        want = f'out_dir must name a folder for the shards, like data/shards; got {bad!r}'
        with pytest.raises(ValueError, match=f'^{re.escape(want)}$'):
            prepare(corpus, bad, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.txt']


def test_a_resumed_prepare_refuses_a_source_file_edited_since_it_started(tmp_path, monkeypatch):
    """Killed mid-way, the file it had read appended to, the same command again: it went on silently, its
    shards a mix of the old and the new text; and --overwrite, which the refusal asks for, did not start
    again."""
    from gptcourse import shards

    src, out = tmp_path / 'a.txt', tmp_path / 'out'
    src.write_text('Some text to tokenize, and a little more of it. ' * 100)
    save = shards._save

    def killed_after_two(state, partial, tokens, position):
        save(state, partial, tokens, position)
        if len(state['shards']) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(shards, '_save', killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        shards.prepare(src, out, shard_size=100, workers=1, progress=False)
    monkeypatch.setattr(shards, '_save', save)
    with src.open('a') as f:
        f.write('A sentence added afterwards. ' * 50)
    want = f'the files of {src} changed since the unfinished prepare in {tmp_path / ".out.partial"} started'
    with pytest.raises(ValueError, match=f'^{re.escape(want)}: pass --overwrite to start again$'):
        shards.prepare(src, out, shard_size=100, workers=1, progress=False)
    m = shards.prepare(src, out, shard_size=100, workers=1, progress=False, overwrite=True)
    assert m == shards.prepare(src, tmp_path / 'fresh', shard_size=100, workers=1, progress=False)


def test_a_resumed_gpt2_run_refuses_shards_prepared_again_from_another_text(tmp_path):
    "`gpt2-train --resume` after its shard folder was prepared again from another text: it went on, on it."
    from gptcourse.data import data_dir
    from gptcourse.pretrain import train_gpt2
    from gptcourse.shards import prepare

    text = (data_dir() / 'tinyshakespeare.txt').read_text(encoding='utf-8')
    (tmp_path / 'a.txt').write_text(text[:40_000])
    (tmp_path / 'b.txt').write_text(text[-40_000:])
    data, run = tmp_path / 'shards', tmp_path / 'run'
    prepare(tmp_path / 'a.txt', data, progress=False)
    kw = dict(data=str(data), batch_size=2, seq_len=32, total_batch=64, eval_interval=0, eval_iters=1)
    quiet = dict(progress=False, log=lambda *a: None)
    train_gpt2('cpu', run, max_steps=3, stop_after=1, **kw, **quiet)
    prepare(tmp_path / 'b.txt', data, progress=False, overwrite=True)
    want = f'{data} changed since the run started: resume it on the data it started from, or start a new run'
    with pytest.raises(ValueError, match=f'^{re.escape(want)}$'):
        train_gpt2(None, run, resume=True, **quiet)


def test_a_checkpoint_whose_batch_state_is_garbage_is_one_error(tmp_path):
    "A resumed run whose checkpoint holds a garbage batch state (sha256 recomputed): a traceback from torch."
    import json

    from safetensors import safe_open
    from safetensors.torch import save

    from gptcourse.checkpoint import _digest, list_checkpoints
    from gptcourse.trainers import RandomBatches, train_char

    n = torch.Generator().get_state().numel()
    want = f"batch state must be a torch.Generator's state ({n} bytes, as state_dict() saves it); this is not"
    batches = RandomBatches(torch.arange(100), torch.arange(100), 2, 8)
    for bad in ([[1, 2, 3]], [1, 2, 3], 'x', [300] * n, None):
        with pytest.raises(ValueError, match=f'^{re.escape(want)}$'):
            batches.load_state_dict(bad)
    kw = dict(max_steps=4, batch_size=2, block_size=8, n_layer=1, n_head=1, n_embd=8, eval_iters=1)
    quiet = dict(progress=False, log=lambda *a: None)
    train_char('cpu', tmp_path, stop_after=2, **kw, **quiet)
    f = list_checkpoints(tmp_path)[-1]
    with safe_open(f, 'pt') as h:
        header, tensors = json.loads(h.metadata()['gptcourse']), {k: h.get_tensor(k) for k in h.keys()}
    header['meta']['batches'] = [[1, 2, 3]]
    del header['sha256']
    header['sha256'] = _digest(tensors, header)
    f.write_bytes(save(tensors, metadata={'gptcourse': json.dumps(header)}))
    with pytest.raises(ValueError, match=f'^{re.escape(want)}$'):
        train_char(None, tmp_path, resume=True, **quiet)


def test_a_path_that_is_not_there_is_a_valueerror_like_every_bad_input(tmp_path):
    """`train_gpt2(data='/nonexistent')` and `prepare` of a missing source were FileNotFoundErrors only: a
    caller catching the library's ValueError missed them. They are both now."""
    from gptcourse.pretrain import train_gpt2
    from gptcourse.shards import prepare

    gone = tmp_path / 'nonexistent'
    want = f'{gone}: no such folder of token shards (make one with `gptcourse prepare --out {gone}`)'
    with pytest.raises(ValueError, match=f'^{re.escape(want)}$') as e:
        train_gpt2('cpu', None, data=str(gone), progress=False, log=lambda *a: None)
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(ValueError, match=f'^{re.escape(str(gone))}: no such file or folder') as e:
        prepare(gone, tmp_path / 'out', progress=False)
    assert isinstance(e.value, FileNotFoundError)


@pytest.mark.parametrize('changes', [dict(n_layer=100_000), dict(batch_size=10**8)])
def test_a_char_run_too_big_for_memory_is_refused_before_its_model_is_built(changes, tmp_path, monkeypatch):
    "n_layer 100,000 used to spend minutes allocating 5 billion parameters; a batch of 10**8, to be killed."
    from gptcourse import trainers

    monkeypatch.setattr(
        trainers, 'machine_bytes', lambda: 16 * 2**30
    )  # a 16 GB machine, whatever this one is
    built = []
    monkeypatch.setattr(trainers.GPT, '__init__', lambda *a, **k: built.append(1) or pytest.fail('built'))
    with pytest.raises(ValueError, match=r'needs at least [\d,.]+ GB .*this machine has 17.2 GB'):
        trainers.train_char(
            'cpu', tmp_path / 'run', device='cpu', progress=False, log=lambda *a: None, **changes
        )
    assert not built


def test_a_gpt2_run_too_big_for_memory_is_refused_before_its_model_is_built(tmp_path, monkeypatch):
    from gptcourse import pretrain, trainers

    monkeypatch.setattr(trainers, 'machine_bytes', lambda: 16 * 2**30)
    monkeypatch.setattr(pretrain, 'GPT', lambda *a, **k: pytest.fail('built'))
    with pytest.raises(ValueError, match='activations of 100,000 x 32 tokens'):
        pretrain.train_gpt2(
            'cpu',
            tmp_path / 'run',
            device='cpu',
            batch_size=100_000,
            total_batch=3_200_000,
            progress=False,
            log=lambda *a: None,
        )


def one_line(capsys, *argv, code=1) -> str:
    """The one line that `gptcourse ARGV` ends with (in this process), its exit status checked, no traceback
    (and before it, for a malformed command line, exit status 2, only argparse's usage)."""
    from gptcourse.cli import main

    try:
        got = main(list(map(str, argv)))
    except SystemExit as e:
        got = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert got == code and 'Traceback' not in err and (code == 2 or len(lines) == 1), (got, err)
    return lines[-1]


def test_a_char_run_s_batches_are_bounded_by_its_validation_split_before_a_model_is_built(
    tmp_path, monkeypatch, capsys
):
    """`train --block-size 100000` and `--eval-iters 10**9` ran for hours without a word: the text's
    validation split (Tiny Shakespeare's last 111,540 characters) bounds both, in the library and the CLI."""
    from gptcourse import trainers

    monkeypatch.setattr(trainers.GPT, '__init__', lambda *a, **k: pytest.fail('a model was built'))
    monkeypatch.setattr(trainers, 'machine_bytes', lambda: 2**40)  # memory is not what refuses them here
    for changes, want in (
        (
            dict(block_size=100_000),
            'block_size must be at most 6,970 here, got 100,000 (16 x 100,001): the validation split '
            '(111,540 tokens) must hold batch_size x (block_size + 1) side by side',
        ),
        (
            dict(eval_iters=10**9),
            'eval_iters must be at most 6,969 here, got 1,000,000,000: an evaluation reads eval_iters x 16 '
            'sequences of 32 tokens, and the validation split (111,540 tokens) has 111,508 places to start '
            'one',
        ),
    ):
        with pytest.raises(ValueError, match=f'^{re.escape(want)}$'):
            trainers.train_char('cpu', tmp_path / 'run', device='cpu', progress=False, **changes)
        flag, value = next(iter(changes.items()))
        argv = ['train', '--preset', 'cpu', f'--{flag.replace("_", "-")}', value, '--out', tmp_path / 'run']
        assert one_line(capsys, *argv, '--device', 'cpu', '--no-progress') == f'gptcourse train: {want}'
    assert not (tmp_path / 'run').exists()
    with pytest.raises(ValueError, match='^eval_iters must be at most 6,969 here, got 6,970: '):
        trainers.check_batches(16, 32, 6970, 111_540)
    with pytest.raises(ValueError, match=r'^batch_size must be at most 3,380 here, got 100,000,000 \('):
        trainers.check_batches(10**8, 32, 1, 111_540)  # not even a context of 1 fits: the batch is refused
    trainers.check_batches(16, 6970, 1, 111_540)  # the largest of each fits
    trainers.check_batches(16, 32, 6969, 111_540)
    trainers.check_batches(3380, 32, 1, 111_540)


def test_a_gpt2_run_s_step_and_evaluations_are_bounded_by_its_shards_before_a_model_is_built(
    tmp_path, monkeypatch, capsys
):
    """`gpt2-train --total-batch 10**12` and `--eval-iters 10**9` ran for hours without a word: a step reads
    the training tokens at most ten times over, and an evaluation no more sequences than the validation split
    has places to start one."""
    from gptcourse import pretrain
    from gptcourse.loader import read_manifest
    from gptcourse.shards import prepare

    data = tmp_path / 'shards'
    prepare(None, data, progress=False)
    splits = read_manifest(data)['splits']
    train, val = (sum(s['tokens'] for s in splits[k]) for k in ('train', 'val'))
    monkeypatch.setattr(pretrain, 'GPT', lambda *a, **k: pytest.fail('a model was built'))
    for changes, want in (
        (
            dict(total_batch=10**12),
            f'total_batch must be at most {10 * train:,} here, got 1,000,000,000,000: a step may read the '
            f'{train:,} training tokens of {data} at most ten times over',
        ),
        (
            dict(eval_iters=10**9),
            f'eval_iters must be at most {(val - 32) // 4:,} here, got 1,000,000,000: an evaluation reads '
            f'eval_iters x 4 sequences of 32 tokens, and the validation split ({val:,} tokens) has '
            f'{val - 32:,} places to start one',
        ),
    ):
        quiet = dict(progress=False, log=lambda *a: None)
        with pytest.raises(ValueError, match=f'^{re.escape(want)}$'):
            pretrain.train_gpt2('cpu', tmp_path / 'run', data=str(data), device='cpu', **changes, **quiet)
        flag, value = next(iter(changes.items()))
        argv = ['gpt2-train', '--preset', 'cpu', f'--{flag.replace("_", "-")}', value, '--data', data]
        line = one_line(capsys, *argv, '--out', tmp_path / 'run', '--device', 'cpu', '--no-progress')
        assert line == f'gptcourse gpt2-train: {want}'
    assert not (tmp_path / 'run').exists()


def test_a_sample_longer_than_a_novel_is_refused_before_its_first_token(capsys):
    "`sample --max-new-tokens 10**9` ran for days without a word: one bound, in the library and the CLI."
    from gptcourse.kv_cache import generate_cached
    from gptcourse.train import generate

    want = (
        "max_new_tokens must be a whole number from 0 to 100,000 (a novel's worth: each token is a forward "
        "pass of the model), got 1000000000"
    )
    idx, m = torch.zeros(1, 1, dtype=torch.long), tiny_gpt()
    m.forward = lambda *a, **k: pytest.fail('a token was drawn')
    for draw in (lambda: generate(m, idx, 10**9), lambda: generate_cached(m, idx, 10**9)):
        with pytest.raises(ValueError, match=f'^{re.escape(want)}$'):
            draw()
    for cmd in ('sample', 'gpt2-sample', 'train'):
        line = one_line(capsys, cmd, '--max-new-tokens', 10**9, code=2)
        assert line == f'gptcourse {cmd}: error: argument --max-new-tokens: {want}', line
    from gptcourse.train import MAX_NEW_TOKENS

    assert MAX_NEW_TOKENS == 100_000 and generate(Model(), idx, MAX_NEW_TOKENS // 10_000).shape == (1, 11)
