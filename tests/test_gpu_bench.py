"""bench/gpu.py, the one command a session lent a GPU runs first, works end to end: its dry run (toy sizes,
this machine) runs every step and writes a report."""

import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_writes_a_report(tmp_path):
    r = subprocess.run(
        [sys.executable, 'bench/gpu.py', '--dry-run', '--out', str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (report,) = tmp_path.glob('gpu-cpu-dry-run-*.txt')
    text = report.read_text()
    for step in (
        'device and versions',
        'lesson 07',
        'lesson 20',
        'bench/chargpt.py',
        'bench/gpt2train.py',
        'bench/sample.py',
    ):
        assert f'## {step}' in text and 'FAILED' not in text, (step, text[-2000:])
    assert '# 0 of ' in text and 'policy DevicePolicy(' in text
    for ref in ('gptpy', 'train_gpt2'):  # run where refs/ holds the lectures' code, else said to be skipped
        assert f'## bench/refs.py {ref} ' in text, text[-2000:]


def test_gpu_check_runs_only_the_steps_asked_for(tmp_path):
    """A GPU call may run 10 minutes: `--only` splits the check; an unknown step is one line naming the real
    ones."""
    r = subprocess.run(
        [sys.executable, 'bench/gpu.py', '--dry-run', '--only', 'lesson7'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0 and 'unknown step lesson7' in r.stderr and 'lesson07, lesson20' in r.stderr, (
        r.stderr
    )
    r = subprocess.run(
        [sys.executable, 'bench/gpu.py', '--dry-run', '--only', 'sample', '--out', str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = next(tmp_path.glob('gpu-*.txt')).read_text()
    assert (
        '## device and versions' in text and '## bench/sample.py: passed' in text and 'lesson 07' not in text
    )
    assert '# 0 of 2 steps failed' in text
