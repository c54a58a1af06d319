"""Make README.md from nbs/index.ipynb (nbdev_readme needs quarto, which this project does not require).

    python .ci/readme.py           # write README.md
    python .ci/readme.py --check   # exit 1 if README.md differs from what index.ipynb makes

The README is the index notebook's markdown cells, in order, separated by blank lines; code cells (the Colab
install cell, hidden cells) are left out."""

import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
HEADER = '<!-- Generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file. -->\n\n'


def render() -> str:
    nb = json.loads((root / 'nbs' / 'index.ipynb').read_text(encoding='utf-8'))
    parts = [''.join(c['source']).strip() for c in nb['cells'] if c['cell_type'] == 'markdown']
    return HEADER + '\n\n'.join(p for p in parts if p) + '\n'


if __name__ == '__main__':
    text, readme = render(), root / 'README.md'
    if '--check' in sys.argv[1:]:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            sys.exit(
                'README.md is stale: it differs from nbs/index.ipynb. Run `python .ci/readme.py` and commit.'
            )
        print('README.md matches nbs/index.ipynb')
    else:
        readme.write_text(text, encoding='utf-8')
        print('wrote README.md')
