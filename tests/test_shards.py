"""Lesson 11 beyond its notebook: `prepare` never loses or mixes shards (a refused source, a killed run,
another prepare at the same time, an unfinished prepare of something else), reads the lecture's FineWeb-Edu
through the hub (from a hub cache filled here: no internet). The loader's own tests are in test_loader.py."""

import hashlib, json, os, re, subprocess, sys, time
import numpy as np
import pyarrow as pa, pyarrow.parquet as pq
import pytest
from gptcourse.files import folder_lock
from gptcourse.pretrained import EOT, gpt2_tokenizer
from gptcourse.loader import DataLoaderLite, read_split
from gptcourse.shards import PROGRESS, prepare


def test_prepare_never_loses_shards(tmp_path):
    out = tmp_path / 'shards'
    (tmp_path / 'empty.txt').write_text('  \n')
    (tmp_path / 'latin1.txt').write_bytes('café'.encode('latin-1'))
    (tmp_path / 'good.txt').write_text('To be, or not to be, that is the question. ' * 50)
    prepare(tmp_path / 'good.txt', out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match='empty.txt is empty'):
        prepare(tmp_path / 'empty.txt', out, progress=False, overwrite=True)
    with pytest.raises(ValueError, match='latin1.txt is not UTF-8 text'):
        prepare(tmp_path / 'latin1.txt', out, progress=False, overwrite=True)
    with pytest.raises(ValueError, match='already holds files: pass --overwrite'):
        prepare(tmp_path / 'good.txt', out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['empty.txt', 'good.txt', 'latin1.txt', 'shards']
    m = prepare(tmp_path / 'good.txt', out, progress=False, overwrite=True, val_frac=0.2)
    assert m['splits']['val'][0]['tokens'] > 0 and sorted(p.name for p in out.iterdir()) == sorted(before)


def test_a_killed_overwrite_leaves_the_old_shards_whole(tmp_path):
    "prepare --overwrite killed while it tokenizes: the old folder is exactly as it was, and still loads."
    out = tmp_path / 'shards'
    (tmp_path / 'a.txt').write_text('First text. ' * 200)
    prepare(tmp_path / 'a.txt', out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    big = tmp_path / 'big'
    big.mkdir()
    for i in range(400):
        (big / f'{i:03d}.txt').write_text(f'Document {i}. ' * 3000)
    p = subprocess.Popen(
        [
            sys.executable,
            '-c',
            f'from gptcourse.shards import prepare; '
            f'prepare({str(big)!r}, {str(out)!r}, overwrite=True, progress=False)',
        ]
    )
    for _ in range(600):  # it holds the folder: now it tokenizes, for seconds
        if (tmp_path / '.shards.lock').exists():
            break
        time.sleep(0.05)
    p.kill()
    p.wait()
    assert {q.name: q.read_bytes() for q in out.iterdir() if q.name != '.lock'} == before  # its lock: no data
    DataLoaderLite(out, 2, 8).next_batch()


def test_two_prepares_into_one_folder(tmp_path):
    "While one prepare holds a folder, another is refused at once."
    out = tmp_path / 'shards'
    with folder_lock(tmp_path / '.shards.lock', 'prepare'):
        r = subprocess.run(
            [sys.executable, '-c', f'from gptcourse.shards import prepare; prepare(None, {str(out)!r})'],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode != 0 and 'FolderBusy' in r.stderr and 'in use by another prepare' in r.stderr
    assert not out.exists()


@pytest.mark.parametrize('where', ['file', 'under_a_file'])
def test_prepare_into_a_file_is_one_error_and_leaves_nothing(tmp_path, where):
    (tmp_path / 'f').write_text('x')
    out = tmp_path / 'f' if where == 'file' else tmp_path / 'f' / 'shards'
    with pytest.raises((ValueError, OSError)):
        prepare(None, out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['f']


def test_bad_arguments_are_refused(tmp_path):
    docs = tmp_path / 'docs'
    docs.mkdir()
    (docs / 'a.txt').write_text('First document.')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no such file or folder'):
        prepare(tmp_path / 'nope', tmp_path / 'x')
    with pytest.raises(ValueError, match='holds no .txt, .jsonl or .parquet files'):
        prepare(tmp_path / 'empty', tmp_path / 'x')
    with pytest.raises(ValueError, match=r'val_frac must be in \[0, 1\)'):
        prepare(docs, tmp_path / 'x', val_frac=1.5)


def test_a_million_spaces_are_tokenized_not_a_panic(tmp_path):
    "tiktoken overflows its stack on such a run (a panic, not an exception); prepare tokenizes it in pieces."
    from gptcourse.pretrained import gpt2_tokenizer
    from gptcourse.shards import encode

    enc = gpt2_tokenizer()
    (tmp_path / 'spaces.txt').write_text('Once' + ' ' * 1_000_000 + 'upon a time.')
    m = prepare(tmp_path / 'spaces.txt', tmp_path / 'out', val_frac=0.0, progress=False)
    ids = read_split(tmp_path / 'out', 'train').tolist()
    assert m['splits']['train'][0]['tokens'] == len(ids)
    assert enc.decode(ids[1:]) == (tmp_path / 'spaces.txt').read_text()
    assert encode(enc, 'an ordinary  text').tolist() == enc.encode_ordinary('an ordinary  text')
    assert encode(enc, 'not <|endoftext|> special').tolist() == enc.encode_ordinary(
        'not <|endoftext|> special'
    )


def _hub_cache(root, texts_per_file):
    "A hub cache as huggingface_hub lays it out, holding a stand-in for FineWeb-Edu's sample-10BT."
    repo, rev = root / 'datasets--HuggingFaceFW--fineweb-edu', '0' * 40
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(rev)
    for sub, texts in texts_per_file.items():
        (repo / 'snapshots' / rev / sub).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({'text': texts, 'score': [1.0] * len(texts)}), repo / 'snapshots' / rev / sub)


def _prepare_in(env_extra, *args):
    code = (
        'import json; from gptcourse.shards import prepare; '
        f'print(json.dumps(prepare(*{args!r}, progress=False)))'
    )

    return subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, HF_HUB_OFFLINE='1', **env_extra),
    )


def test_fineweb_edu_by_name_through_the_hub_cache(tmp_path):
    """The lecture's source by name: its files found through huggingface_hub (here offline, in a cache made
    here)."""
    texts = [f'Document {i}: ' + 'the quick brown fox. ' * (i * 7 % 50 + 1) for i in range(30)]
    _hub_cache(
        tmp_path / 'hub',
        {
            'sample/10BT/000_00000.parquet': texts[:20],
            'sample/10BT/001_00000.parquet': texts[20:],
            'sample/100BT/000_00000.parquet': ['not this sample'],
        },
    )
    r = _prepare_in(
        {'HF_HUB_CACHE': str(tmp_path / 'hub')}, 'fineweb-edu-10B', str(tmp_path / 'fw'), 0.1, 500
    )
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout)
    assert (
        m['files']
        == [
            'hub:HuggingFaceFW/fineweb-edu:sample/10BT/000_00000.parquet',
            'hub:HuggingFaceFW/fineweb-edu:sample/10BT/001_00000.parquet',
        ]
        and m['documents'] == 30
    )
    enc = gpt2_tokenizer()
    want = [t for d in texts for t in [EOT] + enc.encode_ordinary(d)]
    assert np.concatenate([read_split(tmp_path / 'fw', s) for s in ('train', 'val')]).tolist() == want
    r = _prepare_in({'HF_HUB_CACHE': str(tmp_path / 'empty')}, 'fineweb-edu-10B', str(tmp_path / 'fw2'))
    assert r.returncode != 0 and 'not in the local hub cache: this source needs the internet' in r.stderr
    assert not (tmp_path / 'fw2').exists() and not (tmp_path / '.fw2.partial').exists()


def _digest_of(documents: list[str]) -> list:
    "What a progress file records of a file whose `documents` were read: their number and blake2b digest."
    h = hashlib.blake2b(digest_size=16)
    for d in documents:
        b = d.encode()
        h.update(b'%d:' % len(b) + b)
    return [len(documents), h.hexdigest()]


def test_an_unfinished_prepare_of_another_source_is_kept_unless_asked(tmp_path):
    "A .partial folder holds work: another source is refused without --overwrite; a changed source too."
    a, b = tmp_path / 'a', tmp_path / 'b'
    for d in (a, b):
        d.mkdir()
    for i in range(4):
        (a / f'{i}.txt').write_text(f'Text number {i}. ' * 200)
        (b / f'{i}.txt').write_text('B. ' * 300)
    out, partial = tmp_path / 'out', tmp_path / '.out.partial'
    full = prepare(a, tmp_path / 'full', shard_size=100, progress=False)
    partial.mkdir()  # a's prepare, stopped after its first 3 shards
    state = dict(
        format='gptcourse-shards-2',
        tokenizer='gpt2',
        source=str(a),
        shard_size=100,
        files=full['files'],
        digests=[_digest_of([(a / '0.txt').read_text()])],  # file 0: read, in part in its shards
        shards=full['shards'][:3],
        position=[0, 0, 300],
    )
    for s in state['shards']:
        (partial / s['file']).write_bytes((tmp_path / 'full' / s['file']).read_bytes())
    (partial / PROGRESS).write_text(json.dumps(state))
    with pytest.raises(ValueError, match=f'holds an unfinished prepare of {a}: pass --overwrite'):
        prepare(b, out, shard_size=100, progress=False)
    with pytest.raises(ValueError, match='holds an unfinished prepare'):
        prepare(a, out, shard_size=50, progress=False)
    (a / '0.txt').rename(a / '00.txt')  # the file it was reading is gone
    with pytest.raises(ValueError, match='changed since the unfinished prepare'):
        prepare(a, out, shard_size=100, progress=False)
    (a / '00.txt').rename(a / '0.txt')
    assert (
        prepare(a, out, shard_size=100, progress=False) == full
    )  # the same source: it goes on, to the same end
    assert not partial.exists()


def test_parquet_is_read_in_bounded_memory(tmp_path):
    """A Parquet source is read one row group at a time: pyarrow's memory peaks at about one group, not the
    file."""
    texts = [
        f'Document {i}: ' + 'a few words of text, ' * 500 for i in range(2000)
    ]  # ~21 MB in 20 row groups
    pq.write_table(pa.table({'text': texts}), tmp_path / 'c.parquet', row_group_size=100, compression='none')
    code = (
        'import pyarrow as pa\nfrom gptcourse.shards import documents\n'
        f'n = sum(1 for _ in documents({str(tmp_path / "c.parquet")!r}))\n'
        'print(n, pa.default_memory_pool().max_memory())'
    )
    n, peak = map(
        int,
        subprocess.run(
            [sys.executable, '-c', code], capture_output=True, text=True, check=True
        ).stdout.split(),
    )
    group = sum(
        map(len, texts[:100])
    )  # ~1 MB; read over all 20 groups at once, pyarrow peaks at ~40 of these
    assert n == 2000 and peak < 8 * group, (peak, group)


def test_the_progress_bar_counts_documents_and_files_and_says_the_time_left(tmp_path, capsys):
    for i in range(3):
        (tmp_path / f'{i}.txt').write_text(f'Text number {i}. ' * 2000)
    prepare(tmp_path, tmp_path.parent / f'{tmp_path.name}-out', workers=1)
    bar = capsys.readouterr().err.replace('\r', '\n')
    assert '3 documents, file 3/3, about 00:00 left]' in bar.splitlines()[-1], bar[-800:]  # its last refresh


def test_a_progress_file_that_is_not_ours_starts_afresh(tmp_path):
    """An unreadable-in-shape progress.json is no state to go on from: prepare starts again and ends where it
    should."""
    src = tmp_path / 'a.txt'
    src.write_text('Some text to tokenize. ' * 300)
    full = prepare(src, tmp_path / 'full', shard_size=100, progress=False)
    partial = tmp_path / '.out.partial'
    partial.mkdir()
    (partial / PROGRESS).write_text(
        json.dumps({'format': 'gptcourse-shards-2', 'shards': 'three', 'position': 7})
    )
    assert prepare(src, tmp_path / 'out', shard_size=100, progress=False) == full


def _stopped_mid_swap(tmp_path):
    """A prepare --overwrite of b.txt stopped between its two renames, over a folder of a.txt's shards: the
    old folder aside (`.shards.old-PID`), the finished new one still `.shards.partial`."""
    out = tmp_path / 'shards'
    (tmp_path / 'a.txt').write_text('First text. ' * 200)
    (tmp_path / 'b.txt').write_text('Second text, another one. ' * 300)
    prepare(tmp_path / 'a.txt', out, progress=False)
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    prepare(tmp_path / 'b.txt', tmp_path / 'b', progress=False)
    new = {p.name: p.read_bytes() for p in (tmp_path / 'b').iterdir()}
    os.replace(out, tmp_path / '.shards.old-999999')
    os.replace(tmp_path / 'b', tmp_path / '.shards.partial')
    return out, old, new


def test_a_swap_stopped_halfway_is_finished_by_the_same_command(tmp_path, monkeypatch):
    out, old, new = _stopped_mid_swap(tmp_path)
    monkeypatch.setattr('gptcourse.shards._write', lambda *a: pytest.fail('tokenized again'))
    m = prepare(tmp_path / 'b.txt', out, progress=False, overwrite=True)  # the finished shards are swapped in
    assert {p.name: p.read_bytes() for p in out.iterdir()} == new and m['source'] == str(tmp_path / 'b.txt')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.txt', 'b.txt', 'shards']  # none hidden, no lock


def test_a_swap_stopped_halfway_gives_the_old_folder_back(tmp_path):
    out, old, new = _stopped_mid_swap(tmp_path)
    with pytest.raises(ValueError, match='already holds files'):  # without --overwrite: the old shards, kept
        prepare(tmp_path / 'a.txt', out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old
    assert not list(tmp_path.glob('.shards.old-*'))


def test_a_rerun_after_a_kill_leaves_no_lock_behind(tmp_path):
    "A killed prepare leaves its lock folder; the next prepare into that folder removes it when it is done."
    (tmp_path / '.shards.lock').mkdir()
    (tmp_path / '.shards.lock' / '.lock').write_text('prepare (pid 999999 on gone)')  # its process is dead
    (tmp_path / 'a.txt').write_text('First text. ' * 200)
    prepare(tmp_path / 'a.txt', tmp_path / 'shards', progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.txt', 'shards']
    assert '.lock' not in [p.name for p in (tmp_path / 'shards').iterdir()]


def test_overwrite_refuses_a_folder_a_run_is_using(tmp_path):
    "prepare --overwrite of a folder a training run holds: refused, the run's files untouched."
    out = tmp_path / 'shards'
    (tmp_path / 'a.txt').write_text('First text. ' * 200)
    prepare(tmp_path / 'a.txt', out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code = 'from gptcourse.files import folder_lock; import time\n'
    code += f'with folder_lock({str(out)!r}, "training run"): print(1, flush=True); time.sleep(600)'
    holder = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == '1\n'
        with pytest.raises(RuntimeError, match='in use by another training run'):
            prepare(tmp_path / 'a.txt', out, progress=False, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != '.lock'} == before


def test_a_parquet_text_column_that_is_not_text_is_one_error(tmp_path):
    "Integers where the text should be: refused by name before a token is made (it was a TypeError)."
    pq.write_table(pa.table({'text': [1, 2, 3]}), tmp_path / 'ints.parquet')
    with pytest.raises(ValueError, match='ints.parquet: its text column holds int64, not text'):
        prepare(tmp_path / 'ints.parquet', tmp_path / 'out', progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ints.parquet']  # nothing left behind
    large = pa.table({'text': pa.array(['one two three'] * 3, pa.large_string())})  # the hub's usual type
    pq.write_table(large, tmp_path / 'l.parquet')
    assert prepare(tmp_path / 'l.parquet', tmp_path / 'out', progress=False, val_frac=0.0)['documents'] == 3


def _same_size_and_time(f, old: str, new: str):
    "Edit the file `f` in place, `old` to `new` once, keeping its size, then put its modification time back."
    st = f.stat()
    f.write_text(f.read_text().replace(old, new, 1))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_a_resumed_prepare_refuses_a_file_edited_to_the_same_size_and_time(tmp_path, monkeypatch):
    """Stopped in its second file, then a file it had read edited in place to the same size and its time
    put back (`os.utime`): the same command went on silently, its shards a mix of the old and the new text.
    What it read is now read again and compared by digest; what it had not read yet may change."""
    from gptcourse import shards

    src = tmp_path / 'src'
    src.mkdir()
    for i in range(3):
        docs = [f'Document {j} of file {i}: the quick brown fox jumps. ' * 3 for j in range(40)]
        (src / f'{i}.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in docs))
    kw = dict(shard_size=200, workers=1, progress=False)
    save = shards._save

    def stopped_in_file_1(state, partial, tokens, position):  # as by a kill: no clean-up
        save(state, partial, tokens, position)
        if position[0] == 1 and position[1] >= 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(shards, '_save', stopped_in_file_1)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, tmp_path / 'out', **kw)
    monkeypatch.setattr(shards, '_save', save)
    changed = f'the files of {src} changed since the unfinished prepare'
    for f in (src / '0.jsonl', src / '1.jsonl'):  # read to its end; read as far as the position
        _same_size_and_time(f, 'quick', 'QUICK')
        with pytest.raises(ValueError, match=changed):
            prepare(src, tmp_path / 'out', **kw)
        _same_size_and_time(f, 'QUICK', 'quick')  # as it was again
    line = json.dumps({'text': 'A document added at the end.'}) + '\n'
    before = (src / '0.jsonl').read_bytes()
    (src / '0.jsonl').write_text(before.decode() + line)  # to a file it had read to its end: a change
    with pytest.raises(ValueError, match=changed):
        prepare(src, tmp_path / 'out', **kw)
    (src / '0.jsonl').write_bytes(before)
    (src / '1.jsonl').write_text((src / '1.jsonl').read_text() + line)  # after what it read: it goes on
    resumed = prepare(src, tmp_path / 'out', **kw)
    assert resumed == prepare(src, tmp_path / 'fresh', **kw) and resumed['documents'] == 121
    for s in resumed['shards']:
        assert (tmp_path / 'out' / s['file']).read_bytes() == (tmp_path / 'fresh' / s['file']).read_bytes()


def test_prepare_refuses_more_workers_than_the_process_limit_leaves(tmp_path):
    """--workers 300 under a process limit (ulimit -u) of 200: forking stopped at the limit and prepare hung
    (as root, which the limit does not bind, it forked all 300). It is refused before a process is started,
    and the default number of workers stays within the limit."""
    import resource

    src = tmp_path / 'a.txt'
    src.write_text('Some text to tokenize. ' * 100)
    code = (
        'import os\n'
        'os.cpu_count = lambda: 100  # 4 a core would allow 400 workers\n'
        'from gptcourse.shards import _settings, prepare\n'
        'print(_settings(0.1, 100, None))\n'
        f'prepare({str(src)!r}, {str(tmp_path / "out")!r}, workers=300, progress=False)\n'
    )
    r = subprocess.run(
        [sys.executable, '-c', code],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NPROC, (200, 200)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, f'it ran, with 300 worker processes: {r.stdout}{r.stderr[-2000:]}'
    last = r.stderr.strip().splitlines()[-1]
    want = (
        r'ValueError: workers must be a whole number from 1 to (\d+) \(this user\'s process limit, ulimit -u '
        r'200, less (\d+) threads it runs\), got 300'
    )
    m = re.fullmatch(want, last)
    assert m and int(m[1]) == max(200 - int(m[2]), 1), last
    assert 1 <= int(r.stdout) <= int(m[1])  # the default: one a core, within the limit
    assert not (tmp_path / 'out').exists() and not list(tmp_path.glob('.out.*'))
