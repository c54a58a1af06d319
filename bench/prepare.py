"""Token shards from a Parquet corpus: `gptcourse prepare` against build-nanogpt's `fineweb.py`, side by side.

The reference is never committed: fetch it into the git-ignored refs/ folder first.

    git clone https://github.com/karpathy/build-nanogpt refs/build-nanogpt
    python bench/prepare.py                      # 1x and 4x corpora, 2 rounds, a process per core
    python bench/prepare.py --mb 8 --rounds 1    # quick

The corpus: one local Parquet file with a `text` column, made here from Tiny Shakespeare (documents of 1 to 60
consecutive paragraphs, drawn with a fixed seed, until it holds `--mb` megabytes of text), and a second one
four times larger made the same way. Both programs read it with pyarrow's `iter_batches`, one row group at a
time, so what differs is what happens after reading: tokenizing, moving tokens between processes, filling and
writing shards.

build-nanogpt's `fineweb.py` runs as written (per-document `encode_ordinary` in a `multiprocessing.Pool` with
`imap(chunksize=16)`, an `int64` array per document converted to `uint16`, shards of `shard_size` tokens)
except for four patches: the documents come from the local Parquet file instead of `datasets.load_dataset`,
the output folder, the shard size, and the process count. `gptcourse prepare` runs as a user runs it, through
the command line, with `--workers` set to the same process count. Each run is timed as a whole command
(start-up included) and its memory is the peak of the proportional set size (PSS: shared pages counted once
across processes) of its whole process tree, sampled every 20 ms. The two token streams (the shards
concatenated in order) must be identical.

Throughput is printed two ways: tokens over each whole command's median seconds, and the marginal rate, the 4x
corpus's extra tokens over its extra seconds, in which start-up (ours imports PyTorch with the package: about
1.5 s here) cancels out; the marginal rate is what a corpus of billions of tokens sees. The CPU seconds of
each process tree are printed too: on a shared machine they vary less than wall seconds.

The shard size is 1M tokens unless `--shard-size` says otherwise: the question "does memory grow with the
corpus?" needs corpora of several shards, and with the lecture's 100M-token shards that means corpora of
gigabytes."""

from __future__ import annotations
import argparse, json, os, platform, resource, statistics, subprocess, sys, tempfile, threading, time
from pathlib import Path

import numpy as np

from refs import patch  # bench/refs.py: a reference script with its patches, each matching exactly once

ROOT = Path(__file__).resolve().parent.parent
FINEWEB_PY = ROOT / 'refs' / 'build-nanogpt' / 'fineweb.py'


def make_corpus(path: Path, megabytes: float, text: str, seed: int = 0) -> tuple[int, int]:
    "A Parquet file of documents made of runs of consecutive paragraphs of `text`; (documents, characters)."
    import pyarrow as pa, pyarrow.parquet as pq

    paras, rng = text.split('\n\n'), np.random.default_rng(seed)
    docs, size, target = [], 0, int(megabytes * 1e6)
    while size < target:
        start, n = int(rng.integers(len(paras))), int(rng.integers(1, 61))
        doc = '\n\n'.join(paras[start : start + n])
        docs.append(doc)
        size += len(doc)
    pq.write_table(
        pa.table({'text': docs, 'id': [f'doc-{i}' for i in range(len(docs))]}), path, row_group_size=1000
    )
    return len(docs), size


def reference_script(corpus: Path, out: Path, shard_size: int, procs: int) -> str:
    "build-nanogpt's fineweb.py, reading `corpus` and writing `out`, with `procs` processes."
    local = (
        f'import pyarrow.parquet as _pq\n'
        f'_f = _pq.ParquetFile({str(corpus)!r})\n'
        f'fw = ({{"text": t}} for g in range(_f.num_row_groups) for b in _f.iter_batches(batch_size=1024, '
        f'row_groups=[g], columns=["text"]) for t in b.column(0).to_pylist())'
    )
    return patch(
        FINEWEB_PY.read_text(),
        [
            (r'^from datasets import load_dataset.*$', ''),
            (r'^fw = load_dataset\(.*$', local),
            (r'^DATA_CACHE_DIR = .*$', f'DATA_CACHE_DIR = {str(out)!r}'),
            (r'^shard_size = .*$', f'shard_size = {shard_size}'),
            (r'^nprocs = .*$', f'nprocs = {procs}'),
        ],
        'fineweb.py',
    )


def tiktoken_cache(folder: Path) -> Path:
    """A tiktoken cache holding GPT-2's two files, copied from the course's checksummed copies, so that the
    reference's `tiktoken.get_encoding("gpt2")` works offline (tiktoken checks their sha256 as it reads them).
    """
    import hashlib, shutil
    from gptcourse.data import gpt2_files

    folder.mkdir(exist_ok=True)
    for f in gpt2_files():
        url = f'https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/{Path(f).name}'
        shutil.copy(f, folder / hashlib.sha1(url.encode()).hexdigest())
    return folder


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float, int]:
    """Run `cmd`; its wall seconds, the CPU seconds of its process tree and the tree's peak PSS in bytes
    (exits with its stderr on failure)."""
    import psutil

    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
    )
    peak, done = 0, threading.Event()

    def sample():
        nonlocal peak
        root = psutil.Process(p.pid)
        while not done.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for q in procs:
                try:
                    total += q.memory_full_info().pss
                except psutil.Error:
                    pass
            peak = max(peak, total)
            done.wait(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    err = p.communicate()[1]
    wall = time.perf_counter() - t0
    done.set()
    t.join()
    cpu1 = resource.getrusage(
        resource.RUSAGE_CHILDREN
    )  # the workers, reaped by their parent, are counted in it
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    if p.returncode:
        sys.exit(f'bench/prepare.py: {" ".join(map(str, cmd[:3]))} ... failed:\n{err[-3000:]}')
    return wall, cpu, peak


def ours_stream(folder: Path) -> np.ndarray:
    m = json.loads((folder / 'manifest.json').read_text())
    return np.concatenate([np.load(folder / s['file']) for s in m['shards']])


def reference_stream(folder: Path) -> np.ndarray:
    files = sorted(folder.glob('edufineweb_*.npy'), key=lambda f: int(f.stem.rsplit('_', 1)[1]))
    return np.concatenate([np.load(f) for f in files])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--mb', type=float, default=40, help='megabytes of text in the 1x corpus (default: 40)')
    ap.add_argument(
        '--rounds', type=int, default=2, help='interleaved rounds; medians are printed (default: 2)'
    )
    ap.add_argument(
        '--procs',
        type=int,
        default=os.cpu_count() or 1,
        help='processes for both: Pool(procs) and --workers procs (default: one per core)',
    )
    ap.add_argument(
        '--shard-size', type=int, default=1_000_000, help='tokens per shard for both (default: 1M)'
    )
    args = ap.parse_args(argv)
    if min(args.rounds, args.procs, args.shard_size) < 1 or args.mb <= 0:
        sys.exit('bench/prepare.py: --mb must be > 0; --rounds, --procs and --shard-size >= 1')
    if not FINEWEB_PY.is_file():
        sys.exit(
            f'bench/prepare.py: {FINEWEB_PY} is missing: git clone https://github.com/karpathy/build-nanogpt '
            f'{FINEWEB_PY.parent}'
        )
    import psutil, pyarrow, tiktoken
    from gptcourse.data import tiny_shakespeare

    gptcourse = Path(sys.executable).parent / 'gptcourse'

    print(f'# bench/prepare.py {" ".join(sys.argv[1:] if argv is None else argv)}')
    print(
        f'machine: {platform.machine()}, {os.cpu_count()} cores, '
        f'{psutil.virtual_memory().total / 2**30:.0f} GiB | '
        f'python {platform.python_version()} | tiktoken {tiktoken.__version__} | pyarrow '
        f'{pyarrow.__version__} | '
        f'numpy {np.__version__}'
    )
    ref_commit = subprocess.run(
        ['git', 'rev-parse', 'HEAD'], cwd=FINEWEB_PY.parent, capture_output=True, text=True
    ).stdout.strip()
    print(f'reference: build-nanogpt fineweb.py at {ref_commit or "(not a git checkout)"}')
    print(
        f'{args.procs} processes each, shards of {args.shard_size:,} tokens, {args.rounds} interleaved rounds'
    )
    print(f'machine load before: {" ".join(f"{x:.2f}" for x in os.getloadavg())} (1/5/15-min load average)')
    text = tiny_shakespeare()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes = {}
        for k in (1, 4):
            corpus = tmp / f'corpus-{k}x.parquet'
            n_docs, n_chars = make_corpus(corpus, args.mb * k, text)
            sizes[k] = corpus
            print(
                f'corpus {k}x: {n_docs:,} documents, {n_chars / 1e6:.1f} M characters, '
                f'{corpus.stat().st_size / 1e6:.1f} MB of Parquet'
            )
        results, cache = {}, tiktoken_cache(tmp / 'tiktoken')
        for r in range(args.rounds):
            for k, corpus in sizes.items():
                order = ('ours', 'build-nanogpt') if r % 2 == 0 else ('build-nanogpt', 'ours')
                for who in order:
                    out = tmp / f'{who}-{k}x'
                    if who == 'ours':
                        cmd = [
                            str(gptcourse),
                            'prepare',
                            '--src',
                            str(corpus),
                            '--out',
                            str(out),
                            '--workers',
                            str(args.procs),
                            '--shard-size',
                            str(args.shard_size),
                            '--no-progress',
                            '--overwrite',
                        ]
                    else:
                        out.mkdir(exist_ok=True)
                        for f in out.glob('*.npy'):
                            f.unlink()
                        script = tmp / 'fineweb.py'
                        script.write_text(reference_script(corpus, out, args.shard_size, args.procs))
                        cmd = [sys.executable, str(script)]
                    wall, cpu, peak = run(
                        cmd, tmp, None if who == 'ours' else {'TIKTOKEN_CACHE_DIR': str(cache)}
                    )
                    results.setdefault((who, k), []).append((wall, cpu, peak))
                    print(
                        f'  round {r + 1}: {who:13s} {k}x  {wall:7.2f} s  {cpu:7.2f} CPU s  peak '
                        f'{peak / 2**20:7.1f} MiB',
                        flush=True,
                    )
        for k in sizes:
            a, b = ours_stream(tmp / f'ours-{k}x'), reference_stream(tmp / f'build-nanogpt-{k}x')
            same = a.shape == b.shape and np.array_equal(a, b)
            print(
                f'token streams {k}x: {"identical" if same else "DIFFERENT"} ({len(a):,} vs '
                f'{len(b):,} tokens)'
            )
            if not same:
                sys.exit('bench/prepare.py: the two programs made different tokens; no ratio is printed')
            sizes[k] = len(a)
    med = {key: tuple(map(statistics.median, zip(*v))) for key, v in results.items()}  # (wall, cpu, peak)
    for k, tokens in sizes.items():
        for who in ('ours', 'build-nanogpt'):
            wall, cpu, peak = med[who, k]
            print(
                f'{who:13s} {k}x: {tokens / wall / 1e6:6.2f} M tokens/s  ({wall:.2f} s median, '
                f'{cpu:.2f} CPU s)  '
                f'peak {peak / 2**20:7.1f} MiB median'
            )
    for k in sizes:
        print(
            f'throughput ratio {k}x (ours / build-nanogpt), whole commands: '
            f'{med["build-nanogpt", k][0] / med["ours", k][0]:.2f}x'
        )
    # the extra tokens of the 4x corpus over the extra seconds: start-up (imports, the pool) cancels out
    marginal = {
        who: (sizes[4] - sizes[1]) / (med[who, 4][0] - med[who, 1][0]) for who in ('ours', 'build-nanogpt')
    }
    for who, rate in marginal.items():
        print(
            f'{who:13s} marginal: {rate / 1e6:6.2f} M tokens/s (4x minus 1x: the rate once '
            f'started, as on a large '
            f'corpus)'
        )
    print(
        f'throughput ratio, marginal (ours / build-nanogpt): '
        f'{marginal["ours"] / marginal["build-nanogpt"]:.2f}x'
    )
    cpu_rate = {
        who: (sizes[4] - sizes[1]) / (med[who, 4][1] - med[who, 1][1]) for who in ('ours', 'build-nanogpt')
    }
    print(
        f'CPU cost, marginal: ours {1e9 / cpu_rate["ours"]:.0f} CPU s per billion tokens, build-nanogpt '
        f'{1e9 / cpu_rate["build-nanogpt"]:.0f}: ratio {cpu_rate["ours"] / cpu_rate["build-nanogpt"]:.2f}x '
        f'(less sensitive to other load on the machine than seconds)'
    )
    for who in ('ours', 'build-nanogpt'):
        print(f'memory growth {who}: peak at 4x / peak at 1x = {med[who, 4][2] / med[who, 1][2]:.2f}')
    print(f'machine load after: {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
    return med


if __name__ == '__main__':
    main()
