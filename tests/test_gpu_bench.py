"""bench/gpu.py, the one command a session lent a GPU runs first, works end to end: its dry run (toy sizes, this
machine) runs every step and writes a report."""
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_writes_a_report(tmp_path):
    r = subprocess.run([sys.executable, 'bench/gpu.py', '--dry-run', '--out', str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (report,) = tmp_path.glob('gpu-cpu-dry-run-*.txt')
    text = report.read_text()
    for step in ('device and versions', 'lesson 07', 'lesson 09', 'bench/chargpt.py', 'bench/gpt2train.py',
                 'bench/sample.py'):
        assert f'## {step}' in text and 'FAILED' not in text, (step, text[-2000:])
    assert '# 0 of 6 steps failed' in text and 'policy DevicePolicy(' in text
