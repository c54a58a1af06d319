"""Build the course's website from the committed notebooks, offline, into a folder that loads nothing from
elsewhere.

    npm ci --prefix docs     # once: MathJax, pinned in docs/package-lock.json (the one non-Python part)
    python .ci/site.py       # writes _site/; open _site/index.html in a browser
    python .ci/site.py --out DIR

Pages: the home page (the index notebook's text, as the README), every lesson in reading order with its
committed outputs (nothing is executed), the exercises' solutions (each folded behind a toggle), and one API
page per module, made by autodoc from the package's
docstrings. Sphinx with myst-nb renders them with the Furo theme (docs/conf.py says why each setting is
there)."""

from __future__ import annotations
import argparse, json, os, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATHJAX = ROOT / 'docs' / 'node_modules' / 'mathjax' / 'es5' / 'tex-svg.js'
sys.path.insert(0, str(ROOT / '.ci'))


def lessons() -> list[Path]:
    "The lesson notebooks in reading order."
    return sorted(ROOT.glob('nbs/[0-9][0-9]_*.ipynb'))


def modules() -> list[str]:
    "The package's modules, in the order of the lessons that export them."
    from gptcourse._modidx import d

    names = [m for m in d['syms'] if m != 'gptcourse']
    order = {}
    for i, nb in enumerate(lessons()):
        for m in re.findall(r'#\|\s*default_exp\s+(\S+)', nb.read_text(encoding='utf-8')):
            order[f'gptcourse.{m}'] = i
    return sorted(names, key=lambda m: (order.get(m, len(order)), m))


def home() -> str:
    "The home page: the index notebook's markdown (the README), its lesson links pointed at the site's pages."
    from readme import HEADER, render

    text = render().removeprefix(HEADER)
    text = re.sub(r'\]\(nbs/([0-9][0-9]_[a-z0-9_]+|solutions)\.ipynb\)', r'](\1.ipynb)', text)
    toc = '\n'.join(nb.stem for nb in lessons())
    return (
        f'{text}\n\n```{{toctree}}\n:hidden:\n:caption: Lessons\n\n{toc}\n```\n\n'
        '```{toctree}\n:hidden:\n:caption: Practice\n\nsolutions\n```\n\n'
        '```{toctree}\n:hidden:\n:caption: Reference\n\napi/index\n```\n'
    )


def api_pages(src: Path):
    (src / 'api').mkdir()
    mods = modules()
    (src / 'api' / 'index.md').write_text(
        '# API reference\n\nThe package `gptcourse`, one module per lesson, from its docstrings '
        'and signatures.\n\n'
        '```{toctree}\n:maxdepth: 1\n\n' + '\n'.join(mods) + '\n```\n',
        encoding='utf-8',
    )
    for m in mods:
        (src / 'api' / f'{m}.md').write_text(
            f'# `{m}`\n\n```{{eval-rst}}\n.. automodule:: {m}\n```\n', encoding='utf-8'
        )


DIRECTIVE = re.compile(r'^#\|\s*(\w+)')  # nbdev's `#| export`, `#| hide`, `#| default_exp NAME`


def undirected(cell: dict):
    """A code cell as the reader is meant to see it: nbdev's directives say what to hide (`#| hide`, and the
    `#| default_exp` cell, which only names the module: myst-nb's `remove-cell` tag), and no directive line is
    shown."""
    lines = ''.join(cell['source']).split('\n')
    said = {m[1] for line in lines if (m := DIRECTIVE.match(line))}
    if said & {'hide', 'default_exp'}:
        cell.setdefault('metadata', {}).setdefault('tags', []).append('remove-cell')
    cell['source'] = '\n'.join(line for line in lines if not DIRECTIVE.match(line)).lstrip('\n')


def unattached(nb: Path) -> str:
    """The notebook with its figures shown from their SVG files in `figures/` rather than from the PNGs
    attached to its cells (nbs/figures/make.py): sharp at any size, and served once instead of inside every
    page; and without nbdev's directives (`undirected`)."""
    doc = json.loads(nb.read_text(encoding='utf-8'))
    for cell in doc['cells']:
        if cell['cell_type'] == 'code':
            undirected(cell)
        if cell.pop('attachments', None):
            cell['source'] = [
                re.sub(r'\]\(attachment:([\w-]+)\.png\)', r'](figures/\1.svg)', line)
                for line in cell['source']
            ]
    return json.dumps(doc, ensure_ascii=False)


def solutions() -> str:
    """The solutions notebook with every answer folded away (myst-nb's `hide-input` tag: a toggle that shows
    the code when clicked), so that the page gives an answer only when asked."""
    doc = json.loads((ROOT / 'nbs' / 'solutions.ipynb').read_text(encoding='utf-8'))
    for cell in doc['cells']:
        if cell['cell_type'] == 'code':
            cell.setdefault('metadata', {}).setdefault('tags', []).append('hide-input')
    return json.dumps(doc, ensure_ascii=False)


def build(out: Path, quiet: bool = True) -> Path:
    if not MATHJAX.is_file():
        sys.exit(
            f'.ci/site.py: {MATHJAX.relative_to(ROOT)} is missing: run `npm ci --prefix docs` once (MathJax, '
            'pinned in docs/package-lock.json)'
        )
    with tempfile.TemporaryDirectory() as work:  # the staged sources: notebooks, home and API pages
        src, static = Path(work) / 'src', Path(work) / 'static'
        src.mkdir()
        (static / 'mathjax').mkdir(parents=True)
        shutil.copy(MATHJAX, static / 'mathjax' / 'tex-svg.js')
        for nb in lessons():
            (src / nb.name).write_text(unattached(nb), encoding='utf-8')
        (src / 'solutions.ipynb').write_text(solutions(), encoding='utf-8')
        shutil.copytree(
            ROOT / 'nbs' / 'figures', src / 'figures', ignore=shutil.ignore_patterns('*.py', '__pycache__')
        )
        (src / 'index.md').write_text(home(), encoding='utf-8')
        api_pages(src)
        out = Path(out).resolve()
        cmd = [
            sys.executable,
            '-m',
            'sphinx',
            '-b',
            'html',
            '-c',
            str(ROOT / 'docs'),
            '-W',
            '--keep-going',
            '-E',
            '-d',
            str(Path(work) / 'doctrees'),
            *(['-q'] if quiet else []),
            str(src),
            str(out),
        ]
        shutil.rmtree(out, ignore_errors=True)
        r = subprocess.run(cmd, env=dict(os.environ, GPTCOURSE_SITE_STATIC=str(static)))
    if r.returncode:
        sys.exit(f'.ci/site.py: sphinx-build failed (exit {r.returncode}); its messages are above')
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=str(ROOT / '_site'), help='the site folder (default: _site)')
    ap.add_argument('--verbose', action='store_true', help="Sphinx's progress messages")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = build(Path(args.out), quiet=not args.verbose)
    pages = sum(1 for _ in out.rglob('*.html'))
    print(f'{pages} pages in {out} ({time.perf_counter() - t0:.0f} s): open {out / "index.html"}')


if __name__ == '__main__':
    main()
