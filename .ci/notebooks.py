"""Run the lessons as a reader does: each notebook top to bottom ("Run All") in a real Jupyter kernel.

    python .ci/notebooks.py run [NB ...]     # run, and fail on the first error (what the tests do)
    python .ci/notebooks.py write [NB ...]   # run, and save the outputs into the notebooks (then nbdev_clean)
    python .ci/notebooks.py run --keep-going --save DIR 07   # run every cell even past a failure, list the
                                             # failures, and keep the executed notebook in DIR (bench/gpu.py)
    python .ci/notebooks.py check            # every lesson's outputs are there, made from its current code

`write` is the one command that regenerates what a reader sees on GitHub, Colab's preview and in Jupyter. It
records in each code cell's metadata the sha256 of the source that made its outputs (`gptcourse.source`), and
in the first code cell's the sha256 of the package modules the lesson imports, directly or through other
modules (`gptcourse.library`), so that `check` (and tests/test_notebooks.py) can tell when a cell, or the code
of an earlier lesson it runs, was edited without running the notebook again. Progress bars are kept as their
last line only. The last, hidden cell of every lesson (`nbdev_export`) is not run: it writes the package,
which the tests must not do behind the consistency check's back."""

from __future__ import annotations
import hashlib, os, re, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'
PKG = ROOT / 'gptcourse'
KEY = 'gptcourse'  # the cell-metadata key nbdev_clean keeps (settings.ini: allowed_cell_metadata_keys)
PLOTS = re.compile(r'\bplt\.|\.plot\(|imshow\(|\.bar\(')


def lessons(names=()) -> list[Path]:
    found = sorted(NBS.glob('[0-9]*.ipynb'))
    if not names:
        return found
    pick = [p for p in found if any(p.stem.startswith(n) or p.name == n or str(p) == n for n in names)]
    if not pick:
        sys.exit(f'no lesson matches {" ".join(names)}; the lessons are {", ".join(p.stem for p in found)}')
    return pick


def source_digest(source: str) -> str:
    return hashlib.sha256(source.encode('utf-8')).hexdigest()[:16]


def imported_modules(nb) -> list[str]:
    """The package modules a notebook's code imports, directly or through the modules they import (`from .x
    import`), its own module (`#| default_exp`) left out: its code is in the cells."""
    code = '\n'.join(c.source for c in nb.cells if c.cell_type == 'code')
    own = set(re.findall(r'^#\|\s*default_exp\s+(\w+)', code, re.M))
    todo, seen = set(re.findall(r'\bgptcourse\.(\w+)', code)), set()
    while todo:
        name = todo.pop()
        if name in seen or not (PKG / f'{name}.py').exists():
            continue
        seen.add(name)
        text = (PKG / f'{name}.py').read_text(encoding='utf-8')
        todo |= set(re.findall(r'^from \.(\w+) import', text, re.M))
    return sorted(seen - own - {'_modidx'})


def library_digest(nb) -> str:
    """sha256 of the package modules `nb` runs (`imported_modules`): what its outputs depend on besides its
    own cells."""
    return source_digest(
        ''.join(f'# {m}\n' + (PKG / f'{m}.py').read_text(encoding='utf-8') for m in imported_modules(nb))
    )


def is_export_call(cell) -> bool:
    return cell.cell_type == 'code' and 'nbdev_export()' in cell.source


def _last_lines(text: str) -> str:
    "A stream as a terminal would leave it: each line only what follows its last carriage return."
    return '\n'.join(line.rsplit('\r', 1)[-1] for line in text.split('\n'))


def _coalesce(outputs: list) -> list:
    """Consecutive writes to the same stream as one output, each line as a terminal leaves it (a progress bar:
    its end)."""
    out = []
    for o in outputs:
        same_stream = out and out[-1].get('output_type') == 'stream' and out[-1].get('name') == o.get('name')
        if o.get('output_type') == 'stream' and same_stream:
            out[-1]['text'] += o['text']
        else:
            out.append(o)
    for o in out:
        if o.get('output_type') == 'stream':
            o['text'] = _last_lines(o['text'])
    return out


def execute(path: Path, timeout: int = 900, keep_going: bool = False) -> nbformat.NotebookNode:
    """The notebook at `path` run top to bottom in a fresh python3 kernel, in nbs/ (as Jupyter runs it); the
    preset is $GPTCOURSE_PRESET or the machine's default. `keep_going`: run every cell even after one fails
    (see `errors`)."""
    nb = nbformat.read(path, as_version=4)
    skipped = {i: c for i, c in enumerate(nb.cells) if is_export_call(c)}
    for i in skipped:
        nb.cells[i] = nbformat.v4.new_markdown_cell('')  # placeholders, put back below
    hidden = {
        k: os.environ.pop(k) for k in ('IN_TEST', 'MPLBACKEND') if k in os.environ
    }  # the kernel inherits
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name='python3',
        resources={'metadata': {'path': str(NBS)}},
        allow_errors=keep_going,
    )  # os.environ: inline plots
    try:
        client.execute()
    finally:
        os.environ.update(hidden)
    for i, c in skipped.items():
        nb.cells[i] = c
    for c in nb.cells:
        if c.cell_type != 'code':
            continue
        c.outputs = _coalesce(c.get('outputs', []))
        c.metadata[KEY] = {'source': source_digest(c.source)}
    first = next(c for c in nb.cells if c.cell_type == 'code')
    first.metadata[KEY]['library'] = library_digest(nb)
    return nb


def errors(nb) -> list[str]:
    "One line for each code cell of an executed notebook that raised: its number, first line and the error."
    code = [c for c in nb.cells if c.cell_type == 'code']
    return [
        f'code cell {i} ({c.source.strip().splitlines()[0][:60]!r}): {o.get("ename")}: '
        + re.sub(r'\x1b\[[0-9;]*m', '', str(o.get('evalue')))[:300]
        for i, c in enumerate(code)
        for o in c.get('outputs', [])
        if o.get('output_type') == 'error'
    ]


def problems(path: Path) -> list[str]:
    "What is wrong with the committed outputs of one lesson: missing, stale, a plot without its picture."
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == 'code' and c.source.strip() and not is_export_call(c)]
    out = []
    if not any(c.get('outputs') for c in code):
        out.append(f'{path.name}: no cell has an output')
    first = next(c for c in nb.cells if c.cell_type == 'code')
    if first.metadata.get(KEY, {}).get('library') != library_digest(nb):
        out.append(
            f'{path.name}: the package modules it runs ({", ".join(imported_modules(nb))}) changed since its '
            'outputs were made'
        )
    for i, c in enumerate(code):
        made_from = c.metadata.get(KEY, {}).get('source')
        if made_from != source_digest(c.source):
            first = c.source.strip().splitlines()[0][:60]
            out.append(
                f'{path.name}: code cell {i} ({first!r}) was {"edited" if made_from else "never run"} '
                'since its outputs were made'
            )
        skipped = any(o.get('text', '').startswith('skipped:') for o in c.get('outputs', []))
        if (
            PLOTS.search(c.source)
            and not c.source.lstrip().startswith('#| export')
            and not skipped
            and not any('image/png' in o.get('data', {}) for o in c.get('outputs', []))
        ):
            out.append(f'{path.name}: code cell {i} plots but holds no picture')
    return out


def main(argv):
    if not argv or argv[0] not in ('run', 'write', 'check'):
        sys.exit(__doc__)
    cmd, names = argv[0], argv[1:]
    keep_going, save = '--keep-going' in names, None  # run only: every cell, and save the run to a folder
    if '--save' in names:
        save = Path(names[names.index('--save') + 1])
        names.remove(str(save))
        names.remove('--save')
    names = [n for n in names if n != '--keep-going']
    if (keep_going or save) and cmd != 'run':
        sys.exit('--keep-going and --save go with run only')
    if cmd == 'check':
        bad = [p for nb in lessons(names) for p in problems(nb)]
        print('\n'.join(bad) or 'every lesson holds outputs made from its current code')
        return 1 if bad else 0
    failed = 0
    for path in lessons(names):
        t0 = time.perf_counter()
        nb = execute(path, keep_going=keep_going)
        if cmd == 'write':
            nbformat.write(nb, path)
        if save:
            save.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, save / path.name)
        print(
            f'{path.name}: ran in {time.perf_counter() - t0:.0f} s'
            + (', outputs saved' if cmd == 'write' else ''),
            flush=True,
        )
        for line in errors(nb):
            print(f'{path.name}: FAILED {line}', flush=True)
            failed += 1
    if cmd == 'write':
        import subprocess

        subprocess.run(['nbdev_clean'], cwd=ROOT, check=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
