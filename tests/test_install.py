"""The lessons run from a plain install: a fresh virtual environment with only `pip install
<checkout>[lessons]` (the extra that each lesson's first cell installs on Colab) and a Jupyter kernel imports
everything every lesson imports. The dev extra (pytest, nbdev, ...) is not there, so a lesson that imported a
test-only package would fail here."""

import ast, json, shutil, subprocess, sys, venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / 'nbs').glob('[0-9][0-9]_*.ipynb'))


def lesson_imports(nb: Path) -> list[str]:
    "Every top-level import statement of the lesson's code cells, as source."
    found = []
    for cell in json.loads(nb.read_text(encoding='utf-8'))['cells']:
        if cell['cell_type'] != 'code':
            continue
        src = ''.join(cell['source'])
        lines = [line for line in src.splitlines() if not line.lstrip().startswith(('%', '!'))]
        for node in ast.parse('\n'.join(lines)).body:
            if (
                isinstance(node, (ast.Import, ast.ImportFrom))
                and getattr(node, 'module', None) != '__future__'
            ):
                found.append(ast.unparse(node))
    return found


def test_every_lesson_installs_the_lessons_extra_first():
    for nb in LESSONS:
        first = next(
            c for c in json.loads(nb.read_text(encoding='utf-8'))['cells'] if c['cell_type'] == 'code'
        )
        assert "'gptcourse[lessons] @ git+https://github.com/gptcourse/gptcourse'" in ''.join(
            first['source']
        ), nb.name


def test_the_imports_are_found_by_this_reader():
    "The reader sees the imports a lesson makes: lesson 09 imports transformers, lesson 07 fastcore.test."
    assert 'from transformers import GPT2Config, GPT2LMHeadModel' in lesson_imports(
        ROOT / 'nbs' / '09_pretrained.ipynb'
    )
    assert 'from fastcore.test import test_fail' in lesson_imports(ROOT / 'nbs' / '07_chargpt.ipynb')


def test_a_plain_install_with_the_lessons_extra_runs_every_lessons_imports(tmp_path):
    src = tmp_path / 'checkout'  # a copy: building in the checkout would leave build/ and *.egg-info in it
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            '.git', '.venv', 'runs', 'refs', 'data', 'build', '*.egg-info', '__pycache__', '_proc', '_docs'
        ),
    )
    env_dir = tmp_path / 'venv'
    venv.create(env_dir, with_pip=True)
    py = env_dir / ('Scripts' if sys.platform == 'win32' else 'bin') / 'python'
    pip = lambda *a: subprocess.run(
        [py, '-m', 'pip', 'install', '-q', *a], capture_output=True, text=True, timeout=900
    )
    import torch

    r = pip(f'torch=={torch.__version__.split("+")[0]}')  # this machine's build: here the CPU one, not CUDA's
    assert r.returncode == 0, r.stderr[-3000:]
    r = pip(f'{src}[lessons]', 'ipykernel')  # ipykernel: what any notebook runs in (IPython, lesson 28)
    assert r.returncode == 0, r.stderr[-3000:]
    listed = subprocess.run([py, '-m', 'pip', 'list', '--format=json'], capture_output=True, text=True).stdout
    names = {p['name'].lower() for p in json.loads(listed)}
    assert 'gptcourse' in names and not {'pytest', 'nbdev', 'hypothesis'} & names, sorted(
        names
    )  # no dev extra
    failed = []
    for nb in LESSONS:
        code = '\n'.join(lesson_imports(nb))
        r = subprocess.run([py, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        if r.returncode:
            failed.append(f'{nb.name}: {r.stderr.strip().splitlines()[-1]}')
    assert not failed, '\n'.join(failed)
