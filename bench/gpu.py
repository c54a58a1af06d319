"""One command that checks the course on a GPU in one run, and writes what it saw to bench/results/.

    python bench/gpu.py              # on a CUDA machine: about 13 minutes on an H100 (measured 2026-11-25,
                                     # before lesson 14 and the side-by-side runs of refs/, below)
    python bench/gpu.py --only lesson07,chargpt            # 8.5 minutes on an H100: one call of at most 10
    python bench/gpu.py --only lesson20,gpt2train,sample   # 5 minutes on an H100 (2026-11-25)
    python bench/gpu.py --dry-run    # the same steps at toy sizes on this machine: what CI runs

The lessons run with `--keep-going`: every cell runs even after one fails, the report lists each failing cell,
and the executed notebooks are saved beside the report.

Steps, each timed; a failing step is reported and the others still run; the exit status is 1 if any failed:
1. the device, the versions, and the course's device policy for it (gptcourse.speed.device_policy);
2. the lessons whose cells check lecture-scale claims on a GPU (07: the lecture's char model to val <= 1.50;
   20: 300 steps of GPT-2 124M; 26: the modern configuration against the lecture's at its sizes, not yet run
   on a GPU), top to bottom in a real kernel at the `lecture` preset (dry run: `cpu`, where those cells say
   they skipped);
3. the three benchmarks at their GPU sizes (dry run: toy sizes): bench/chargpt.py, bench/gpt2train.py,
   bench/sample.py;
4. side by side with the lectures' own code, where a fetched copy sits in the git-ignored refs/ (else the
   report says skipped): bench/refs.py gptpy (ng-video-lecture's gpt.py vs the course, lecture char preset,
   500 steps) and bench/refs.py train_gpt2 (build-nanogpt's train_gpt2.py vs the course's trainer, B=16,
   T=1024). Not yet run on a GPU; `--only gptpy,train_gpt2` runs them alone. The report is written to
   `--out`/gpu-<device>-<date>.txt (default out: bench/results; dry run: a temporary folder)."""

from __future__ import annotations
import argparse, datetime, os, platform, re, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFS = {
    'gptpy': (
        'refs/ng-video-lecture/gpt.py',
        'https://github.com/karpathy/ng-video-lecture',
    ),  # never committed
    'train_gpt2': ('refs/build-nanogpt/train_gpt2.py', 'https://github.com/karpathy/build-nanogpt'),
}
DEVICE = r'''
import platform, torch
from gptcourse.speed import device_policy
from gptcourse.train import default_device
print('python', platform.python_version(), '| torch', torch.__version__, '| CUDA', torch.version.cuda)
dev = default_device()
if dev == 'cuda':
    print('device', torch.cuda.get_device_name(), '| capability', torch.cuda.get_device_capability(),
          '| memory', f'{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB')
else: print('device', dev, '(no CUDA)')
print('policy', device_policy(dev))
'''


def steps(dry: bool, out: Path | None = None) -> list[tuple[str, list[str], dict, int]]:
    """(name, command, extra environment, timeout in s) of every step; a name's first word is its key for
    --only."""
    py, preset = sys.executable, 'cpu' if dry else 'lecture'
    lesson_env = {'GPTCOURSE_PRESET': preset}
    keep = ['--keep-going'] + (
        ['--save', str(out)] if out else []
    )  # every failing cell, and the executed notebook
    return [
        ('device and versions', [py, '-c', DEVICE], {}, 120),
        ('lesson 07 (char GPT)', [py, '.ci/notebooks.py', 'run', *keep, '07'], lesson_env, 1500),
        ('lesson 20 (pretraining GPT-2)', [py, '.ci/notebooks.py', 'run', *keep, '20'], lesson_env, 1200),
        (
            'lesson 26 (after GPT-2: the ablation)',
            [py, '.ci/notebooks.py', 'run', *keep, '26'],
            lesson_env,
            1200,
        ),
        (
            'bench/chargpt.py',
            [py, 'bench/chargpt.py', '--preset', preset]
            + (['--steps', '40', '--warmup', '10', '--eval-iters', '5'] if dry else ['--steps', '200']),
            {},
            900,
        ),
        (
            'bench/gpt2train.py',
            [py, 'bench/gpt2train.py', '--preset', 'cpu' if dry else 'gpu']
            + (['--rounds', '2'] if dry else ['--compile']),
            {},
            900,
        ),
        (
            'bench/sample.py',
            [py, 'bench/sample.py']
            + (
                ['--small', '--new-tokens', '8', '--prompt-len', '4', '--repeat', '1', '--skip-uncached']
                if dry
                else ['--device', 'cuda', '--repeat', '3']
            ),
            {},
            900,
        ),
        (
            'bench/refs.py gptpy (the lecture\'s gpt.py side by side)',
            [py, 'bench/refs.py', 'gptpy'] + (['--dry-run'] if dry else []),
            {},
            900,
        ),
        (
            'bench/refs.py train_gpt2 (build-nanogpt\'s train_gpt2.py side by side)',
            [py, 'bench/refs.py', 'train_gpt2'] + (['--dry-run'] if dry else []),
            {},
            900,
        ),
    ]


def step_key(title: str) -> str:
    """'lesson 07 (char GPT)' -> 'lesson07', 'bench/chargpt.py' -> 'chargpt', 'bench/refs.py gptpy (...)' ->
    'gptpy', 'device and versions' -> 'device'."""
    if title.startswith('bench/refs.py'):
        return title.split()[1]
    if title.startswith('bench/'):
        return title[len('bench/') : -len('.py')]
    return title.split(' (')[0].replace(' ', '') if title.startswith('lesson') else title.split()[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dry-run', action='store_true', help='toy sizes on this machine (CPU is fine)')
    ap.add_argument(
        '--only',
        default=None,
        metavar='KEYS',
        help='comma-separated steps to run: device, lesson07, lesson20, lesson26, chargpt, gpt2train, '
        'sample, gptpy, train_gpt2 (default: all; the device step always runs)',
    )
    ap.add_argument(
        '--out',
        default=None,
        help='folder for the report (default: bench/results; dry run: a temporary folder)',
    )
    args = ap.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit('bench/gpu.py: no CUDA device here; run with --dry-run to check the steps on a CPU')
    name = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.dry_run else 'cpu-dry-run'
    out = (
        Path(args.out)
        if args.out
        else (Path(tempfile.mkdtemp()) if args.dry_run else ROOT / 'bench' / 'results')
    )
    out.mkdir(parents=True, exist_ok=True)
    today = datetime.date.today().isoformat()
    report = out / f'gpu-{re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()}-{today}.txt'
    lines = [
        f'# bench/gpu.py {" ".join(argv if argv is not None else sys.argv[1:])}',
        f'# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, {platform.node() or "?"}, '
        f'load {" ".join(f"{x:.2f}" for x in os.getloadavg())}',
        '',
    ]
    failed, chosen = (
        [],
        [
            st
            for st in steps(args.dry_run)
            if st[0] == 'device and versions' or args.only is None or step_key(st[0]) in args.only.split(',')
        ],
    )
    unknown = set(args.only.split(',') if args.only else ()) - {step_key(st[0]) for st in steps(args.dry_run)}
    if unknown:
        sys.exit(
            f'bench/gpu.py: unknown step {", ".join(sorted(unknown))}; the steps are '
            + ', '.join(step_key(st[0]) for st in steps(args.dry_run))
        )
    skipped = []
    for title, cmd, env, timeout in [
        st for st in steps(args.dry_run, out) if st[0] in {c[0] for c in chosen}
    ]:
        if args.dry_run and title.startswith(
            'lesson'
        ):  # each lesson runs once in the tests: at the cpu preset
            skipped.append(title)
            lines += [
                f'## {title}: skipped in the dry run (tests/test_notebooks.py runs it at the cpu preset)',
                '',
            ]
            print(lines[-2], flush=True)
            continue
        ref = REFS.get(step_key(title))
        if ref and not (ROOT / ref[0]).exists():
            skipped.append(title)
            lines += [
                f'## {title}: skipped, {ref[0]} not found (git clone {ref[1]} {Path(ref[0]).parent})',
                '',
            ]
            print(lines[-2], flush=True)
            continue
        t0 = time.perf_counter()
        try:
            r = subprocess.run(
                cmd, cwd=ROOT, env=dict(os.environ, **env), capture_output=True, text=True, timeout=timeout
            )
            ok, text = (
                r.returncode == 0,
                (r.stdout + ('\n' + r.stderr[-3000:] if r.returncode else '')).strip(),
            )
        except subprocess.TimeoutExpired:
            ok, text = False, f'timed out after {timeout} s'
        seconds = time.perf_counter() - t0
        if not ok:
            failed.append(title)
        shown = 'python -c <device script>' if cmd[1] == '-c' else 'python ' + ' '.join(cmd[1:])
        lines += [f'## {title}: {"passed" if ok else "FAILED"} in {seconds:.0f} s', f'$ {shown}', text, '']
        print(lines[-4], flush=True)
    lines += [
        f'# {len(failed)} of {len(chosen) - len(skipped)} steps failed'
        + (f': {", ".join(failed)}' if failed else '')
        + (f'; {len(skipped)} skipped' if skipped else '')
    ]
    report.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    print(f'wrote {report}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
