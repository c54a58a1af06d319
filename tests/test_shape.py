"""The shape of a lesson, as a reader meets it: prose in pieces read at once, code cells seen whole, something
to look at every few cells, the diagrams where the lesson introduces their idea, and no code wrapped by a past
line-length pass. Counted in the committed notebooks, so a later change cannot slide back. (That every image a
lesson shows is a file of the repository, with alt text, is tests/test_figures.py.)

- a markdown cell: at most 180 words of prose (image alt text, link targets, code blocks and display math not
  counted);
- a code cell: at most 30 lines that are not blank and not an nbdev `#|` directive;
- results: among any three code cells in a row (cells hidden by `#| hide` or holding only directives left
  out), at least one shows a result: printed text, a value, a table or a plot;
- wrapping: no string literal split into a piece shorter than 16 characters (the layout of calls and lists is
  ruff format's)."""

import io, json, re, tokenize
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / 'nbs').glob('[0-9]*.ipynb'))
MAX_WORDS, MAX_LINES, WINDOW, MIN_PIECE = 180, 30, 3, 16
DIAGRAMS = {
    '03': ['causal_weights'],
    '04': ['qkv_shapes'],
    '05': ['heads'],
    '06': ['block_residual'],
    '07': ['chargpt'],
    '09': ['gpt2_modules'],
    '14': ['lr_schedule'],
    '15': ['ddp_timeline'],
    '21': ['kv_cache_cases'],
    '25': ['bpe_tree'],
}
VISIBLE = {'stream', 'execute_result', 'display_data'}


def words(markdown: str) -> int:
    text = re.sub(r'!\[[^\]]*\]\([^)]*\)', ' ', markdown)  # an image's alt text is not prose to read
    text = re.sub(r'\]\([^)]*\)', ']', text)  # a link's target
    text = re.sub(r'```.*?```|\$\$.*?\$\$', ' ', text, flags=re.S)  # code blocks, display math
    return len(re.findall(r"[A-Za-z0-9][\w'’.-]*", text))


def lines(code: str) -> int:
    return sum(1 for line in code.split('\n') if line.strip() and not line.startswith('#|'))


def hidden(code: str) -> bool:
    "A cell the reader is not shown (`#| hide`), or one that holds only nbdev directives (`#| default_exp`)."
    return bool(re.search(r'^#\|\s*hide\b', code, re.M)) or lines(code) == 0


def shows(cell) -> bool:
    return any(o.get('output_type') in VISIBLE for o in cell.get('outputs', []))


def longest_dark_run(cells) -> tuple[int, str]:
    "The most code cells in a row without a visible result, and the id of the first of them."
    best, run, first, at = 0, 0, '', ''
    for c in cells:
        if c['cell_type'] != 'code' or hidden(''.join(c['source'])):
            continue
        if shows(c):
            run = 0
            continue
        run += 1
        if run == 1:
            first = c.get('id', '?')
        if run > best:
            best, at = run, first
    return best, at


def wraps(code: str) -> list[str]:
    """Wrapping that no formatter did: a string split into a tiny piece. (How a call or a list is laid out
    over lines is ruff format's, which .ci/run keeps: one argument a line where they do not fit on one.)"""
    found, src = [], code.split('\n')
    python = '\n'.join('' if line.lstrip().startswith(('!', '%')) else line for line in src)  # shell, magics
    toks = [
        t
        for t in tokenize.generate_tokens(io.StringIO(python).readline)
        if t.type not in (tokenize.NL, tokenize.COMMENT)
    ]
    for a, b in zip(toks, toks[1:]):
        if a.type == b.type == tokenize.STRING and min(len(a.string), len(b.string)) < MIN_PIECE:
            found.append(f'a string split into a tiny piece: {a.string} {b.string}')
    return found


def cells(nb: Path):
    return json.loads(nb.read_text(encoding='utf-8'))['cells']


@pytest.mark.parametrize('nb', LESSONS, ids=lambda p: p.stem)
def test_a_lesson_reads_in_short_cells_with_results_to_see(nb):
    cs = cells(nb)
    long_md = [
        (c.get('id'), words(''.join(c['source'])))
        for c in cs
        if c['cell_type'] == 'markdown' and words(''.join(c['source'])) > MAX_WORDS
    ]
    assert not long_md, f'markdown cells over {MAX_WORDS} words (id, words): {long_md}'
    long_code = [
        (c.get('id'), lines(''.join(c['source'])))
        for c in cs
        if c['cell_type'] == 'code' and lines(''.join(c['source'])) > MAX_LINES
    ]
    assert not long_code, f'code cells over {MAX_LINES} lines (id, lines): {long_code}'
    run, at = longest_dark_run(cs)
    assert run < WINDOW, f'{run} code cells in a row from cell {at} show nothing (at most {WINDOW - 1})'
    wrapped = [(c.get('id'), w) for c in cs if c['cell_type'] == 'code' for w in wraps(''.join(c['source']))]
    assert not wrapped, wrapped


def test_each_listed_diagram_is_shown_by_its_lesson():
    for prefix, names in DIAGRAMS.items():
        nb = next(p for p in LESSONS if p.name.startswith(prefix))
        md = ' '.join(''.join(c['source']) for c in cells(nb) if c['cell_type'] == 'markdown')
        for name in names:
            assert f'(attachment:{name}.png)' in md, (nb.name, name)


def test_the_shape_checks_catch_what_they_are_for():
    "Each measure on a planted cell, against a count made by hand."
    prose = ' '.join(['word'] * 181) + ' ![a picture of many words here](figures/x.svg) [link](https://a.b/c)'
    assert words(prose) == 182 and words('`x = 1`, two words.') == 4
    assert lines('#| export\ndef f():\n\n    return 1\n') == 2
    code = lambda src, out=(): {'cell_type': 'code', 'id': src, 'source': [src], 'outputs': list(out)}
    printed = [{'output_type': 'stream', 'name': 'stdout', 'text': ['1\n']}]
    nb = [
        code('a'),
        code('b', printed),
        code('c'),
        code('d'),
        code('#| hide\ne'),
        code('f'),
        code('g', printed),
    ]
    assert longest_dark_run(nb) == (3, 'c')  # the hidden cell is not counted, nor breaks the run
    assert longest_dark_run([code('a', [{'output_type': 'error'}])]) == (1, 'a')  # an error is not a result
    assert not wraps("x = f(a,\n      3)") and wraps("s = ('a long piece of text, wrapped at ' 'a word')")
    assert not wraps("s = ('a long piece of text, wrapped ' 'at a word, a long one')\n!pip install x 'y'")
