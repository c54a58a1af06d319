"""Every lesson is a test, run the way a reader runs it: top to bottom ("Run All") in a real Jupyter kernel
(`.ci/notebooks.py`), with its asserts. Offline and on a CPU, the cells that need the hub or a GPU check for
it themselves and say what they skipped; on a GPU machine they run.

And what a reader sees is current: every lesson holds outputs, every plot its picture, each made from the
cell's present code (`python .ci/notebooks.py write` regenerates them)."""

import importlib.util
from pathlib import Path
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('ci_notebooks', ROOT / '.ci' / 'notebooks.py')
nbrun = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbrun)
LESSONS = nbrun.lessons()


@pytest.mark.parametrize('nb', LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_in_a_kernel(nb):
    nbrun.execute(nb)  # raises CellExecutionError, with the cell and its traceback, at the first failing cell


@pytest.mark.parametrize('nb', LESSONS, ids=lambda p: p.stem)
def test_outputs_are_current(nb):
    assert not nbrun.problems(nb), '\n'.join(
        nbrun.problems(nb) + ['run `python .ci/notebooks.py write` and commit']
    )


def test_the_staleness_check_sees_an_edit(tmp_path):
    "A code cell edited after its outputs were made, and a plot whose picture is gone, are both reported."
    nb = nbformat.read(ROOT / 'nbs' / '07_chargpt.ipynb', as_version=4)
    code = [c for c in nb.cells if c.cell_type == 'code' and not nbrun.is_export_call(c)]
    plot = next(
        c
        for c in code
        if nbrun.PLOTS.search(c.source) and any('image/png' in o.get('data', {}) for o in c.outputs)
    )
    code[3].source += '\nx = 1'
    plot.outputs = []
    path = tmp_path / '07_chargpt.ipynb'
    nbformat.write(nb, path)
    found = nbrun.problems(path)
    assert any('was edited since its outputs were made' in p for p in found), found
    assert any('plots but holds no picture' in p for p in found), found


def test_keep_going_lists_every_failing_cell(tmp_path, monkeypatch):
    """`run --keep-going` (what bench/gpu.py uses on a GPU) runs past a failing cell and names each one that
    failed."""
    nbs = tmp_path / 'nbs'
    nbs.mkdir()
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(s)
            for s in ('x = 1', 'assert x == 2, "planted"', 'y = x + 1', 'assert y == 2', '1 / 0')
        ]
    )
    nbformat.write(nb, nbs / '99_planted.ipynb')
    monkeypatch.setattr(nbrun, 'NBS', nbs)
    done = nbrun.execute(nbs / '99_planted.ipynb', keep_going=True)
    errs = nbrun.errors(done)
    assert len(errs) == 2 and 'AssertionError: planted' in errs[0] and 'ZeroDivisionError' in errs[1], errs
    assert done.cells[3].get('outputs') == []  # the cells after the first failure ran (y == 2 held)


def test_the_staleness_check_sees_a_change_in_the_modules_a_lesson_runs(tmp_path, monkeypatch):
    """Lesson 21's outputs depend on lesson 08's module (gptcourse.gpt2), not on lesson 26's: an edit of
    gpt2.py is reported, one of modern.py is not."""
    import shutil

    pkg = tmp_path / 'gptcourse'
    shutil.copytree(ROOT / 'gptcourse', pkg, ignore=shutil.ignore_patterns('__pycache__'))
    monkeypatch.setattr(nbrun, 'PKG', pkg)
    lesson = ROOT / 'nbs' / '21_kv_cache.ipynb'
    assert not nbrun.problems(lesson)
    (pkg / 'modern.py').write_text((pkg / 'modern.py').read_text() + '\nx = 1\n')
    assert not nbrun.problems(lesson)
    (pkg / 'gpt2.py').write_text((pkg / 'gpt2.py').read_text() + '\nx = 1\n')
    assert any('package modules it runs' in p and 'gpt2' in p for p in nbrun.problems(lesson)), (
        nbrun.problems(lesson)
    )
