"""The course's structure: every lesson opens with its Colab badge and install cell, the home page
lists every lesson, and README.md is what nbs/index.ipynb makes."""
import json, subprocess, sys
from configparser import ConfigParser
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT/'nbs').glob('[0-9]*.ipynb'))
cfg = ConfigParser(); cfg.read(ROOT/'settings.ini'); cfg = cfg['DEFAULT']

def cells(nb): return json.loads(nb.read_text(encoding='utf-8'))['cells']

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
    index = ''.join(''.join(c['source']) for c in cells(ROOT/'nbs'/'index.ipynb'))
    assert f'nbs/{nb.name}' in index, f'{nb.name} is missing from the lesson table of nbs/index.ipynb'

def test_readme_is_made_from_the_index():
    r = subprocess.run([sys.executable, str(ROOT/'.ci'/'readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
