"""The course's structure: every lesson opens with its Colab badge and install cell, the home page lists every
lesson, and README.md is what nbs/index.ipynb makes."""

import json, subprocess, sys
from configparser import ConfigParser
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / 'nbs').glob('[0-9]*.ipynb'))
cfg = ConfigParser()
cfg.read(ROOT / 'settings.ini')
cfg = cfg['DEFAULT']


def cells(nb):
    return json.loads(nb.read_text(encoding='utf-8'))['cells']


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_opens_with_badge_and_colab_install(nb):
    cs = cells(nb)
    title = ''.join(cs[0]['source'])
    assert cs[0]['cell_type'] == 'markdown' and title.startswith('# ')
    badge = f"https://colab.research.google.com/github/{cfg['user']}/{cfg['repo']}/blob/{cfg['branch']}/nbs/{nb.name}"
    assert badge in title, f'{nb.name}: the first cell needs the Open-in-Colab badge linking {badge}'
    install = ''.join(cs[1]['source'])
    assert "'google.colab' in sys.modules" in install and 'pip' in install


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_is_in_the_index(nb):
    index = ''.join(''.join(c['source']) for c in cells(ROOT / 'nbs' / 'index.ipynb'))
    assert f'nbs/{nb.name}' in index, f'{nb.name} is missing from the lesson table of nbs/index.ipynb'


def test_readme_is_made_from_the_index():
    r = subprocess.run(
        [sys.executable, str(ROOT / '.ci' / 'readme.py'), '--check'], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


# The layout: one lesson, one concept, one module named after it; no lesson imports a later one.
import ast, re

PKG = ROOT / 'gptcourse'
EXPORTS = {}  # module -> the lesson that exports it
for nb in NOTEBOOKS:
    m = re.search(r'#\|\s*default_exp\s+(\w+)', '\n'.join(''.join(c['source']) for c in cells(nb)))
    if m:
        EXPORTS[m[1]] = nb.stem


def test_every_module_is_named_after_its_lesson_and_small():
    # besides the lessons' modules: the exercises' checks (nbs/exercises.ipynb), which the lessons call
    modules = {p.stem for p in PKG.glob('*.py')} - {'__init__', '_modidx', 'exercises'}
    assert modules == set(EXPORTS), modules ^ set(EXPORTS)
    for module, lesson in EXPORTS.items():
        assert lesson.split('_', 1)[1] == module, (lesson, module)
        # its code: not blank lines, nor nbdev's `# %%` marker of each cell (a lesson in short cells has more
        # of them)
        lines = sum(
            1
            for line in (PKG / f'{module}.py').read_text().splitlines()
            if line.strip() and not line.startswith('# %% ')
        )
        assert lines <= 400, (
            f'gptcourse/{module}.py has {lines} lines of code (at most 400: one concept a lesson)'
        )


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_no_lesson_is_a_code_base(nb):
    code = sum(
        1
        for c in cells(nb)
        if c['cell_type'] == 'code'
        for line in ''.join(c['source']).splitlines()
        if line.strip()
    )
    assert code <= 700, (
        f'{nb.name} has {code} lines of code, blank lines aside (at most 700, with checks and demos)'
    )


def test_no_module_imports_a_later_lesson_and_the_package_imports_none():
    order = {m: int(lesson[:2]) for m, lesson in EXPORTS.items()}
    for module, n in order.items():
        tree = ast.parse((PKG / f'{module}.py').read_text())
        used = {
            a.module.split('.')[-1]
            for a in ast.walk(tree)
            if isinstance(a, ast.ImportFrom) and a.module and (a.level or a.module.startswith('gptcourse'))
        } & set(order)
        later = {u for u in used if order[u] > n}
        assert not later, f'gptcourse/{module}.py (lesson {n:02d}) imports later lessons: {sorted(later)}'
    init = ast.parse((PKG / '__init__.py').read_text())
    assert not [a for a in ast.walk(init) if isinstance(a, (ast.Import, ast.ImportFrom))], (
        'gptcourse/__init__.py'
    )


def test_importing_the_data_lesson_imports_no_later_lesson():
    r = subprocess.run(
        [
            sys.executable,
            '-c',
            "import gptcourse.data, sys; print(sorted(m for m in sys.modules if m.startswith('gptcourse.')))",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and r.stdout.strip() == "['gptcourse.data']", r.stdout + r.stderr


def test_lesson_02_knows_nothing_of_gpus_checkpoints_or_many_processes():
    text = (PKG / 'train.py').read_text()
    for word in ('DistributedDataParallel', 'GradScaler', 'sdpa', 'cuda.get_rng_state', 'safetensors'):
        assert word not in text, word


def test_functions_take_few_parameters_and_the_first_lectures_tools_fewest():
    "A function a reader takes in at one look: at most 8 parameters anywhere, `fit` 6 and `generate` 7."
    counts = {}
    for path in PKG.glob('*.py'):
        if path.name == '_modidx.py':
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ('self', 'cls')]
                counts[f'{path.stem}.{node.name}'] = len(names)
    assert counts['train.fit'] <= 6 and counts['train.generate'] <= 7, (
        counts['train.fit'],
        counts['train.generate'],
    )
    assert not {k: v for k, v in counts.items() if v > 8}, {k: v for k, v in counts.items() if v > 8}


def test_no_name_read_from_a_file_is_imported():
    """Stored names become classes only by lookup among classes a program passes (lesson 16): no importlib
    anywhere."""
    assert not [p.name for p in PKG.glob('*.py') if 'importlib' in p.read_text() and p.name != '_modidx.py']


def test_the_model_configuration_is_gpt2s_and_the_lectures_switches_only():
    from dataclasses import fields
    from gptcourse.gpt2 import GPTConfig

    assert len(fields(GPTConfig)) <= 12, [f.name for f in fields(GPTConfig)]


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_a_lesson_is_at_most_60_cells_before_its_exercises(nb):
    "Longer, and a lesson splits where the thought turns (its exercises, after `## Exercises`, not counted)."
    cs = cells(nb)
    ends = [
        i
        for i, c in enumerate(cs)
        if c['cell_type'] == 'markdown' and ''.join(c['source']).startswith('## Exercises')
    ]
    assert (ends[0] if ends else len(cs)) <= 60, f'{nb.name} has {ends[0] if ends else len(cs)} cells'
