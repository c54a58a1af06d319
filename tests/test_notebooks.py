"""Every notebook is a test: it runs top to bottom and its asserts hold.

Cells flagged with a test flag from settings.ini (`gpu`, `hub`) are skipped unless
`GPTCOURSE_TEST_FLAGS` names them, e.g. `GPTCOURSE_TEST_FLAGS=gpu python -m pytest tests`.
"""
import os
from pathlib import Path
import pytest
import nbdev.test as nbdev_test  # the module, not `test_nb` itself, or pytest would collect it
from nbdev.config import get_config

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT/'nbs').glob('[0-9]*.ipynb'))

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook(nb, monkeypatch):
    monkeypatch.chdir(ROOT)
    skip = get_config(path=ROOT).tst_flags.split()
    force = os.environ.get('GPTCOURSE_TEST_FLAGS', '').split()
    ok, seconds = nbdev_test.test_nb(nb, skip_flags=skip, force_flags=force)
    assert ok, f'{nb.name} failed (its traceback is printed above)'
