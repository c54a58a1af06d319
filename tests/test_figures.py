"""The lessons' diagrams: every image a lesson's markdown shows is a file in the repository, described by its
alt text, and carried by its cell as an attached PNG drawn with that file (so that a notebook opened alone, as
Colab opens one, shows it); and nbs/figures/make.py draws each of its figures again with the same words in it
(the SVGs keep text as text, so a changed label, or a figure the script no longer makes, shows here and in a
diff)."""

import base64, hashlib, io, json, re, subprocess, sys
import xml.etree.ElementTree as ET
from pathlib import Path
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'
IMAGE = re.compile(r'!\[([^\]]*)\]\(([^)\s]+)\)')
SVG = '{http://www.w3.org/2000/svg}'


def markdown_images():
    "(notebook, alt text, source, the cell's attachments) of every image a markdown cell shows."
    for nb in sorted(NBS.glob('*.ipynb')):
        for cell in json.loads(nb.read_text(encoding='utf-8'))['cells']:
            if cell['cell_type'] == 'markdown':
                for alt, src in IMAGE.findall(''.join(cell['source'])):
                    yield nb.name, alt, src, cell.get('attachments')


def words(svg: Path) -> list[str]:
    return [t.text for t in ET.parse(svg).getroot().iter(f'{SVG}text') if t.text]


def test_every_image_a_lesson_shows_is_a_described_file_of_the_repository():
    local = [i for i in markdown_images() if not i[2].startswith('https://colab.research')]
    assert len(local) >= 10, local
    for nb, alt, src, attached in local:
        assert src.startswith('attachment:') and src.endswith('.png'), (
            nb,
            src,
        )  # Colab has no files beside it
        svg = NBS / 'figures' / (src.removeprefix('attachment:').removesuffix('.png') + '.svg')
        assert svg.is_file(), (nb, src)
        png = Image.open(io.BytesIO(base64.b64decode(attached[src.removeprefix('attachment:')]['image/png'])))
        assert png.format == 'PNG' and min(png.size) >= 200, (nb, src, png.size)
        assert png.text.get('Source') == hashlib.sha256(svg.read_bytes()).hexdigest(), (
            f'{nb}: the picture attached as {src} was not drawn with {svg.name}: run `python '
            f'nbs/figures/make.py`'
        )
        assert len(alt.split()) >= 12, (nb, src, alt)  # alt text that describes it
    shown = {src.removeprefix('attachment:').removesuffix('.png') + '.svg' for _, _, src, _ in local}
    assert shown == {p.name for p in (NBS / 'figures').glob('*.svg')}, shown  # and every figure is shown


def test_the_figures_are_what_make_py_draws(tmp_path):
    subprocess.run(
        [sys.executable, str(NBS / 'figures' / 'make.py'), '--out', str(tmp_path)],
        check=True,
        capture_output=True,
    )
    made = sorted(p.name for p in tmp_path.glob('*.svg'))
    assert made == sorted(p.name for p in (NBS / 'figures').glob('*.svg'))
    for name in made:
        assert words(tmp_path / name) == words(NBS / 'figures' / name), name
    assert 'is_causal=True' in ' '.join(words(tmp_path / 'kv_cache_cases.svg'))
