"""The lessons' prose names other lessons, and what they teach, correctly: every "lesson NN" (and "lessons
NN–MM") in a lesson's text and in the home page is a lesson that exists, and every "lesson NN's `name`" or
"`name` (lesson NN)" names something that lesson NN defines. The table of lessons is the notebooks themselves:
each opens with "# Lesson NN — its title". (Split or renumber a lesson, and every sentence that now points at
the wrong one fails.)"""

import ast, json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = {p.name[:2]: p for p in sorted((ROOT / 'nbs').glob('[0-9][0-9]_*.ipynb'))}
REF = re.compile(r'\b[Ll]essons? (\d\d(?:(?:, | and | or |–|-)\d\d)*)')
NAMED = re.compile(
    r"\b[Ll]esson (\d\d)'s `([A-Za-z_][\w.]*)(?:\(\))?`|`([A-Za-z_][\w.]*)(?:\([^`]*\))?` "
    r"\([Ll]esson (\d\d)\)"
)


def cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text(encoding='utf-8'))['cells']


def title(nb: Path) -> str:
    return ''.join(cells(nb)[0]['source']).splitlines()[0]


def defined(nb: Path) -> set[str]:
    """Every name a lesson's code defines: functions, classes, methods, fields, variables and the keys of its
    tables."""
    names = set()
    for c in cells(nb):
        if c['cell_type'] != 'code':
            continue
        src = '\n'.join(
            '' if l.lstrip().startswith(('!', '%')) else l for l in ''.join(c['source']).splitlines()
        )
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.Dict):  # a table's keys: a preset's name, say
                names |= {
                    k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
                }
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def prose(nb: Path) -> str:
    return '\n'.join(''.join(c['source']) for c in cells(nb) if c['cell_type'] == 'markdown')


def problems(text: str, where: str) -> list[str]:
    out = []
    for m in REF.finditer(text):
        for n in re.findall(r'\d\d', m[1]):
            if n not in LESSONS:
                out.append(f'{where}: "{m[0]}" names lesson {n}, which does not exist')
    for m in NAMED.finditer(text):
        n, name = (m[1], m[2]) if m[1] else (m[4], m[3])
        if n in LESSONS and name.split('.')[0] not in defined(LESSONS[n]):
            out.append(f'{where}: "{m[0]}": lesson {n} ({title(LESSONS[n])}) defines no {name.split(".")[0]}')
    return out


def test_every_lesson_opens_with_its_number_and_title():
    for n, nb in LESSONS.items():
        assert re.fullmatch(rf'# Lesson {n} — \S.*', title(nb)), (nb.name, title(nb))


@pytest.mark.parametrize('nb', list(LESSONS.values()) + [ROOT / 'nbs' / 'index.ipynb'], ids=lambda p: p.stem)
def test_references_to_lessons_are_true(nb):
    assert not problems(prose(nb), nb.name), '\n'.join(problems(prose(nb), nb.name))


def test_the_check_catches_a_wrong_lesson_and_a_wrong_name():
    nb = next(iter(LESSONS))
    assert problems('as lesson 99 shows', 'x') and problems("lesson 02's `GPT` is", 'x')
    assert problems('`fit` (lesson 08)', 'x') and not problems(
        "lesson 02's `fit` and `generate` (lesson 02)", 'x'
    )
    assert not problems(f'lessons {nb}–02 and 07', 'x')
