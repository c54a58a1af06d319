"""Sphinx settings of the course's website; `python .ci/site.py` stages the sources and runs Sphinx with them.

Sources: the lesson notebooks as committed (myst-nb renders their outputs; nothing is executed), a home page
made from the index notebook, and one API page per module (autodoc). Everything a page loads is in the site
itself: Furo's styles and scripts, Sphinx's search, MathJax's SVG renderer from docs/node_modules (npm, pinned
in docs/package-lock.json) and the course's own Colab badge in place of Colab's remote image."""

import os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

project, author, copyright = 'gptcourse', 'the gptcourse authors', '2026, the gptcourse authors'
extensions = ['myst_nb', 'sphinx.ext.autodoc', 'sphinx.ext.napoleon', 'sphinx.ext.mathjax']
exclude_patterns = ['_build', '**.ipynb_checkpoints']

nb_execution_mode = 'off'  # the committed outputs are the lesson's record: shown, never re-made
nb_merge_streams = True
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence']
myst_heading_anchors = 3
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type']

autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_default_options = {'members': True, 'undoc-members': False, 'show-inheritance': False}

html_theme = 'furo'
html_title = 'gptcourse'
html_favicon = str(ROOT / 'docs' / '_static' / 'favicon.svg')  # else the browser asks for /favicon.ico
html_static_path = [str(ROOT / 'docs' / '_static'), os.environ.get('GPTCOURSE_SITE_STATIC', '')]
html_static_path = [p for p in html_static_path if p]
html_css_files = ['course.css']  # docs/_static/course.css: code wraps in its box; badges keep their size
html_show_sourcelink = False
html_show_search_summary = (
    False  # snippets fetch each result page: from a file:// site the browser refuses that
)
html_copy_source = False
html_last_updated_fmt = None
html_theme_options = {
    'source_repository': 'https://github.com/gptcourse/gptcourse/',
    'source_branch': 'main',
    'source_directory': 'nbs/',
}

mathjax_path = 'mathjax/tex-svg.js'  # copied into the site by .ci/site.py: no CDN
mathjax3_config = {
    'options': {'enableMenu': False}
}  # the menu's explorer would fetch a speech engine from a CDN

COLAB_BADGE = 'https://colab.research.google.com/assets/colab-badge.svg'


def _local_badge(app, doctree, docname):
    """Colab's badge image comes from Colab's server; the site shows its own copy, so a page loads nothing
    remote."""
    from docutils import nodes

    local = '../' * docname.count('/') + '_static/colab-badge.svg'
    for img in doctree.findall(nodes.image):
        if img.get('uri') == COLAB_BADGE:
            img['uri'] = local


def _api_links(app, doctree, docname):
    """A name in backquotes in a lesson (`DataLoaderLite`, `prepare`) links to its API entry, when the package
    documents exactly one object of that name."""
    from docutils import nodes

    if docname.startswith('api/'):
        return
    objects = {}
    for name, (doc, node_id, objtype, _) in app.env.domaindata['py']['objects'].items():
        if objtype in ('class', 'function', 'method', 'data', 'exception', 'property'):
            objects.setdefault(name.rsplit('.', 1)[-1], []).append((doc, node_id))
            objects.setdefault(name.split('.', 1)[-1], []).append((doc, node_id))  # module.Name too
    for lit in list(doctree.findall(nodes.literal)):
        if isinstance(lit.parent, (nodes.reference, nodes.literal_block)):
            continue
        key = lit.astext().removesuffix('()')
        targets = set(objects.get(key, ()))
        if len(targets) != 1:
            continue
        doc, node_id = targets.pop()
        uri = app.builder.get_relative_uri(docname, doc) + '#' + node_id
        ref = nodes.reference('', '', internal=True, refuri=uri, classes=['api-link'])
        lit.replace_self(ref)
        ref.append(lit)


def _markdown_code(app, what, name, obj, options, lines):
    """The package's docstrings mark code as Markdown does, `x`; reStructuredText, which autodoc reads, wants
    ``x``."""
    import re

    def literal(m):
        return f'``{m[1]}``' + (f'\\ {m[2]}' if m[2] else '')  # ``x``\ s: RST's way to write `x`s

    lines[:] = [re.sub(r'(?<![`\\])`([^`\n]+)`(?!`)(\w?)', literal, line) for line in lines]


def setup(app):
    app.connect('autodoc-process-docstring', _markdown_code)
    app.connect('doctree-resolved', _local_badge)
    app.connect('doctree-resolved', _api_links)
