"""The course's website (`.ci/site.py`), built from the committed notebooks and read in a real browser:
headless Chromium driven by Playwright, over the site served on the loopback address. Every lesson page loads
with no console error, no failed request and no request to another host; shows its title, its plots (images
that really loaded) and its math (MathJax's output, no raw `$...$`); its next link leads to the next lesson;
search finds the LayerNorm lesson, over HTTP and from disk. Screenshots of three pages go to
build/site-screenshots/.

Without Sphinx and myst-nb (`pip install -e ".[docs]"`), MathJax (`npm ci --prefix docs`) or Chromium
(`apt-get install chromium`) the tests skip and say which is missing; CI sets GPTCOURSE_REQUIRE_SITE=1, which
makes a missing piece a failure instead."""

import contextlib, functools, http.server, importlib.util, json, os, re, shutil, subprocess, sys, threading
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(ROOT.glob('nbs/[0-9][0-9]_*.ipynb'))
SHOTS = ROOT / 'build' / 'site-screenshots'
# Chromium as root in a closed network: no sandbox, and none of its own calls home (each would be a failed
# request)
FLAGS = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-dev-shm-usage',
]
RAW_MATH = re.compile(r'\$[^$\s][^$]*\$')


def need(ok, why: str):
    "Skip, saying why, unless CI requires the site tests to run."
    if ok:
        return
    if os.environ.get('GPTCOURSE_REQUIRE_SITE') == '1':
        pytest.fail(f'{why} (GPTCOURSE_REQUIRE_SITE=1)')
    pytest.skip(why)


def expected(nb: Path) -> dict:
    "What a lesson's page must show, read from its notebook: title, plots, math."
    cells = json.loads(nb.read_text(encoding='utf-8'))['cells']
    md = '\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'markdown')
    plots = sum(
        'image/png' in o.get('data', {}) for c in cells if c['cell_type'] == 'code' for o in c['outputs']
    )
    title = re.search(r'^# (.+)$', md, re.M)[1].replace('`', '').strip()
    return dict(title=title, plots=plots, math=bool(RAW_MATH.search(md)))


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    need(
        importlib.util.find_spec('sphinx') and importlib.util.find_spec('myst_nb'),
        'Sphinx and myst-nb are not installed: pip install -e ".[docs]"',
    )
    need(
        (ROOT / 'docs' / 'node_modules' / 'mathjax' / 'es5' / 'tex-svg.js').is_file(),
        'MathJax is not installed: npm ci --prefix docs',
    )
    out = tmp_path_factory.mktemp('site') / 'site'
    r = subprocess.run(
        [sys.executable, str(ROOT / '.ci' / 'site.py'), '--out', str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def check_files(site: Path):
    "One page per lesson, the home page and an API page per module; nothing is loaded from another host."
    assert sorted(p.stem for p in site.glob('[0-9][0-9]_*.html')) == [nb.stem for nb in LESSONS]
    assert (site / 'index.html').is_file() and (site / 'search.html').is_file()
    from gptcourse._modidx import d

    modules = {m for m in d['syms'] if m != 'gptcourse'}
    assert {p.stem for p in (site / 'api').glob('gptcourse.*.html')} == modules
    loads = re.compile(
        r'<(?:script|link|img|iframe|source|audio|video)\b[^>]*\b(?:src|href)="(https?:)?//', re.I
    )
    for page in site.rglob('*.html'):
        text = page.read_text(encoding='utf-8')
        assert not loads.search(text), (page, loads.search(text)[0])
    for css in site.rglob('*.css'):
        assert not re.search(r'(url\(|@import)\s*["\']?(https?:)?//', css.read_text(encoding='utf-8')), css


@contextlib.contextmanager
def browser(site: Path):
    "Headless Chromium, and the site served on the loopback address: (browser, base URL)."
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    need(chromium, 'no Chromium to drive: apt-get install chromium')
    need(importlib.util.find_spec('playwright'), 'Playwright is not installed: pip install -e ".[docs]"')
    from playwright.sync_api import sync_playwright

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium, args=FLAGS)
            try:
                yield b, f'http://127.0.0.1:{server.server_port}/'
            finally:
                b.close()
    finally:
        server.shutdown()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def cut_short(page, request) -> bool:
    """Whether a failed request is the browser's, not the site's: cut short (net::ERR_ABORTED) as the page was
    left, or the favicon, which the browser fetches on its own after `load` and drops when the page moves on
    (under load, the news of it can come after the next page has loaded). A favicon that is missing is still
    an HTTP 404, and a failure."""
    aborted = request.failure == 'net::ERR_ABORTED'
    return aborted and (page.leaving or request.url.split('?')[0].endswith('/_static/favicon.svg'))


def visit(browser, base: str, path: str):
    """Open `path` and wait for its own requests to settle (no request for 0.5 s: the favicon, MathJax's
    fonts); the page and the list of what went wrong while it loaded (errors, failed or remote requests)."""
    page, problems = browser.new_page(viewport={'width': 1280, 'height': 900}), []
    page.leaving = False  # set by `leave`: requests the page's own departure cut short are not failures
    page.on('console', lambda m: m.type == 'error' and problems.append(f'console error: {m.text}'))
    page.on('pageerror', lambda e: problems.append(f'script error: {e}'))
    page.on('requestfailed', lambda r: cut_short(page, r) or problems.append(f'failed request: {r.url}'))
    page.on('response', lambda r: r.status >= 400 and problems.append(f'HTTP {r.status}: {r.url}'))
    page.on(
        'request', lambda r: r.url.startswith((base, 'data:', 'blob:')) or problems.append(f'remote: {r.url}')
    )
    page.goto(base + path, wait_until='load')
    page.wait_for_load_state('networkidle')
    return page, problems


def leave(page, link=None):
    """Leave the page by following `link` (a selector or a locator), or by closing it. A request still in
    flight then ends as net::ERR_ABORTED, which says nothing about the site; the next page is judged once its
    own requests have settled."""
    page.leaving = True
    if link is None:
        return page.close()
    page.click(link) if isinstance(link, str) else link.click()
    page.wait_for_load_state('load')
    page.wait_for_load_state('networkidle')
    page.leaving = False


def content_problems(page, want: dict) -> list[str]:
    "What a lesson page lacks: its title, loaded plots, rendered math."
    out = []
    plain = str.maketrans('‘’“”', '\'\'""')  # the site's typographic quotes, the notebook's plain ones
    title = page.inner_text('article h1').strip().rstrip('#¶ ').strip().translate(plain)
    if title != want['title']:
        out.append(f'title {title!r}, not {want["title"]!r}')
    broken = page.eval_on_selector_all(
        'article img',
        'els => els.filter(e => !e.complete || !e.naturalWidth).map(e => e.getAttribute("src"))',
    )
    if broken:
        out.append(f'images not shown: {broken}')  # the lesson's diagrams, the badge
    code = page.eval_on_selector_all('article .cell_input pre', 'els => els.map(e => e.innerText)')
    if shown := [line for block in code for line in block.split('\n') if line.lstrip().startswith('#|')]:
        out.append(f'nbdev directives shown: {shown[:3]}')  # hidden cells and directive lines stay out
    wide = page.eval_on_selector_all(
        'article pre',
        'els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText.slice(0, 60))',
    )
    if wide:
        out.append(f'code wider than its box: {wide[:2]}')  # it wraps (docs/_static/course.css)
    if want['plots']:
        widths = page.eval_on_selector_all(
            'article .cell_output img', 'els => els.map(e => e.complete ? e.naturalWidth : 0)'
        )
        if len(widths) < want['plots'] or 0 in widths:
            out.append(f'plots not all shown: natural widths {widths}')
    if want['math']:  # MathJax typesets after the page loads: every formula gets its own rendered SVG
        every = (
            "() => { const m = [...document.querySelectorAll('article .math')]; "
            "return m.length > 0 && m.every(e => e.querySelector('mjx-container svg')); }"
        )
        try:
            page.wait_for_function(every, timeout=15_000)
        except Exception:
            out.append('math not rendered: a formula without its mjx-container')
        prose = ' '.join(
            page.eval_on_selector_all('article p, article li', 'els => els.map(e => e.innerText)')
        )
        if RAW_MATH.search(prose):
            out.append(f'raw math left: {RAW_MATH.search(prose)[0]!r}')
    return out


def check_lessons(b, base: str) -> list[str]:
    """Every lesson page: loads cleanly, shows what its notebook holds, and its next link leads to the next
    lesson."""
    out = []
    for i, nb in enumerate(LESSONS):
        page, problems = visit(b, base, nb.stem + '.html')
        problems += content_problems(page, expected(nb))
        if i + 1 < len(LESSONS):
            leave(page, 'a.next-page')
            if not page.url.endswith(LESSONS[i + 1].stem + '.html'):
                problems.append(f'next link went to {page.url}')
        leave(page)
        out += [f'{nb.stem}: {p}' for p in problems]
    return out


def check_api_link(b, base: str):
    page, problems = visit(b, base, '12_loader.html')
    link = page.locator('article a.api-link', has_text='DataLoaderLite').first
    href = link.get_attribute('href')
    leave(page, link)
    anchor = href.split('#', 1)[1]
    assert 'api/gptcourse.loader' in page.url and page.locator(f'[id="{anchor}"]').count() == 1, (
        page.url,
        href,
    )
    assert not problems, problems


def check_search(site: Path, b, base: str):
    "Search finds the LayerNorm lesson, served over HTTP and opened from disk (file://, as on a plane)."
    for root in (base, site.as_uri() + '/'):
        page, problems = visit(b, root, 'search.html?q=LayerNorm')
        page.wait_for_selector('#search-results li a', timeout=30_000)
        page.wait_for_timeout(500)  # anything it fetches after listing would fail
        hrefs = page.eval_on_selector_all(
            '#search-results li a', 'els => els.map(e => e.getAttribute("href"))'
        )
        assert any(h.startswith('06_blocks.html') for h in hrefs), (root, hrefs)
        assert not problems, (root, problems)
        page.close()


def take_screenshots(b, base: str):
    "Three pages a person can look at: the home page, a lesson with plots and math, and an API page."
    SHOTS.mkdir(parents=True, exist_ok=True)
    for path, name in (
        ('index.html', 'home'),
        ('14_optim.html', 'lesson-14'),
        ('api/gptcourse.shards.html', 'api'),
    ):
        page, problems = visit(b, base, path)
        if path.startswith('14'):  # the schedule's formula and its plot
            page.wait_for_selector('article div.math mjx-container svg', timeout=15_000)
            page.locator('article div.math').first.scroll_into_view_if_needed()
        if path == 'index.html':  # the table of lessons: each Colab badge at its own size, not a sliver
            widths = page.eval_on_selector_all(
                'article img[src$="colab-badge.svg"]', 'els => els.map(e => e.getBoundingClientRect().width)'
            )
            assert len(widths) >= 20 and min(widths) >= 100, widths
        page.screenshot(path=str(SHOTS / f'{name}.png'))
        assert (SHOTS / f'{name}.png').stat().st_size > 10_000 and not problems, problems
        page.close()


def check_the_checks(site: Path, b, base: str):
    """A planted fault, once: a lesson page whose plot file is gone and whose MathJax is gone fails both
    checks."""
    good = (site / '14_optim.html').read_text(encoding='utf-8')
    broken = re.sub(r'src="_images/[^"]+"', 'src="_images/missing.png"', good).replace(
        'tex-svg.js', 'missing.js'
    )
    (site / 'planted.html').write_text(broken, encoding='utf-8')
    page, problems = visit(b, base, 'planted.html')
    found = content_problems(page, expected(ROOT / 'nbs' / '14_optim.ipynb'))
    assert any('plots not all shown' in p for p in found) and any('math not rendered' in p for p in found), (
        found
    )
    assert any('HTTP 404' in p and 'missing.png' in p for p in problems), problems
    ok, _ = visit(b, base, '14_optim.html')
    assert content_problems(ok, expected(ROOT / 'nbs' / '14_optim.ipynb')) == []


def check_solutions(b, base: str):
    """The solutions page: every answer folded behind a toggle, shut until clicked; a click shows the code of
    exercise 05.1's answer."""
    page, problems = visit(b, base, 'solutions.html')
    folded = page.locator('article details')
    n = len(re.findall(r"check\('\d\d\.\d'", (ROOT / 'nbs' / 'solutions.ipynb').read_text(encoding='utf-8')))
    assert folded.count() >= n >= 20, (folded.count(), n)
    assert page.eval_on_selector_all('article details', 'els => els.filter(e => e.open).length') == 0
    answer = folded.filter(has_text='class BatchedHeads').first
    assert not answer.locator('pre').first.is_visible()
    answer.locator('summary').first.click()
    assert answer.locator('pre').first.is_visible() and not problems, problems
    leave(page)


def test_the_site(site):
    "One test, so that one worker builds the site and starts the browser once."
    check_files(site)
    with browser(site) as (b, base):
        check_the_checks(site, b, base)
        assert check_lessons(b, base) == []
        check_api_link(b, base)
        check_solutions(b, base)
        check_search(site, b, base)
        take_screenshots(b, base)
