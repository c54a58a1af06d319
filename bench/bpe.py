"""Seconds to train a BPE tokenizer: lesson 24's incremental trainer (`BasicTokenizer.train_incremental`)
against its naive trainer (`BasicTokenizer.train` with the same GPT-2 split) and minbpe's `RegexTokenizer`
(GPT-2's split pattern), on the same text and vocabulary size, in one process, one thread (all pure Python).

minbpe is never committed: fetch it into the git-ignored refs/ folder first.

    git clone https://github.com/karpathy/minbpe refs/minbpe
    python bench/bpe.py         # all of Tiny Shakespeare, vocab 2,048 (minbpe: about half an hour)
    python bench/bpe.py --chars 100000 --vocab-size 512 --rounds 1   # quick

Printed: each round's seconds (the trainers interleaved round by round, after one small warm-up run each),
the medians and their ratios; the merges compared (ours incremental vs ours naive must be identical: the same
split and tie-break; minbpe breaks ties by the pair seen first, ours by the larger pair, so the lists agree
up to the first tie they break differently); bytes per token of each tokenizer on its training text; and the
incremental trainer's time on 1/16, 1/4 and all of the text (the 1x, 4x, 16x sizes) with the exponent k of
time ~ size^k through the two ends. Each trainer's time includes splitting the text."""

from __future__ import annotations
import argparse, math, os, platform, statistics, subprocess, sys, time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from gptcourse.bpe import GPT2_PATTERN, BasicTokenizer  # noqa: E402
from gptcourse.data import tiny_shakespeare  # noqa: E402


def minbpe_trainer(path: Path):
    "A function `(text, vocab_size) -> tokenizer`: minbpe's RegexTokenizer, trained with GPT-2's pattern."
    if not (path / 'minbpe' / 'regex.py').exists():
        sys.exit(
            f'bench/bpe.py: minbpe is not in {path}: git clone https://github.com/karpathy/minbpe {path}'
        )
    sys.path.insert(0, str(path))
    from minbpe import RegexTokenizer
    from minbpe.regex import GPT2_SPLIT_PATTERN

    def train(text, vocab_size):
        tok = RegexTokenizer(GPT2_SPLIT_PATTERN)
        tok.train(text, vocab_size)
        return tok

    return train


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def compare_merges(name: str, ours: dict, theirs: dict) -> str:
    a, b = list(ours), list(theirs)
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if first is None and len(a) == len(b):
        return f'ours incremental vs {name}: all {len(a)} merges identical, in the same order'
    return (
        f'ours incremental vs {name}: {len(a)} vs {len(b)} merges; identical up to merge {first}; '
        f'{len(set(a) & set(b))} pairs in common'
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--chars', type=int, default=None, help='the first CHARS characters (default: all)')
    ap.add_argument('--vocab-size', type=int, default=2048, help='vocabulary size (default: 2048)')
    ap.add_argument('--rounds', type=int, default=3, help='interleaved rounds of ours (default: 3)')
    ap.add_argument('--minbpe-rounds', type=int, default=1, help='of them, rounds with minbpe (default: 1)')
    ap.add_argument('--skip-minbpe', action='store_true', help='time only our two trainers')
    ap.add_argument('--minbpe', type=Path, default=ROOT / 'refs' / 'minbpe', help='the minbpe checkout')
    args = ap.parse_args(argv)
    text = tiny_shakespeare()[: args.chars]
    v = args.vocab_size
    trainers = {
        'ours incremental': lambda t, n: BasicTokenizer().train_incremental(t, n),
        'ours naive': lambda t, n: BasicTokenizer().train(t, n, pattern=GPT2_PATTERN),
    }
    if not args.skip_minbpe:
        trainers['minbpe RegexTokenizer'] = minbpe_trainer(args.minbpe)
        ref = subprocess.run(
            ['git', '-C', str(args.minbpe), 'rev-parse', 'HEAD'], capture_output=True, text=True
        )
    print('# bench/bpe.py', *(argv if argv is not None else sys.argv[1:]))
    print(f'machine {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}')
    print(f'python {platform.python_version()} | regex {version("regex")}', end='')
    print(f' | minbpe {ref.stdout.strip()[:12]}' if not args.skip_minbpe else '')
    print('machine load before: {:.2f} {:.2f} {:.2f} (1/5/15-min load average)'.format(*os.getloadavg()))
    print(
        f'text: {len(text):,} characters ({len(text.encode()):,} bytes); vocabulary {v:,}, {v - 256:,} merges'
    )
    for train in trainers.values():
        train(text[:2000], 260)  # warm-up: compile the regex, fill caches
    seconds, toks = {k: [] for k in trainers}, {}
    for r in range(args.rounds):
        for name, train in trainers.items():
            if name.startswith('minbpe') and r >= args.minbpe_rounds:
                continue
            s, toks[name] = timed(train, text, v)
            seconds[name].append(s)
            print(f'  round {r + 1}: {name:22s} {s:9.2f} s', flush=True)
    med = {k: statistics.median(s) for k, s in seconds.items()}
    fast = med['ours incremental']
    for name, m in med.items():
        print(f'median {name:22s} {m:9.2f} s  ({m / fast:7.1f}x ours incremental; {len(seconds[name])} runs)')
    mine = toks['ours incremental'].merges
    print(compare_merges('ours naive', mine, toks['ours naive'].merges))
    if not args.skip_minbpe:
        print(compare_merges('minbpe', mine, toks['minbpe RegexTokenizer'].merges))
    n_bytes = len(text.encode())
    for name, tok in toks.items():
        n = len(tok.encode_ordinary(text) if name.startswith('minbpe') else tok.encode(text))
        print(f'bytes per token on the training text, {name:22s} {n_bytes / n:.4f} ({n:,} tokens)')
    sizes, times = [len(text) // 16, len(text) // 4, len(text)], []
    for size in sizes:
        runs = [timed(trainers['ours incremental'], text[:size], v)[0] for _ in range(args.rounds)]
        times.append(statistics.median(runs))
        print(f'ours incremental on {size:>10,} characters: median {times[-1]:.3f} s of {args.rounds}')
    k = math.log(times[-1] / times[0]) / math.log(sizes[-1] / sizes[0])
    print(
        f'time grows as size^{k:.2f} from 1x to 16x the text (x4: {times[1] / times[0]:.2f}, x16: '
        f'{times[2] / times[0]:.2f})'
    )
    print('machine load after: {:.2f} {:.2f} {:.2f}'.format(*os.getloadavg()))


if __name__ == '__main__':
    main()
